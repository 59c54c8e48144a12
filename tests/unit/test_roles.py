"""Roles are enforced by the services (each action x each role), plus local sign-in and the
relink lease under a two-thread race."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from linkdesk.auth import (
    PERMISSIONS,
    Actor,
    Permission,
    PermissionDenied,
    Role,
    as_actor,
    verify_local_password,
)
from linkdesk.bootstrap import Services
from linkdesk.services import LeaseHeld
from tests.unit.conftest import FakeMoneyKit

ADMIN = Actor("ada", Role.ADMIN)


@pytest.fixture
def ready(core_services: Services, fake_moneykit: FakeMoneyKit) -> Services:
    fake_moneykit.add_link(
        "mk_expired", state="error", error_code="auth_expired", tags=["customer:cust_0002"]
    )
    core_services.discovery.sync_all()
    return core_services


AT = "2025-01-01T12:00:00.000Z"


def _relink_log(services: Services, actor: Actor) -> Any:
    started = services.sessions.start_relink(link_id="mk_expired", actor=ADMIN)
    sid = started.session_id
    entry = {"session_id": sid, "seq": 1, "type": "exit", "at": AT, "data": {"error": None}}
    return services.sessions.apply_log(sid, [entry], actor=actor)


ACTIONS: dict[str, tuple[Permission, Callable[[Services, Actor], Any]]] = {
    "start a link": (
        Permission.START_LINK,
        lambda s, a: s.sessions.start_link(customer_external_id="cust_0042", actor=a),
    ),
    "start a relink": (
        Permission.RELINK,
        lambda s, a: s.sessions.start_relink(link_id="mk_expired", actor=a, reason="asked"),
    ),
    "finish a relink session": (Permission.RELINK, _relink_log),
    "create a customer relink link": (
        Permission.CUSTOMER_LINK,
        lambda s, a: s.customer_links.create("mk_expired", a, reason="email"),
    ),
    "add a note": (
        Permission.NOTE,
        lambda s, a: s.audit.add_note(a, link_id="mk_expired", text="called the customer"),
    ),
    "trigger a sync": (Permission.SYNC_TRIGGER, lambda s, a: s.worker.trigger_sync(a)),
    "pause the worker": (Permission.WORKER_CONTROL, lambda s, a: s.worker.pause(a)),
    "resume the worker": (Permission.WORKER_CONTROL, lambda s, a: s.worker.resume(a)),
}

ALLOWED = {
    Role.VIEWER: set(),
    Role.SUPPORT: {
        "start a link",
        "start a relink",
        "finish a relink session",
        "create a customer relink link",
        "add a note",
    },
    Role.ADMIN: set(ACTIONS),
}


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_each_action_for_each_role(ready: Services, tmp_path, action: str, role: Role):
    permission, run = ACTIONS[action]
    actor = Actor(f"someone-{role.value}", role)
    audit_before = len(ready.audit.entries(limit=1000, actor=actor.name))
    if action in ALLOWED[role]:
        run(ready, actor)
        assert len(ready.audit.entries(limit=1000, actor=actor.name)) > audit_before
    else:
        with pytest.raises(PermissionDenied) as info:
            run(ready, actor)
        assert info.value.permission is permission
        assert role.value in str(info.value)
        # Refused before anything happened: no audit entry in the actor's name.
        assert len(ready.audit.entries(limit=1000, actor=actor.name)) == audit_before


def test_a_refused_relink_does_not_reach_moneykit(ready: Services, fake_moneykit: FakeMoneyKit):
    with pytest.raises(PermissionDenied):
        ready.sessions.start_relink(link_id="mk_expired", actor=Actor("vi", Role.VIEWER))
    assert fake_moneykit.link_sessions == []


def test_the_permission_table_is_what_the_design_says():
    for permission, roles in PERMISSIONS.items():
        assert Role.VIEWER not in roles, permission
        assert Role.ADMIN in roles, permission
    assert Role.SUPPORT in PERMISSIONS[Permission.RELINK]
    assert Role.SUPPORT not in PERMISSIONS[Permission.DEMO_RESET]


def test_relink_reason_and_role_are_audited(ready: Services):
    actor = Actor("sam", Role.SUPPORT)
    ready.sessions.start_relink(link_id="mk_expired", actor=actor, reason="customer called")
    (entry,) = ready.audit.entries(actor="sam", action="connect.start_relink")
    assert (entry.role, entry.reason, entry.link_id, entry.customer_id, entry.outcome) == (
        "support",
        "customer called",
        "mk_expired",
        "cust_0002",
        "started",
    )
    assert ready.audit.entries(action="connect.", customer_id="cust_0002")
    assert ready.audit.entries(since=entry.at, until=entry.at) == []
    assert ready.audit.entries(actor="nobody") == []


class TestLocalSignIn:
    USERS = json.dumps(
        {
            "alice": {
                "role": "support",
                "password_sha256": hashlib.sha256(b"correct horse").hexdigest(),
            },
            "bob": {"role": "admin", "password_sha256": hashlib.sha256(b"b0b").hexdigest()},
            "mallory": {"role": "root", "password_sha256": hashlib.sha256(b"x").hexdigest()},
        }
    )

    def test_right_password_signs_in_with_the_configured_role(self):
        assert verify_local_password(self.USERS, "alice", "correct horse") == Actor(
            "alice", Role.SUPPORT
        )
        assert verify_local_password(self.USERS, "bob", "b0b") == Actor("bob", Role.ADMIN)

    @pytest.mark.parametrize(
        ("user", "password"),
        [("alice", "wrong"), ("alice", ""), ("carol", "correct horse"), ("mallory", "x")],
    )
    def test_wrong_name_password_or_role_is_refused(self, user, password):
        assert verify_local_password(self.USERS, user, password) is None

    def test_malformed_configuration_means_nobody(self):
        assert verify_local_password("{not json", "alice", "correct horse") is None
        assert verify_local_password(None, "alice", "correct horse") is None

    def test_the_password_is_never_logged(self, caplog):
        caplog.set_level("DEBUG")
        verify_local_password(self.USERS, "alice", "hunter2-secret")
        assert "hunter2-secret" not in caplog.text

    def test_a_mapping_works_too(self):
        users = json.loads(self.USERS)
        assert verify_local_password(users, "alice", "correct horse") is not None


def test_bare_names_get_the_default_role():
    with pytest.warns(DeprecationWarning):
        assert as_actor("op", Role.VIEWER) == Actor("op", Role.VIEWER)
    assert as_actor(ADMIN) is ADMIN


class TestLeaseRace:
    def test_two_agents_racing_for_one_link_get_exactly_one_lease(
        self, ready: Services, fake_moneykit: FakeMoneyKit
    ):
        for round_ in range(5):
            agents = [Actor(f"agent-{round_}-{n}", Role.SUPPORT) for n in range(2)]
            barrier = threading.Barrier(len(agents))
            won: list[str] = []
            held: list[str] = []

            def go(
                agent: Actor,
                barrier: threading.Barrier = barrier,
                won: list[str] = won,
                held: list[str] = held,
            ) -> None:
                barrier.wait()
                try:
                    ready.sessions.start_relink(link_id="mk_expired", actor=agent)
                    won.append(agent.name)
                except LeaseHeld as exc:
                    held.append(exc.holder)

            threads = [threading.Thread(target=go, args=(a,)) for a in agents]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(won) == 1 and held == won
            progress = ready.activity.relink_in_progress("mk_expired")
            assert progress is not None and progress.holder == won[0]
            # End that session so the next round races for a free link again.
            session = ready.sessions.latest_pending_session(actor=won[0])
            assert session is not None
            entry = {
                "session_id": session.session_id,
                "seq": 1,
                "type": "exit",
                "at": AT,
                "data": {"error": None},
            }
            ready.sessions.apply_log(session.session_id, [entry], actor=ADMIN)
            assert ready.activity.relink_in_progress("mk_expired") is None

    def test_an_abandoned_lease_expires(self, ready: Services, core_clock):
        ready.sessions.start_relink(link_id="mk_expired", actor=Actor("gone", Role.SUPPORT))
        detail = ready.link_detail.get_link("mk_expired")
        assert detail is not None and detail.relink_in_progress is not None
        assert detail.relink_in_progress.holder == "gone"
        core_clock.advance(ready.settings.relink_lease_minutes * 60 + 1)
        assert ready.activity.relink_in_progress("mk_expired") is None
        ready.sessions.start_relink(link_id="mk_expired", actor=Actor("next", Role.SUPPORT))
