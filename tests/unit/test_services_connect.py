"""ConnectService against the fake MoneyKit (real client, real SQLite store, built by bootstrap)."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from linkdesk.auth import Actor, PermissionDenied, Role
from linkdesk.bootstrap import Services
from linkdesk.health import Health
from linkdesk.moneykit import APIConnectionError
from linkdesk.services import (
    InvalidCustomerId,
    LeaseHeld,
    LeaseNotHeld,
    LinkNotFound,
    LinkUnavailable,
    ReasonRequired,
    RelinkNotNeeded,
    UnknownSession,
    exit_message,
)
from linkdesk.services.connect import ConnectService
from linkdesk.settings import Settings
from linkdesk.store.models import ConnectEvent, ConnectSession

if TYPE_CHECKING:
    from tests.unit.conftest import FakeMoneyKit

ACTOR = Actor("alice@example.com", Role.SUPPORT)
BOB = Actor("bob", Role.SUPPORT)


def log_entry(session_id: str, seq: int, kind: str, **data: Any) -> dict[str, Any]:
    """An entry as the component records it: a success carries the institution and link id
    Connect's callback gives (the contract drops entries without them)."""
    if kind in ("success", "relink_success"):
        data.setdefault("institution", {"id": "bank-a", "name": "Bank A"})
        data.setdefault("link_id", "mk_from_connect")
    return {
        "session_id": session_id,
        "seq": seq,
        "type": kind,
        "at": f"2025-01-01T12:00:{seq:02d}.000Z",
        "data": data,
    }


def success_log(session_id: str, token: str = "ext_tok_1") -> list[dict[str, Any]]:
    return [
        log_entry(session_id, 1, "event", name="open", properties={}),
        log_entry(
            session_id,
            2,
            "event",
            name="select_institution",
            properties={"institution_id": "bank-a", "institution_name": "Bank A"},
        ),
        log_entry(
            session_id,
            3,
            "success",
            exchangeable_token=token,
            institution={"id": "bank-a", "name": "Bank A"},
            link_id="mk_new",
        ),
    ]


def all_text_in_database(services: Services) -> str:
    chunks: list[str] = []
    with services.store.engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.exec_driver_sql(f'SELECT * FROM "{table}"'):
                chunks.extend(str(v) for v in row)
    return "\n".join(chunks)


# -- start ---------------------------------------------------------------------------------------


class TestStartLink:
    def test_creates_a_session_with_customer_tags_and_webhook(
        self, core_services: Services, fake_moneykit: FakeMoneyKit
    ):
        started = core_services.sessions.start_link(customer_external_id="cust_0042", actor=ACTOR)

        assert started.mode == "link" and started.link_session_token == "lst_1"
        assert "lst_1" not in repr(started)
        (body,) = fake_moneykit.link_sessions
        assert body["customer_user"] == {"id": "cust_0042"}
        assert body["redirect_uri"] == "http://localhost:8501/oauth_return"
        assert body["webhook"] == "https://linkdesk.example/webhooks/moneykit"
        assert body["link_tags"] == ["customer:cust_0042", "source:linkdesk"]
        row = core_services.sessions.get_session(started.session_id)
        assert row is not None
        assert (row.mode, row.customer_id, row.started_by, row.outcome) == (
            "link",
            "cust_0042",
            ACTOR.name,
            "pending",
        )
        (audit,) = core_services.audit.entries()
        assert (audit.actor, audit.role, audit.action, audit.outcome) == (
            ACTOR.name,
            "support",
            "connect.start_link",
            "started",
        )

    def test_stores_only_a_hash_of_the_link_session_token(self, core_services: Services):
        started = core_services.sessions.start_link(customer_external_id="cust_0042", actor=ACTOR)
        with core_services.store.read() as session:
            row = session.get(ConnectSession, started.session_id)
            assert row is not None
            assert row.token_sha256 == hashlib.sha256(b"lst_1").hexdigest()
        assert "lst_1" not in all_text_in_database(core_services)

    @pytest.mark.parametrize("bad", ["", "abc", "x" * 151, "has space", "-leading", "a<b>cd"])
    def test_refuses_bad_customer_ids_before_calling_moneykit(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, bad: str
    ):
        with pytest.raises(InvalidCustomerId):
            core_services.sessions.start_link(customer_external_id=bad, actor=ACTOR)
        assert fake_moneykit.link_sessions == []

    def test_moneykit_failure_is_recorded_and_raised(
        self, core_services: Services, fake_moneykit: FakeMoneyKit
    ):
        fake_moneykit.unreachable = True
        with pytest.raises(APIConnectionError):
            core_services.sessions.start_link(customer_external_id="cust_0042", actor=ACTOR)
        (session,) = core_services.activity.recent_sessions()
        assert session.outcome == "failed" and session.failure_message
        assert core_services.audit.entries()[0].outcome == "failed"


