"""Customer relink links: signed, single-use, expiring, bound to one link, every step audited."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services
from linkdesk.services import LeaseHeld, RelinkNotNeeded
from linkdesk.services.customer_links import load_signing_key
from linkdesk.services.errors import LinkAlreadyUsed, LinkExpired, LinkTampered
from linkdesk.store.models import CustomerLinkToken
from tests.unit.conftest import FakeMoneyKit

SUPPORT = Actor("sam", Role.SUPPORT)


@pytest.fixture
def ready(core_services: Services, fake_moneykit: FakeMoneyKit) -> Services:
    fake_moneykit.add_link(
        "mk_expired", state="error", error_code="auth_expired", tags=["customer:cust_0002"]
    )
    fake_moneykit.add_link(
        "mk_other", state="error", error_code="auth_expired", tags=["customer:cust_0003"]
    )
    fake_moneykit.add_link("mk_ok", tags=["customer:cust_0004"])
    core_services.discovery.sync_all()
    return core_services


def finish_log(session_id: str) -> list[dict[str, Any]]:
    return [
        {
            "session_id": session_id,
            "seq": 1,
            "type": "relink_success",
            "at": "2025-01-01T12:00:00.000Z",
            "data": {"institution": {"id": "bank-a"}, "link_id": "mk_expired"},
        }
    ]


def test_the_whole_journey(ready: Services, fake_moneykit: FakeMoneyKit):
    made = ready.customer_links.create("mk_expired", SUPPORT, reason="customer emailed")
    assert made.token not in repr(made)
    assert made.expires_at > ready.worker._clock()

    started = ready.customer_links.redeem_begin(made.token)
    assert (started.mode, started.link_id) == ("relink", "mk_expired")
    progress = ready.activity.relink_in_progress("mk_expired")
    assert progress is not None and "customer" in progress.holder

    fake_moneykit.links["mk_expired"].update(state="connected", error_code=None)
    outcome = ready.customer_links.redeem_finish(made.token, finish_log(started.session_id))
    assert outcome.outcome == "success"
    (row,) = ready.activity.customer_links("mk_expired")
    assert (row.created_by, row.outcome, row.reason) == ("sam", "success", "customer emailed")
    assert row.used_at is not None and row.finished_at is not None

    actions = [(e.action, e.outcome) for e in ready.audit.entries(link_id="mk_expired")]
    for step in [
        ("customer_link.create", "created"),
        ("customer_link.redeem", "started"),
        ("connect.relink", "success"),
        ("customer_link.finish", "success"),
    ]:
        assert step in actions


def test_only_a_hash_of_the_token_is_stored(ready: Services):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    with ready.store.read() as session:
        stored = session.scalars(sa.select(CustomerLinkToken)).one()
        dump = json.dumps(
            {c.name: str(getattr(stored, c.name)) for c in CustomerLinkToken.__table__.columns}
        )
    assert made.token not in dump
    assert made.token.split(".")[1] not in dump  # not even the signature part


def test_an_expired_link_is_refused(ready: Services, core_clock):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    core_clock.advance(ready.settings.customer_link_ttl_hours * 3600 + 1)
    with pytest.raises(LinkExpired):
        ready.customer_links.redeem_begin(made.token)
    assert ready.audit.entries(action="customer_link.redeem")[0].outcome == "expired"


def test_a_link_works_once(ready: Services):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    ready.customer_links.redeem_begin(made.token)
    with pytest.raises(LinkAlreadyUsed):
        ready.customer_links.redeem_begin(made.token)
    assert ready.audit.entries(action="customer_link.redeem")[0].outcome == "reused"


def test_two_clicks_at_once_start_one_relink(ready: Services, fake_moneykit: FakeMoneyKit):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    barrier = threading.Barrier(4)
    results: list[str] = []

    def click() -> None:
        barrier.wait()
        try:
            ready.customer_links.redeem_begin(made.token)
            results.append("started")
        except LinkAlreadyUsed:
            results.append("used")

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["started", "used", "used", "used"]
    assert len(fake_moneykit.link_sessions) == 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def tampered_variants(token: str, other_token: str) -> dict[str, str]:
    payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    retargeted = _b64(json.dumps({**data, "l": "mk_other"}, separators=(",", ":")).encode())
    extended = _b64(json.dumps({**data, "e": data["e"] + 86400}, separators=(",", ":")).encode())
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    return {
        "retargeted to another link": f"{retargeted}.{signature}",
        "expiry extended": f"{extended}.{signature}",
        "signature altered": f"{payload}.{flipped}",
        "signature of another token": f"{payload}.{other_token.split('.')[1]}",
        "garbage": "not-a-token",
        "empty": "",
        "three parts": f"{payload}.{signature}.x",
    }


@pytest.mark.parametrize(
    "variant",
    [
        "retargeted to another link",
        "expiry extended",
        "signature altered",
        "signature of another token",
        "garbage",
        "empty",
        "three parts",
    ],
)
def test_a_tampered_link_is_refused(ready: Services, fake_moneykit: FakeMoneyKit, variant: str):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    other = ready.customer_links.create("mk_other", SUPPORT)
    forged = tampered_variants(made.token, other.token)[variant]
    with pytest.raises(LinkTampered):
        ready.customer_links.redeem_begin(forged)
    assert fake_moneykit.link_sessions == []
    # The genuine token is untouched by the attempt.
    assert ready.customer_links.redeem_begin(made.token).link_id == "mk_expired"


def test_a_token_signed_with_another_key_is_refused(ready: Services, core_settings):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    from linkdesk.services.customer_links import CustomerLinkService

    stranger = CustomerLinkService(
        store=ready.store,
        sessions=ready.sessions,
        audit=ready.audit,
        settings=core_settings,
        key=b"x" * 40,
        clock=ready.worker._clock,
    )
    with pytest.raises(LinkTampered):
        stranger.redeem_begin(made.token)


def test_links_only_for_links_that_need_a_relink(ready: Services):
    with pytest.raises(RelinkNotNeeded):
        ready.customer_links.create("mk_ok", SUPPORT)


def test_staff_relinking_keeps_the_token_usable(ready: Services):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    ready.sessions.start_relink(link_id="mk_expired", actor=Actor("other", Role.SUPPORT))
    with pytest.raises(LeaseHeld):
        ready.customer_links.redeem_begin(made.token)
    (row,) = ready.activity.customer_links("mk_expired")
    assert row.used_at is None


def test_a_link_that_recovered_meanwhile_uses_the_token_up(
    ready: Services, fake_moneykit: FakeMoneyKit
):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    fake_moneykit.links["mk_expired"].update(state="connected", error_code=None)
    with pytest.raises(RelinkNotNeeded):
        ready.customer_links.redeem_begin(made.token)
    (row,) = ready.activity.customer_links("mk_expired")
    assert row.outcome == "not_needed"


def test_finish_needs_a_started_token(ready: Services):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    with pytest.raises(LinkTampered):
        ready.customer_links.redeem_finish(made.token, [])


class TestSigningKey:
    def test_a_configured_key_is_used(self, core_settings):
        settings = core_settings.model_copy(update={"signing_key": SecretStr("k" * 40)})
        assert load_signing_key(settings) == b"k" * 40

    def test_a_short_configured_key_is_refused(self, core_settings):
        settings = core_settings.model_copy(update={"signing_key": SecretStr("short")})
        with pytest.raises(ValueError):
            load_signing_key(settings)

    def test_a_generated_key_is_created_once_with_owner_only_access(self, core_settings, tmp_path):
        path = tmp_path / "var" / "signing.key"
        settings = core_settings.model_copy(update={"signing_key_file": str(path)})
        first = load_signing_key(settings)
        assert load_signing_key(settings) == first and len(first) >= 32
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    def test_processes_starting_together_all_read_the_same_whole_key(self, core_settings, tmp_path):
        def load_together(settings, count: int) -> tuple[list[bytes], list[Exception]]:
            start = threading.Barrier(count)
            keys: list[bytes] = []
            errors: list[Exception] = []

            def load() -> None:
                start.wait()
                try:
                    keys.append(load_signing_key(settings))
                except Exception as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=load) for _ in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return keys, errors

        # Many times: with a create-then-write file, a reader sometimes found it still empty.
        for attempt in range(30):
            path = tmp_path / f"run{attempt}" / "signing.key"
            settings = core_settings.model_copy(update={"signing_key_file": str(path)})
            keys, errors = load_together(settings, 8)
            assert errors == [] and len(set(keys)) == 1 and len(keys) == 8
            assert [p.name for p in path.parent.iterdir()] == ["signing.key"]


# -- a customer's claim is checked with MoneyKit; the page learns nothing internal ------------


def test_a_forged_relink_success_is_recorded_as_unconfirmed(
    ready: Services, fake_moneykit: FakeMoneyKit
):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    started = ready.customer_links.redeem_begin(made.token)
    # The customer posts a relink success without relinking: MoneyKit still says auth_expired.
    outcome = ready.customer_links.redeem_finish(made.token, finish_log(started.session_id))
    assert outcome.outcome == "unconfirmed"
    assert "mk_expired" not in outcome.message
    (row,) = ready.activity.customer_links("mk_expired")
    assert row.outcome == "unconfirmed"
    finishes = [
        (e.outcome, e.detail)
        for e in ready.audit.entries(link_id="mk_expired")
        if e.action == "customer_link.finish"
    ]
    assert finishes == [
        ("unconfirmed", "relink reported by Connect, but MoneyKit still reports error/auth_expired")
    ]


def test_a_decided_outcome_is_answered_again_without_asking_moneykit(
    ready: Services, fake_moneykit: FakeMoneyKit
):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    started = ready.customer_links.redeem_begin(made.token)
    fake_moneykit.links["mk_expired"].update(state="connected", error_code=None)
    log = finish_log(started.session_id)
    assert ready.customer_links.redeem_finish(made.token, log).outcome == "success"
    reads = fake_moneykit.calls["GET /links/mk_expired"]
    assert ready.customer_links.redeem_finish(made.token, log).outcome == "success"
    assert fake_moneykit.calls["GET /links/mk_expired"] == reads


def test_moneykit_unreachable_at_the_end_leaves_the_relink_unconfirmed(
    ready: Services, fake_moneykit: FakeMoneyKit
):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    started = ready.customer_links.redeem_begin(made.token)
    fake_moneykit.links["mk_expired"].update(state="connected", error_code=None)
    fake_moneykit.unreachable = True
    outcome = ready.customer_links.redeem_finish(made.token, finish_log(started.session_id))
    assert outcome.outcome == "unconfirmed"


def test_a_repair_in_progress_names_neither_staff_nor_link(ready: Services):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    ready.sessions.start_relink(link_id="mk_expired", actor=Actor("olga.staff", Role.SUPPORT))
    with pytest.raises(LeaseHeld) as refused:
        ready.customer_links.redeem_begin(made.token)
    message = str(refused.value)
    assert "already in progress" in message
    assert "olga" not in message and "mk_expired" not in message
    assert ready.customer_links.check(made.token).repair == "in_progress"


def test_nothing_to_repair_does_not_name_the_link(ready: Services, fake_moneykit: FakeMoneyKit):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    fake_moneykit.links["mk_expired"].update(state="connected", error_code=None)
    with pytest.raises(RelinkNotNeeded) as refused:
        ready.customer_links.redeem_begin(made.token)
    assert "mk_expired" not in str(refused.value) and "connected" not in str(refused.value)


def test_check_refuses_bad_links_at_once_and_uses_nothing_up(ready: Services, core_clock):
    made = ready.customer_links.create("mk_expired", SUPPORT)
    found = ready.customer_links.check(made.token)
    assert found.repair == "ready" and found.institution_name == "Bank A"
    (row,) = ready.activity.customer_links("mk_expired")
    assert row.used_at is None  # opening the page (or a mail scanner) burns nothing
    with pytest.raises(LinkTampered):
        ready.customer_links.check(made.token[:-2] + "xx")
    ready.customer_links.redeem_begin(made.token)
    with pytest.raises(LinkAlreadyUsed):
        ready.customer_links.check(made.token)
    later = ready.customer_links.create("mk_other", SUPPORT)
    core_clock.advance(25 * 3600)
    with pytest.raises(LinkExpired):
        ready.customer_links.check(later.token)
