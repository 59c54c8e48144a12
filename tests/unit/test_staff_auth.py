"""Staff sign-in: argon2id hashes, throttling in the store, server-side sessions, the CLI."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from linkdesk.__main__ import main
from linkdesk.auth import (
    Actor,
    PermissionDenied,
    Role,
    hash_password,
    load_users,
    verify_local_password,
)
from linkdesk.bootstrap import Services
from linkdesk.services.staff_auth import client_address
from linkdesk.store.models import StaffSession, StaffUser
from tests.unit.conftest import FakeClock

ADMIN = Actor("root", Role.ADMIN)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- password hashes -----------------------------------------------------------------------------


def test_new_hashes_are_salted_argon2id():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("$argon2id$") and second.startswith("$argon2id$")
    assert first != second  # salted
    users = {"alice": {"role": "support", "password_hash": first}}
    assert verify_local_password(users, "alice", "correct horse") == Actor("alice", Role.SUPPORT)
    assert verify_local_password(users, "alice", "wrong") is None
    assert verify_local_password(users, "bob", "correct horse") is None


def test_old_sha256_entries_sign_in_with_a_warning_naming_the_user_not_the_hash(
    caplog: pytest.LogCaptureFixture,
):
    digest = sha256("old-password")
    users = json.dumps({"carol": {"role": "viewer", "password_sha256": digest}})
    with caplog.at_level(logging.WARNING, logger="linkdesk.auth"):
        actor = verify_local_password(users, "carol", "old-password")
    assert actor == Actor("carol", Role.VIEWER)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings, "an unsalted hash must be reported"
    text = " ".join(r.getMessage() for r in warnings)
    assert "carol" in text and "SHA-256" in text and "user add" in text
    assert digest not in text and "old-password" not in text


def test_entries_without_a_usable_hash_are_ignored():
    users = load_users({"x": {"role": "admin", "password_hash": "plain"}, "y": {"role": "boss"}})
    assert users == {}


# -- throttling --------------------------------------------------------------------------------


def test_thirty_guesses_over_six_sessions_then_the_right_password_is_refused(
    core_services: Services, core_clock: FakeClock
):
    staff = core_services.staff
    staff.add_user("alice", Role.SUPPORT, "the-right-password")
    # Six fresh browser sessions share nothing but the database: five guesses each.
    for browser in range(6):
        for guess in range(5):
            result = staff.sign_in("alice", f"guess-{browser}-{guess}", client="198.51.100.7")
            assert not result.ok
        core_clock.advance(10)
    result = staff.sign_in("alice", "the-right-password", client="198.51.100.7")
    assert not result.ok
    assert result.retry_at is not None and result.retry_at > core_clock()
    assert "Try again at" in result.message and f"{result.retry_at:%H:%M}" in result.message
    # Another address is refused too: the account is throttled, not only the client.
    assert not staff.sign_in("alice", "the-right-password", client="203.0.113.9").ok
    # Once the window has passed, the right password signs in.
    core_clock.advance(16 * 60)
    assert staff.sign_in("alice", "the-right-password", client="198.51.100.7").ok
    # Failures that have left the window are removed with the next one.
    assert not staff.sign_in("alice", "one-more-guess", client="198.51.100.7").ok
    assert staff.failures_since(core_clock() - timedelta(days=1)) == 1
    outcomes = [e.outcome for e in core_services.audit.entries(100, action="staff.sign_in")]
    assert outcomes.count("refused") == 6 and "throttled" in outcomes and "ok" in outcomes


def test_one_client_guessing_many_names_is_throttled(core_services: Services):
    staff = core_services.staff
    staff.add_user("bob", Role.VIEWER, "bobs-password")
    for n in range(20):
        assert not staff.sign_in(f"name{n}", "x", client="192.0.2.50").ok
    refused = staff.sign_in("bob", "bobs-password", client="192.0.2.50")
    assert not refused.ok and refused.retry_at is not None
    assert staff.sign_in("bob", "bobs-password", client="192.0.2.51").ok


def test_forwarded_for_counts_only_when_a_proxy_is_configured():
    headers = {"X-Forwarded-For": "203.0.113.5, 10.0.0.1"}
    assert client_address("10.0.0.1", headers, trust_forwarded_for=False) == "10.0.0.1"
    assert client_address("10.0.0.1", headers, trust_forwarded_for=True) == "203.0.113.5"
    assert client_address(None, {}, trust_forwarded_for=True) == "local"


# -- sessions ----------------------------------------------------------------------------------


def test_session_cookie_comes_from_a_one_time_code_and_only_hashes_are_stored(
    core_services: Services, core_clock: FakeClock
):
    staff = core_services.staff
    staff.add_user("dana", Role.ADMIN, "dana-password")
    result = staff.sign_in("dana", "dana-password", client="local")
    assert result.ok and result.handoff_code and result.session_id
    assert staff.actor_for_session(result.session_id) == Actor("dana", Role.ADMIN)
    exchanged = staff.exchange_handoff(result.handoff_code)
    assert exchanged is not None
    token, expires_at = exchanged
    assert expires_at == result_expiry(core_services, result.session_id)
    assert staff.exchange_handoff(result.handoff_code) is None  # once only
    assert staff.actor_for_token(token) == (Actor("dana", Role.ADMIN), result.session_id)
    with core_services.store.read() as session:
        row = session.get(StaffSession, result.session_id)
        assert row is not None and row.token_sha256 == sha256(token)
        stored = json.dumps([str(v) for v in row.__dict__.values()])
        assert token not in stored and result.handoff_code not in stored
    # Expiry (LINKDESK_STAFF_SESSION_HOURS, 12 by default).
    core_clock.advance(12 * 3600 + 1)
    assert staff.actor_for_token(token) is None


def result_expiry(services: Services, session_id: str):
    with services.store.read() as session:
        row = session.get(StaffSession, session_id)
        assert row is not None
        return row.expires_at


def test_an_old_handoff_code_does_nothing(core_services: Services, core_clock: FakeClock):
    staff = core_services.staff
    staff.add_user("erin", Role.SUPPORT, "erin-password")
    result = staff.sign_in("erin", "erin-password", client="local")
    core_clock.advance(61)
    assert result.handoff_code and staff.exchange_handoff(result.handoff_code) is None


def test_sign_out_and_admin_revocation_end_sessions(core_services: Services):
    staff = core_services.staff
    staff.add_user("fay", Role.SUPPORT, "fay-password")
    first = staff.sign_in("fay", "fay-password", client="local")
    second = staff.sign_in("fay", "fay-password", client="local")
    assert first.handoff_code and second.handoff_code and first.session_id and second.session_id
    first_token = staff.exchange_handoff(first.handoff_code)
    assert first_token is not None
    assert staff.sign_out(token=first_token[0])
    assert staff.actor_for_token(first_token[0]) is None
    assert staff.actor_for_session(first.session_id) is None
    live = staff.live_sessions(ADMIN)
    assert [s.id for s in live] == [second.session_id]
    with pytest.raises(PermissionDenied):
        staff.revoke(Actor("fay", Role.SUPPORT), second.session_id)
    assert staff.revoke(ADMIN, second.session_id, reason="laptop lost")
    assert staff.actor_for_session(second.session_id) is None
    actions = [e.action for e in core_services.audit.entries(20)]
    assert "staff.sign_out" in actions and "staff.session_revoke" in actions


# -- the admin command -------------------------------------------------------------------------


def test_user_add_prompts_twice_and_stores_an_argon2_entry(
    core_services: Services, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    answers = iter(["s3cret-pass-word", "s3cret-pass-word"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setenv("DATABASE_URL", core_services.settings.database_url)
    assert main(["user", "add", "gina", "--role", "support"]) == 0
    out = capsys.readouterr().out
    assert "gina" in out and "s3cret" not in out
    with core_services.store.read() as session:
        row = session.get(StaffUser, "gina")
        assert row is not None and row.role == "support"
        assert row.password_hash.startswith("$argon2id$")
    assert core_services.staff.sign_in("gina", "s3cret-pass-word", client="local").ok


def test_user_add_refuses_passwords_that_differ(
    core_services: Services, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    answers = iter(["first-password", "other-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setenv("DATABASE_URL", core_services.settings.database_url)
    assert main(["user", "add", "hank", "--role", "admin"]) != 0
    assert "do not match" in capsys.readouterr().err
    with core_services.store.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(StaffUser)) == 0


def test_user_add_print_gives_a_line_for_the_users_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    answers = iter(["printed-password", "printed-password"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert main(["user", "add", "ivy", "--role", "viewer", "--print"]) == 0
    entry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert verify_local_password(entry, "ivy", "printed-password") == Actor("ivy", Role.VIEWER)


def test_the_secrets_example_signs_in_the_readme_demo_users_with_argon2_hashes():
    import tomllib
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / ".streamlit" / "secrets.example.toml"
    users = load_users(tomllib.loads(example.read_text())["linkdesk"]["users"])
    for name in ("admin", "support", "viewer"):
        assert users[name]["password_hash"].startswith("$argon2id$")
        assert verify_local_password(users, name, f"linkdesk-{name}") == Actor(name, Role(name))


def test_oidc_roles_come_from_the_email_map_then_the_claim_mapping():
    from ui.auth import oidc_role

    config = {
        "roles": {"lead@example.test": "admin"},
        "oidc": {"role_claim": "groups", "role_map": {"ops": "support", "leads": "admin"}},
    }
    assert oidc_role({"email": "lead@example.test", "groups": []}, config) == Role.ADMIN
    assert oidc_role({"email": "a@example.test", "groups": ["ops", "x"]}, config) == Role.SUPPORT
    assert oidc_role({"groups": ["ops", "leads"]}, config) == Role.ADMIN  # the highest wins
    assert oidc_role({"groups": "ops"}, config) == Role.SUPPORT  # a single value
    assert oidc_role({"email": "new@example.test"}, config) == Role.VIEWER
    assert oidc_role({"groups": ["ops"]}, {}) == Role.VIEWER