# -- apply: success ------------------------------------------------------------------------------


@pytest.fixture
def started(core_services: Services, fake_moneykit: FakeMoneyKit):
    fake_moneykit.add_institution("bank-a", "Bank A", color="#0A66C2")
    fake_moneykit.add_link("mk_new", tags=["customer:cust_0042", "source:linkdesk"])
    fake_moneykit.exchangeable["ext_tok_1"] = "mk_new"
    return core_services.sessions.start_link(customer_external_id="cust_0042", actor=ACTOR)


class TestApplySuccess:
    def test_exchanges_and_stores_link_accounts_institution(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started
    ):
        outcome = core_services.sessions.apply_log(
            started.session_id, success_log(started.session_id), actor=ACTOR
        )

        assert (outcome.new, outcome.outcome, outcome.link_id) == (3, "success", "mk_new")
        assert "mk_new" in (outcome.message or "")
        assert fake_moneykit.consumed == {"ext_tok_1"}
        detail = core_services.link_detail.get_link("mk_new")
        assert detail is not None
        assert detail.row.customer_id == "cust_0042"
        assert detail.row.health is Health.HEALTHY
        assert detail.row.institution_color == "#0a66c2"
        assert (detail.row.institution_logo or "").startswith("data:image/svg+xml;base64,")
        assert [a.account_id for a in detail.accounts] == ["mk_new-acc-1"]
        session = core_services.sessions.get_session(started.session_id)
        assert session is not None
        assert session.exchanged_at is not None and session.finished_at is not None
        assert session.event_count == 3
        actions = [(a.action, a.outcome, a.link_id) for a in core_services.audit.entries()]
        assert ("connect.exchange", "success", "mk_new") in actions

    def test_applying_the_same_log_again_is_a_no_op(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started
    ):
        log = success_log(started.session_id)
        core_services.sessions.apply_log(started.session_id, log, actor=ACTOR)
        again = core_services.sessions.apply_log(started.session_id, log, actor=ACTOR)
        longer = core_services.sessions.apply_log(
            started.session_id,
            [*log, log_entry(started.session_id, 4, "event", name="exit")],
            actor=ACTOR,
        )

        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 1
        assert (again.new, again.outcome, again.link_id) == (0, "success", "mk_new")
        assert (longer.new, longer.outcome) == (1, "success")
        exchanges = [a for a in core_services.audit.entries() if a.action == "connect.exchange"]
        assert len(exchanges) == 1

    def test_two_threads_applying_together_exchange_once(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started
    ):
        fake_moneykit.exchange_delay = lambda: time.sleep(0.2)
        log = success_log(started.session_id)
        barrier = threading.Barrier(2)
        outcomes: list[Any] = []
        errors: list[BaseException] = []

        def apply() -> None:
            try:
                barrier.wait()
                outcomes.append(
                    core_services.sessions.apply_log(started.session_id, log, actor=ACTOR)
                )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=apply) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert errors == []
        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 1
        assert sum(o.new for o in outcomes) == 3  # each event stored by exactly one thread
        assert {o.outcome for o in outcomes} <= {"success", "pending"}
        with core_services.store.read() as session:
            seqs = session.scalars(
                sa.select(ConnectEvent.seq).where(ConnectEvent.session_id == started.session_id)
            ).all()
        assert sorted(seqs) == [1, 2, 3]
        final = core_services.sessions.apply_log(started.session_id, log, actor=ACTOR)
        assert final.outcome == "success"

    def test_the_exchangeable_token_is_not_stored(self, core_services: Services, started):
        core_services.sessions.apply_log(
            started.session_id, success_log(started.session_id), actor=ACTOR
        )
        assert "ext_tok_1" not in all_text_in_database(core_services)

    def test_exchange_failure_is_recorded_and_not_retried(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started
    ):
        log = success_log(started.session_id, token="ext_unknown")
        first = core_services.sessions.apply_log(started.session_id, log, actor=ACTOR)
        second = core_services.sessions.apply_log(started.session_id, log, actor=ACTOR)

        assert first.outcome == second.outcome == "failed"
        assert first.message and "could not be completed" in first.message
        assert "ext_unknown" not in first.message
        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 1
        audit = [a for a in core_services.audit.entries() if a.action == "connect.exchange"]
        assert [a.outcome for a in audit] == ["failed"]
        assert "invalid_token_exchange" in (audit[0].detail or "")

    def test_a_success_without_token_is_dropped_as_malformed(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started
    ):
        # Not what the component sends: the one parser drops it, nothing is exchanged, and the
        # session stays open for the real end (or the agent's abandon).
        log = [log_entry(started.session_id, 1, "success", exchangeable_token="")]
        outcome = core_services.sessions.apply_log(started.session_id, log, actor=ACTOR)
        assert (outcome.outcome, outcome.new) == ("pending", 0)
        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 0

    def test_a_continue_log_that_restarts_numbering_still_completes_once(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started
    ):
        sid = started.session_id
        before_oauth = [
            log_entry(sid, 1, "event", name="open"),
            log_entry(sid, 2, "event", name="open_oauth"),
        ]
        core_services.sessions.apply_log(sid, before_oauth, actor=ACTOR)
        after_return = [
            log_entry(sid, 1, "success", exchangeable_token="ext_tok_1", link_id="mk_new")
        ]
        outcome = core_services.sessions.apply_log(sid, after_return, actor=ACTOR)
        core_services.sessions.apply_log(sid, after_return, actor=ACTOR)

        assert outcome.outcome == "success" and outcome.new == 0
        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 1

    def test_malformed_and_foreign_entries_are_ignored_and_gaps_reported(
        self, core_services: Services, started
    ):
        sid = started.session_id
        log = [
            log_entry(sid, 1, "event", name="open"),
            "junk",
            {"seq": 2},
            log_entry("someone-else", 2, "success", exchangeable_token="ext_tok_1"),
            log_entry(sid, 4, "event", name="change_screen"),
        ]
        outcome = core_services.sessions.apply_log(sid, log, actor=ACTOR)
        assert (outcome.new, outcome.outcome, outcome.gaps) == (2, "pending", (2, 3))

    def test_the_second_window_of_an_oauth_flow_waits_for_the_first_and_shows_its_success(
        self,
        core_services: Services,
        core_settings: Settings,
        fake_moneykit: FakeMoneyKit,
        started,
        core_clock,
    ):
        # The return window claimed the session and is exchanging the token when the first
        # window reports the same success: it must end on that success, not "still open".
        sid = started.session_id
        log = success_log(sid)
        with core_services.store.write() as session:
            row = session.get(ConnectSession, sid)
            assert row is not None
            row.completion_claimed_at = core_clock()
        polls: list[float] = []

        def other_window_finishes(seconds: float) -> None:
            polls.append(seconds)
            if len(polls) == 2:
                with core_services.store.write() as session:
                    row = session.get(ConnectSession, sid)
                    assert row is not None
                    row.outcome, row.link_id = "success", "mk_new"
                    row.finished_at = core_clock()

        second_window = ConnectService(
            store=core_services.store,
            client=core_services.client,
            settings=core_settings,
            audit=core_services.audit,
            clock=core_clock,
            sleep=other_window_finishes,
        )
        outcome = second_window.apply_log(sid, log, actor=ACTOR)
        assert (outcome.outcome, outcome.link_id) == ("success", "mk_new")
        assert len(polls) == 2
        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 0  # not exchanged again

    def test_both_windows_reporting_the_same_success_exchange_once_and_both_succeed(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started
    ):
        first = core_services.sessions.apply_log(
            started.session_id, success_log(started.session_id), actor=ACTOR
        )
        # The other window's component numbers its own log from 1 again.
        second = core_services.sessions.apply_log(
            started.session_id,
            [log_entry(started.session_id, 1, "success", exchangeable_token="ext_tok_1")],
            actor=ACTOR,
        )
        assert first.outcome == second.outcome == "success"
        assert first.link_id == second.link_id == "mk_new"
        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 1

    def test_an_interrupted_completion_is_closed_later(
        self, core_services: Services, fake_moneykit: FakeMoneyKit, started, core_clock
    ):
        sid = started.session_id
        with core_services.store.write() as session:  # as if the process died mid-exchange
            row = session.get(ConnectSession, sid)
            assert row is not None
            row.completion_claimed_at = core_clock()
        log = success_log(sid)
        waiting = core_services.sessions.apply_log(sid, log, actor=ACTOR)
        assert (waiting.outcome, waiting.message) == ("pending", "Finishing the link…")
        core_clock.advance(6 * 60)
        closed = core_services.sessions.apply_log(sid, log, actor=ACTOR)
        assert closed.outcome == "failed" and "stopped" in (closed.message or "")
        assert fake_moneykit.calls["POST /link-session/exchange-token"] == 0

    def test_unknown_session_is_refused(self, core_services: Services):
        with pytest.raises(UnknownSession):
            core_services.sessions.apply_log("nope", [], actor=ACTOR)


# -- apply: exit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, "You closed Connect before finishing."),
        (
            {
                "error_id": "invalid_credentials",
                "displayed_message": "Wrong username or password",
                "request_id": "req_9",
            },
            "Wrong username or password. (invalid_credentials, request id req_9)",
        ),
        (
            {"error_id": "institution_error", "displayed_message": None, "request_id": None},
            "The bank is not available right now; try again later. (institution_error)",
        ),
        ({"error_id": "weird"}, "Connect ended with an error. (weird)"),
    ],
)
def test_exit_message(error, expected):
    assert exit_message(error) == expected


class TestApplyExit:
    def test_closed_connect(self, core_services: Services, started):
        sid = started.session_id
        outcome = core_services.sessions.apply_log(
            sid,
            [log_entry(sid, 1, "event", name="open"), log_entry(sid, 2, "exit", error=None)],
            actor=ACTOR,
        )
        assert (outcome.outcome, outcome.message) == (
            "exit",
            "You closed Connect before finishing.",
        )
        audit = core_services.audit.entries()[0]
        assert (audit.action, audit.outcome) == ("connect.exit", "closed")

    def test_exit_with_error_records_the_error(self, core_services: Services, started):
        sid = started.session_id
        error = {
            "error_id": "invalid_credentials",
            "displayed_message": "Bad login",
            "request_id": "req_77",
        }
        outcome = core_services.sessions.apply_log(
            sid, [log_entry(sid, 1, "exit", error=error)], actor=ACTOR
        )
        assert outcome.outcome == "exit"
        assert outcome.message == "Bad login. (invalid_credentials, request id req_77)"
        row = core_services.sessions.get_session(sid)
        assert row is not None
        assert (row.exit_error_id, row.exit_request_id) == ("invalid_credentials", "req_77")
        assert core_services.audit.entries()[0].outcome == "invalid_credentials"
        again = core_services.sessions.apply_log(
            sid, [log_entry(sid, 1, "exit", error=error)], actor=ACTOR
        )
        assert again.message == outcome.message and again.new == 0
        assert len([a for a in core_services.audit.entries() if a.action == "connect.exit"]) == 1


# -- relink --------------------------------------------------------------------------------------


@pytest.fixture
def stored_links(core_services: Services, fake_moneykit: FakeMoneyKit):
    fake_moneykit.add_link("mk_ok", tags=["customer:cust_0001"])
    fake_moneykit.add_link(
        "mk_expired",
        state="error",
        error_code="auth_expired",
        tags=["customer:cust_0002", "app:mobile"],
    )
    fake_moneykit.links["mk_expired"]["webhook"] = "https://old-hook.example/x"
    core_services.discovery.sync_all()
    return fake_moneykit


class TestRelink:
    def test_refused_for_a_healthy_link(self, core_services: Services, stored_links):
        with pytest.raises(RelinkNotNeeded) as info:
            core_services.sessions.start_relink(link_id="mk_ok", actor=ACTOR)
        assert info.value.health == "healthy"
        assert stored_links.link_sessions == []
        audit = core_services.audit.entries()[0]
        assert (audit.action, audit.outcome, audit.link_id) == (
            "connect.start_relink",
            "refused",
            "mk_ok",
        )

    def test_refused_when_the_link_recovered_meanwhile(self, core_services: Services, stored_links):
        stored_links.links["mk_expired"].update(state="connected", error_code=None)
        with pytest.raises(RelinkNotNeeded):
            core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        detail = core_services.link_detail.get_link("mk_expired")
        assert detail is not None and detail.row.health is Health.HEALTHY

    def test_unknown_link(self, core_services: Services, stored_links):
        with pytest.raises(LinkNotFound):
            core_services.sessions.start_relink(link_id="mk_missing", actor=ACTOR)

    def test_resends_tags_and_webhook_and_completes(
        self, core_services: Services, stored_links: FakeMoneyKit
    ):
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)

        assert (started.mode, started.link_id) == ("relink", "mk_expired")
        (body,) = stored_links.link_sessions
        assert body["existing_link_id"] == "mk_expired"
        assert body["customer_user"] == {"id": "cust_0002"}
        assert body["link_tags"] == ["customer:cust_0002", "app:mobile"]
        assert body["webhook"] == "https://linkdesk.example/webhooks/moneykit"

        stored_links.links["mk_expired"].update(state="connected", error_code=None)
        sid = started.session_id
        outcome = core_services.sessions.apply_log(
            sid,
            [
                log_entry(sid, 1, "event", name="open"),
                log_entry(
                    sid, 2, "relink_success", institution={"id": "bank-a"}, link_id="mk_expired"
                ),
            ],
            actor=ACTOR,
        )
        assert (outcome.outcome, outcome.link_id) == ("success", "mk_expired")
        assert stored_links.calls["POST /link-session/exchange-token"] == 0
        detail = core_services.link_detail.get_link("mk_expired")
        assert detail is not None and detail.row.health is Health.HEALTHY
        assert detail.state_changes[0].source == "relink"
        relink_audit = [a for a in core_services.audit.entries() if a.action == "connect.relink"]
        assert len(relink_audit) == 1 and "connected" in (relink_audit[0].detail or "")
        # Fresh data was requested once, and the state verified by a read after it.
        assert stored_links.refreshes == [("mk_expired", ["accounts", "transactions"])]
        assert "refresh requested" in (relink_audit[0].detail or "")

    def test_a_refused_refresh_does_not_spoil_the_relink(
        self, core_services: Services, stored_links: FakeMoneyKit
    ):
        stored_links.refresh_status = 429
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        stored_links.links["mk_expired"].update(state="connected", error_code=None)
        sid = started.session_id
        outcome = core_services.sessions.apply_log(
            sid, [log_entry(sid, 1, "relink_success", link_id="mk_expired")], actor=ACTOR
        )
        assert outcome.outcome == "success"
        # Not retried: refresh limits are per hour, a retry in seconds would only fail again.
        assert stored_links.calls["POST /links/mk_expired/products"] == 1
        relink_audit = [a for a in core_services.audit.entries() if a.action == "connect.relink"]
        assert "rate limited" in (relink_audit[0].detail or "")

    def test_a_404_when_starting_keeps_the_link(
        self, core_services: Services, stored_links: FakeMoneyKit
    ):
        # A 404 can come from a proxy or a wrong client id: only a 410 or state "deleted" is
        # MoneyKit saying the link is gone.
        del stored_links.links["mk_expired"]
        with pytest.raises(LinkUnavailable):
            core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        detail = core_services.link_detail.get_link("mk_expired")
        assert detail is not None
        assert (detail.row.state, detail.row.error_code) == ("error", "auth_expired")
        (entry,) = core_services.audit.entries(action="connect.start_relink")
        assert entry.outcome == "refused" and "404" in (entry.detail or "")

    def test_a_relink_moneykit_does_not_confirm_is_not_a_success(
        self, core_services: Services, stored_links: FakeMoneyKit
    ):
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        sid = started.session_id
        # Connect (or a hostile browser) says the relink finished; MoneyKit still says otherwise.
        outcome = core_services.sessions.apply_log(
            sid, [log_entry(sid, 1, "relink_success", link_id="mk_expired")], actor=ACTOR
        )
        assert outcome.outcome == "failed"
        assert "still needs a relink" in (outcome.message or "")
        (entry,) = core_services.audit.entries(action="connect.relink")
        assert entry.outcome == "unconfirmed" and "error/auth_expired" in (entry.detail or "")
        detail = core_services.link_detail.get_link("mk_expired")
        assert detail is not None and detail.row.health is Health.NEEDS_RELINK
        # The reservation ends with the session: another agent may try at once.
        again = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        assert again.session_id != sid

    def test_a_bare_actor_name_still_works_as_the_configured_role(
        self, core_services: Services, stored_links: FakeMoneyKit
    ):
        with pytest.warns(DeprecationWarning):
            started = core_services.sessions.start_relink(link_id="mk_expired", actor="carol")
        assert started.mode == "relink"
        (entry,) = core_services.audit.entries(action="connect.start_relink")
        assert (entry.actor, entry.role) == ("carol", "support")

    def test_lease_stops_a_second_agent_until_the_first_finishes(
        self, core_services: Services, stored_links: FakeMoneyKit
    ):
        first = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        with pytest.raises(LeaseHeld) as info:
            core_services.sessions.start_relink(link_id="mk_expired", actor=BOB)
        assert info.value.holder == ACTOR.name
        # The holder may start again (e.g. after a page reload).
        again = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        core_services.sessions.apply_log(
            again.session_id, [log_entry(again.session_id, 1, "exit", error=None)], actor=ACTOR
        )
        bobs = core_services.sessions.start_relink(link_id="mk_expired", actor=BOB)
        assert bobs.session_id not in (first.session_id, again.session_id)

    def test_lease_expires(self, core_services: Services, stored_links, core_clock):
        core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        core_clock.advance(16 * 60)
        assert core_services.sessions.start_relink(link_id="mk_expired", actor=BOB)

    def test_latest_pending_session_for_the_oauth_return(
        self, core_services: Services, stored_links
    ):
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        found = core_services.sessions.latest_pending_session(actor=ACTOR)
        assert found is not None and found.session_id == started.session_id
        assert core_services.sessions.latest_pending_session(actor=BOB) is None


# -- the reservation: abandon, release, resume, take over ----------------------------------------

ADMIN_ACTOR = Actor("ada", Role.ADMIN)


def session_outcome(services: Services, session_id: str) -> str:
    row = services.sessions.get_session(session_id)
    assert row is not None
    return row.outcome


class TestReservation:
    def test_abandon_ends_the_session_and_frees_the_link_at_once(
        self, core_services: Services, stored_links
    ):
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        core_services.sessions.abandon_session(started.session_id, actor=ACTOR)
        assert session_outcome(core_services, started.session_id) == "exit"
        assert core_services.activity.relink_in_progress("mk_expired") is None
        # Idempotent: a second abandon writes nothing more.
        core_services.sessions.abandon_session(started.session_id, actor=ACTOR)
        assert len(core_services.audit.entries(action="connect.abandon")) == 1
        assert core_services.sessions.start_relink(link_id="mk_expired", actor=BOB)

    def test_only_who_opened_a_session_may_abandon_it(self, core_services: Services, stored_links):
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        with pytest.raises(LeaseNotHeld):
            core_services.sessions.abandon_session(started.session_id, actor=BOB)
        assert session_outcome(core_services, started.session_id) == "pending"

    def test_the_holder_releases_and_anyone_may_relink(self, core_services: Services, stored_links):
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        with pytest.raises(LeaseNotHeld):
            core_services.sessions.release_relink("mk_expired", actor=BOB)
        core_services.sessions.release_relink("mk_expired", actor=ACTOR, reason="wrong customer")
        assert core_services.activity.relink_in_progress("mk_expired") is None
        assert session_outcome(core_services, started.session_id) == "exit"
        (entry,) = core_services.audit.entries(action="connect.relink_release")
        assert (entry.actor, entry.reason) == (ACTOR.name, "wrong customer")
        with pytest.raises(LeaseNotHeld):
            core_services.sessions.release_relink("mk_expired", actor=ACTOR)
        assert core_services.sessions.start_relink(link_id="mk_expired", actor=BOB)

    def test_resume_opens_a_new_session_under_the_same_reservation(
        self, core_services: Services, stored_links
    ):
        first = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        with pytest.raises(LeaseNotHeld):
            core_services.sessions.resume_relink("mk_expired", actor=BOB)
        again = core_services.sessions.resume_relink("mk_expired", actor=ACTOR)
        assert again.session_id != first.session_id
        assert session_outcome(core_services, first.session_id) == "exit"
        lease = core_services.activity.relink_in_progress("mk_expired")
        assert lease is not None and (lease.holder, lease.session_id) == (
            ACTOR.name,
            again.session_id,
        )
        assert len(core_services.audit.entries(action="connect.relink_resume")) == 1

    def test_resume_of_a_link_repaired_meanwhile_frees_it(
        self, core_services: Services, stored_links
    ):
        first = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        stored_links.links["mk_expired"].update(state="connected", error_code=None)
        with pytest.raises(RelinkNotNeeded):
            core_services.sessions.resume_relink("mk_expired", actor=ACTOR)
        assert core_services.activity.relink_in_progress("mk_expired") is None
        assert session_outcome(core_services, first.session_id) == "exit"

    def test_an_admin_takes_over_with_a_reason(self, core_services: Services, stored_links):
        first = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        with pytest.raises(PermissionDenied):
            core_services.sessions.take_over_relink("mk_expired", actor=BOB, reason="mine now")
        with pytest.raises(ReasonRequired):
            core_services.sessions.take_over_relink("mk_expired", actor=ADMIN_ACTOR, reason=" ")
        previous = core_services.sessions.take_over_relink(
            "mk_expired", actor=ADMIN_ACTOR, reason="agent left for the day"
        )
        assert previous == ACTOR.name
        assert session_outcome(core_services, first.session_id) == "exit"
        (entry,) = core_services.audit.entries(action="connect.relink_take_over")
        assert (entry.actor, entry.reason) == ("ada", "agent left for the day")
        assert ACTOR.name in (entry.detail or "")
        # The first agent is now refused, the admin may open Connect.
        with pytest.raises(LeaseHeld):
            core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ADMIN_ACTOR)
        lease = core_services.activity.relink_in_progress("mk_expired")
        assert lease is not None and lease.session_id == started.session_id

    def test_a_late_success_of_a_taken_over_session_changes_nothing(
        self, core_services: Services, stored_links
    ):
        first = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        core_services.sessions.take_over_relink("mk_expired", actor=ADMIN_ACTOR, reason="urgent")
        sid = first.session_id
        outcome = core_services.sessions.apply_log(
            sid, [log_entry(sid, 1, "relink_success", link_id="mk_expired")], actor=ACTOR
        )
        assert outcome.outcome == "exit"
        assert core_services.audit.entries(action="connect.relink") == []

    def test_two_admins_taking_over_at_once_exactly_one_wins(
        self, core_services: Services, stored_links
    ):
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        barrier = threading.Barrier(2)
        results: list[str] = []

        def take_over(name: str) -> None:
            barrier.wait()
            try:
                core_services.sessions.take_over_relink(
                    "mk_expired",
                    actor=Actor(name, Role.ADMIN),
                    reason="race",
                    seen_session=started.session_id,
                )
                results.append("won")
            except LeaseNotHeld:
                results.append("refused")

        threads = [threading.Thread(target=take_over, args=(f"admin-{i}",)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(results) == ["refused", "won"]
        assert len(core_services.audit.entries(action="connect.relink_take_over")) == 1


class TestTotalsFollowStaffActions:
    def test_a_relink_moves_the_link_between_the_shared_counts_at_once(
        self, core_services: Services, stored_links
    ):
        before = core_services.totals.health_summary(max_age=3600)
        assert before.errors.get("auth_expired") == 1
        started = core_services.sessions.start_relink(link_id="mk_expired", actor=ACTOR)
        stored_links.links["mk_expired"].update(state="connected", error_code=None)
        sid = started.session_id
        core_services.sessions.apply_log(
            sid, [log_entry(sid, 1, "relink_success", link_id="mk_expired")], actor=ACTOR
        )
        # Served from the shared value (no recount within the hour), already moved.
        after = core_services.totals.health_summary(max_age=3600)
        assert after.computed_at == before.computed_at
        assert after.errors.get("auth_expired", 0) == 0
        assert after.counts[Health.HEALTHY] == before.counts[Health.HEALTHY] + 1
        assert after.counts[Health.NEEDS_RELINK] == before.counts[Health.NEEDS_RELINK] - 1
        assert after.groups == core_services.totals.health_summary(max_age=0).groups  # a recount

    def test_a_new_link_is_counted_at_once(self, core_services: Services, stored_links, started):
        before = core_services.totals.health_summary(max_age=3600)
        core_services.sessions.apply_log(
            started.session_id, success_log(started.session_id), actor=ACTOR
        )
        after = core_services.totals.health_summary(max_age=3600)
        assert after.total == before.total + 1
        assert after.groups == core_services.totals.health_summary(max_age=0).groups
