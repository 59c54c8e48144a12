"""Aggregates for the overview, funnel, timeline and webhooks pages, on small hand-built stores.

Rows go in through the real ORM (the way the services write them); every expected number below
is worked out by hand from those rows.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from linkdesk.alerts.rollup import StateChangeRollup
from linkdesk.auth import Actor, PermissionDenied, Role
from linkdesk.bootstrap import Services
from linkdesk.health import Health
from linkdesk.read.export import links_csv
from linkdesk.read.funnel import FunnelFilters, FunnelReads
from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.read.overview import OverviewReads, TrendPoint
from linkdesk.read.overview_history import OverviewHistory
from linkdesk.read.timeline import TimelineReads
from linkdesk.read.worker import WorkerProgress
from linkdesk.services.webhook_apply import NotReapplicable
from linkdesk.store import Store
from linkdesk.store.health_totals import HealthTotals
from linkdesk.store.models import (
    AlertState,
    AuditEntry,
    Customer,
    Institution,
    Link,
    LinkStateChange,
    StateChangeDay,
    SyncAttempt,
    WebhookDelivery,
    WebhookEvent,
)
from linkdesk.store.repository import link_moved
from linkdesk.store.shared import wait_for_refreshes
from tests.connect_sessions import store_session
from tests.unit.conftest import FakeClock, FakeMoneyKit, WebhookSigner

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def add_bank(store: Store, institution_id: str, name: str, color: str = "#123456") -> None:
    with store.write() as session:
        session.add(Institution(institution_id=institution_id, name=name, color=color))


def add_link(
    store: Store,
    link_id: str,
    *,
    institution_id: str = "bank-a",
    customer_id: str | None = None,
    state: str = "connected",
    error_code: str | None = None,
    changes: list[tuple[datetime, str, str | None]] = (),  # type: ignore[assignment]
) -> None:
    with store.write() as session:
        if customer_id and session.get(Customer, customer_id) is None:
            session.add(Customer(customer_id=customer_id, first_seen_at=NOW, updated_at=NOW))
            session.flush()
        session.add(
            Link(
                link_id=link_id,
                institution_id=institution_id,
                customer_id=customer_id,
                state=state,
                error_code=error_code,
                created_at=NOW - timedelta(days=30),
                products_refreshed_at=NOW,
                updated_at=NOW,
            )
        )
        link_moved(session, None, (state, error_code, institution_id))
        session.flush()
        previous: tuple[str | None, str | None] = (None, None)
        for at, to_state, to_error in changes:
            session.add(
                LinkStateChange(
                    link_id=link_id,
                    at=at,
                    from_state=previous[0],
                    from_error=previous[1],
                    to_state=to_state,
                    to_error=to_error,
                    source="sync",
                )
            )
            previous = (to_state, to_error)


def add_session(
    store: Store,
    session_id: str,
    *,
    mode: str = "link",
    outcome: str = "pending",
    started_at: datetime = NOW - timedelta(hours=1),
    finished_at: datetime | None = None,
    link_id: str | None = None,
    customer_id: str | None = None,
    exit_error_id: str | None = None,
    events: list[tuple[str, str, dict[str, Any], int]] = (),  # type: ignore[assignment]
) -> None:
    """``events``: (type, name, properties, seconds after the start)."""
    store_session(
        store,
        session_id,
        mode=mode,
        outcome=outcome,
        started_at=started_at,
        finished_at=finished_at,
        link_id=link_id,
        customer_id=customer_id,
        exit_error_id=exit_error_id,
        events=[
            (kind, name, properties, started_at + timedelta(seconds=seconds))
            for kind, name, properties, seconds in events
        ],
    )


def screen(name: str, seconds: int) -> tuple[str, str, dict[str, Any], int]:
    return ("event", "change_screen", {"current_screen_name": name}, seconds)


@pytest.fixture
def banks(store: Store) -> Store:
    add_bank(store, "bank-a", "Alpha Bank", "#aa0000")
    add_bank(store, "bank-b", "Beta Bank", "#00bb00")
    add_bank(store, "bank-c", "Gamma Bank", "#zzzzzz")
    return store


def overview_of(store: Store, totals: HealthTotals | None = None) -> OverviewReads:
    """The Overview's reads as bootstrap builds them, over ``store`` at NOW."""
    return OverviewReads(
        store=store,
        totals=totals or HealthTotals(store, clock=clock),
        worker=WorkerProgress(store, clock=clock),
        history=OverviewHistory(store, clock=clock),
        rollup=StateChangeRollup(store, clock=clock),
        clock=clock,
    )


def break_link(totals: HealthTotals, link_id: str, *, at: datetime) -> None:
    """The link's bank login expires, written as an applied webhook writes it."""
    with totals.writing(link_id) as session:
        link = session.get(Link, link_id)
        assert link is not None
        before = (link.state, link.error_code, link.institution_id)
        link.state, link.error_code = "error", "auth_expired"
        link_moved(session, before, (link.state, link.error_code, link.institution_id))
        session.add(
            LinkStateChange(
                link_id=link_id,
                at=at,
                from_state=before[0],
                from_error=before[1],
                to_state="error",
                to_error="auth_expired",
                source="webhook",
            )
        )


def day(n: int, hour: int = 9) -> datetime:
    """``n`` days before NOW's day, at ``hour`` UTC."""
    return (NOW - timedelta(days=n)).replace(hour=hour)


class TestOverview:
    def test_a_server_starts_counting_the_landing_page_before_anyone_opens_it(
        self, banks: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        add_link(banks, "a", state="error", error_code="auth_expired")
        overview = overview_of(banks)
        overview.start_counting()
        wait_for_refreshes()

        def not_again(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("counted again for the first page")

        monkeypatch.setattr(overview._history, "broke_today", not_again)
        monkeypatch.setattr(overview._totals, "_compute_health_summary", not_again)
        snapshot = overview.snapshot(max_age=60)  # the first page: served what was counted
        assert snapshot.summary.counts[Health.NEEDS_RELINK] == 1

    def test_the_trend_counts_links_in_each_condition_at_the_end_of_each_day(
        self, banks: Store
    ) -> None:
        add_link(
            banks,
            "a",
            changes=[
                (day(10), "connected", None),
                (day(3), "error", "auth_expired"),
                (day(1), "connected", None),
            ],
        )
        add_link(
            banks,
            "b",
            state="error",
            error_code="invalid_credentials",
            changes=[(day(10), "connected", None), (day(2), "error", "invalid_credentials")],
        )
        add_link(
            banks,
            "c",
            state="error",
            error_code="institution_error",  # a wait error: not a relink
            changes=[(day(3), "error", "institution_error")],
        )
        expected = [
            TrendPoint(day(4).date(), 0, 0),
            TrendPoint(day(3).date(), 1, 1),
            TrendPoint(day(2).date(), 1, 2),
            TrendPoint(day(1).date(), 0, 1),
            TrendPoint(day(0).date(), 0, 1),
        ]
        overview = overview_of(banks)
        # The first run fills the days older than the rollup's start (day 10 here) in one
        # aggregate; the rollup's chunks add the recent ones.
        assert overview.trend(5) == expected
        with banks.read() as session:
            kept = dict(
                session.execute(sa.select(StateChangeDay.day, StateChangeDay.needs_relink)).all()
            )
        assert kept == {day(3).date(): 1, day(2).date(): 1, day(1).date(): -1}
        # Read again: nothing added twice.
        assert overview_of(banks).trend(5) == expected
        # A store whose rollup ran before days were kept fills them from the same history.
        with banks.write() as session:
            session.execute(sa.delete(StateChangeDay))
            session.execute(sa.delete(AlertState).where(AlertState.name == "trend_days_filled"))
        assert overview_of(banks).trend(5) == expected

    def test_the_trend_follows_a_change_made_since(self, banks: Store) -> None:
        add_link(banks, "a", changes=[(day(10), "connected", None)])
        totals = HealthTotals(banks, clock=clock)
        overview = overview_of(banks, totals)
        assert overview.trend(3) == [TrendPoint(day(n).date(), 0, 0) for n in (2, 1, 0)]
        break_link(totals, "a", at=NOW - timedelta(minutes=5))
        assert overview.trend(3) == [
            TrendPoint(day(2).date(), 0, 0),
            TrendPoint(day(1).date(), 0, 0),
            TrendPoint(day(0).date(), 1, 1),
        ]

    def test_a_link_broken_here_is_in_broke_today_on_the_next_refresh(self, banks: Store) -> None:
        add_link(banks, "a", customer_id="cust_1", changes=[(day(10), "connected", None)])
        totals = HealthTotals(banks, clock=clock)
        overview = overview_of(banks, totals)
        assert overview.snapshot(max_age=60).broke_today.total == 0
        break_link(totals, "a", at=NOW - timedelta(minutes=1))
        # The shared activity is a second old and may be served for a minute; the write asked
        # for it to be read again (in the background, which this lets start at once).
        wait_for_refreshes()
        snapshot = overview.snapshot(max_age=60)
        assert [row.link_id for row in snapshot.broke_today.links] == ["a"]
        assert snapshot.summary.errors == {"auth_expired": 1}

    def test_banks_in_error_worst_first_with_validated_colours(self, banks: Store) -> None:
        for i in range(3):
            add_link(
                banks, f"b{i}", institution_id="bank-b", state="error", error_code="auth_expired"
            )
        add_link(banks, "c1", institution_id="bank-c", state="error", error_code="system_error")
        add_link(banks, "c2", institution_id="bank-c")
        add_link(banks, "a1", institution_id="bank-a")  # healthy banks are left out
        rows = overview_of(banks).snapshot(max_age=0).errors_by_bank
        assert [(r.institution_id, r.errors, r.links, r.color) for r in rows] == [
            ("bank-b", 3, 3, "#00bb00"),
            ("bank-c", 1, 2, None),
        ]

    def test_relink_success_rate_and_median_time_to_repair(self, banks: Store) -> None:
        add_link(banks, "x", changes=[(NOW - timedelta(hours=10), "error", "auth_expired")])
        add_link(banks, "y", changes=[(NOW - timedelta(hours=10), "error", "auth_expired")])
        add_link(banks, "z", changes=[(NOW - timedelta(hours=10), "error", "auth_expired")])
        started = NOW - timedelta(hours=9)
        for session_id, link_id, repaired_after in (("r1", "x", 2), ("r2", "y", 4), ("r3", "z", 9)):
            add_session(
                banks,
                session_id,
                mode="relink",
                outcome="success",
                link_id=link_id,
                started_at=started,
                finished_at=NOW - timedelta(hours=10) + timedelta(hours=repaired_after),
            )
        add_session(banks, "r4", mode="relink", outcome="exit", link_id="x", started_at=started)
        add_session(banks, "r5", mode="relink", outcome="pending", link_id="y", started_at=started)
        add_session(
            banks, "old", mode="relink", outcome="exit", started_at=NOW - timedelta(days=40)
        )
        add_session(banks, "l1", mode="link", outcome="success", started_at=started)
        stats = OverviewHistory(banks, clock=clock).relink_stats(30)
        assert (stats.started, stats.succeeded, stats.exited, stats.pending) == (5, 3, 1, 1)
        assert stats.success_rate == pytest.approx(3 / 4)
        assert stats.repaired == 3
        assert stats.median_repair is not None
        assert abs(stats.median_repair - timedelta(hours=4)) < timedelta(seconds=1)

    def test_an_even_number_of_repairs_averages_the_middle_two(self, banks: Store) -> None:
        for link_id, hours in (("p", 1), ("q", 3)):
            add_link(banks, link_id, changes=[(NOW - timedelta(hours=5), "error", "auth_expired")])
            add_session(
                banks,
                f"s-{link_id}",
                mode="relink",
                outcome="success",
                link_id=link_id,
                started_at=NOW - timedelta(hours=5),
                finished_at=NOW - timedelta(hours=5) + timedelta(hours=hours),
            )
        stats = OverviewHistory(banks, clock=clock).relink_stats(30)
        assert stats.median_repair is not None
        assert abs(stats.median_repair - timedelta(hours=2)) < timedelta(seconds=1)

    def test_no_relinks_means_no_rate(self, banks: Store) -> None:
        stats = OverviewHistory(banks, clock=clock).relink_stats(30)
        assert (stats.started, stats.success_rate, stats.median_repair) == (0, None, None)

    def test_webhook_lag_is_the_age_of_the_oldest_pending_event(self, banks: Store) -> None:
        analytics = OverviewHistory(banks, clock=clock)
        assert analytics.webhook_lag() == timedelta(0)
        with banks.write() as session:
            for key, minutes, status in (
                ("k1", 7, "pending"),
                ("k2", 3, "pending"),
                ("k3", 60, "applied"),
            ):
                session.add(
                    WebhookEvent(
                        idempotency_key=key,
                        event="link.state_changed",
                        link_id="x",
                        webhook_timestamp=NOW,
                        payload={},
                        received_at=NOW - timedelta(minutes=minutes),
                        status=status,
                    )
                )
        assert analytics.webhook_lag() == timedelta(minutes=7)


class TestFunnel:
    @pytest.fixture
    def sessions(self, banks: Store) -> Store:
        add_link(banks, "relinked", institution_id="bank-b")
        pick_a = ("event", "select_institution", {"institution_id": "bank-a"}, 15)
        add_session(
            banks,
            "done",
            outcome="success",
            events=[
                screen("Finder", 5),
                pick_a,
                screen("Credentials", 20),
                ("success", "success", {}, 50),
            ],
        )
        add_session(
            banks,
            "wrong-password",
            outcome="exit",
            exit_error_id="invalid_credentials",
            events=[
                screen("Finder", 5),
                pick_a,
                screen("Credentials", 20),
                ("exit", "exit", {}, 30),
            ],
        )
        add_session(banks, "left", outcome="pending", events=[screen("Finder", 5)])
        add_session(  # ended at the bank, but the apply has not finished: not abandoned
            banks,
            "ending",
            outcome="pending",
            events=[screen("Finder", 5), ("exit", "exit", {}, 9)],
        )
        add_session(
            banks, "fresh", outcome="pending", started_at=NOW - timedelta(minutes=10), events=[]
        )
        add_session(
            banks,
            "relink-b",
            mode="relink",
            outcome="exit",
            exit_error_id="user_oauth_denied",
            link_id="relinked",
            events=[screen("Consent", 5), ("exit", "exit", {}, 65)],
        )
        add_session(banks, "last-month", outcome="success", started_at=NOW - timedelta(days=45))
        return banks

    def window(self, **kw: Any) -> FunnelFilters:
        return FunnelFilters.days(NOW.date() - timedelta(days=30), NOW.date(), **kw)

    def test_a_period_is_whole_days(self) -> None:
        window = self.window()
        assert (window.since, window.until) == (
            datetime(2025, 2, 8, tzinfo=UTC),
            datetime(2025, 3, 11, tzinfo=UTC),
        )
        with pytest.raises(ValueError, match="whole UTC days"):
            FunnelFilters(since=NOW - timedelta(days=30), until=NOW)

    def test_a_view_is_counted_once_for_every_session_within_its_age(self, sessions: Store) -> None:
        ticks = [0.0]
        funnel = FunnelReads(sessions, clock=clock, monotonic=lambda: ticks[0])
        first = funnel.view(self.window(), max_age=15)
        assert first.summary == funnel.summary(self.window())
        assert first.by_day == funnel.by_day(self.window())
        add_session(sessions, "late", outcome="success", finished_at=NOW)
        ticks[0] = 10.0
        assert funnel.view(self.window(), max_age=15) is first  # another session, same count
        assert funnel.view(self.window(mode="link"), max_age=15) is not first  # other filters
        recounted = funnel.view(self.window(), max_age=0)
        assert recounted.summary.started == first.summary.started + 1

    def test_the_banks_offered_are_shared_within_their_age(self, sessions: Store) -> None:
        ticks = [0.0]
        funnel = FunnelReads(sessions, clock=clock, monotonic=lambda: ticks[0])
        since = NOW - timedelta(days=30)
        banks = [("bank-a", "Alpha Bank"), ("bank-b", "Beta Bank")]
        assert funnel.banks_seen(since, max_age=15) == banks
        add_session(
            sessions,
            "at-gamma",
            outcome="exit",
            events=[("event", "select_institution", {"institution_id": "bank-c"}, 5)],
        )
        ticks[0] = 10.0
        assert funnel.banks_seen(since, max_age=15) == banks
        assert funnel.banks_seen(since, max_age=0) == [*banks, ("bank-c", "Gamma Bank")]

    def test_summary_counts_outcomes_and_abandoned_sessions(self, sessions: Store) -> None:
        summary = FunnelReads(sessions, clock=clock).summary(self.window())
        assert (summary.started, summary.completed, summary.exited, summary.pending) == (6, 1, 2, 3)
        assert summary.abandoned == 1  # "left" only

    def test_abandoned_sessions_of_past_days_and_of_the_last_half_hour(
        self, sessions: Store
    ) -> None:
        # Just after midnight: yesterday's sessions are asked one by one (the latest are not yet
        # 30 minutes old), older days' are counted in the rollup.
        midnight = datetime.combine(NOW.date(), datetime.min.time(), UTC)
        exit_logged: list[tuple[str, str, dict[str, Any], int]] = [("exit", "exit", {}, 9)]
        for session_id, started, events in (
            ("two-days-ago", midnight - timedelta(days=2), []),
            ("two-days-ago-ended", midnight - timedelta(days=2), exit_logged),
            ("last-night", midnight - timedelta(minutes=70), []),
            ("last-night-ended", midnight - timedelta(minutes=70), exit_logged),
            ("just-now", midnight - timedelta(minutes=20), []),
        ):
            add_session(sessions, session_id, started_at=started, events=events)
        funnel = FunnelReads(sessions, clock=lambda: midnight + timedelta(minutes=10))
        summary = funnel.summary(FunnelFilters.days(NOW.date() - timedelta(days=3), NOW.date()))
        # The fixture's sessions of today start after this clock: none is abandoned yet.
        assert summary.abandoned == 2  # two-days-ago, last-night
        yesterday = FunnelFilters.days(
            NOW.date() - timedelta(days=1), NOW.date() - timedelta(days=1)
        )
        assert funnel.summary(yesterday).abandoned == 1

    def test_institution_comes_from_the_link_or_from_the_bank_picked(self, sessions: Store) -> None:
        analytics = FunnelReads(sessions, clock=clock)
        assert analytics.summary(self.window(institution_id="bank-a")).started == 2
        assert analytics.summary(self.window(institution_id="bank-b")).started == 1
        assert analytics.summary(self.window(mode="relink")).started == 1
        exits = analytics.exit_errors(self.window())
        assert sorted((e.institution_name, e.error_id, e.sessions) for e in exits) == [
            ("Alpha Bank", "invalid_credentials", 1),
            ("Beta Bank", "user_oauth_denied", 1),
        ]
        assert analytics.session_institutions(NOW - timedelta(days=30)) == [
            ("bank-a", "Alpha Bank"),
            ("bank-b", "Beta Bank"),
        ]

    def test_screens_reached_dropped_and_time_spent(self, sessions: Store) -> None:
        stats = {s.screen: s for s in FunnelReads(sessions, clock=clock).screens(self.window())}
        assert set(stats) == {"Finder", "Credentials", "Consent"}
        finder, credentials, consent = stats["Finder"], stats["Credentials"], stats["Consent"]
        assert (finder.reached, finder.dropped) == (4, 2)  # "left" and "ending" stopped there
        assert (credentials.reached, credentials.dropped) == (2, 1)
        assert (consent.reached, consent.dropped) == (1, 1)
        # Finder → next event: 10 s (pick) twice, 4 s ("ending" exit); "left" has no next event.
        assert finder.samples == 3
        assert finder.avg_seconds == pytest.approx(8.0, abs=0.01)
        assert credentials.avg_seconds == pytest.approx((30 + 10) / 2, abs=0.01)
        assert consent.avg_seconds == pytest.approx(60.0, abs=0.01)

    def test_sessions_by_day(self, sessions: Store) -> None:
        days = FunnelReads(sessions, clock=clock).by_day(self.window())
        assert [(d.day, d.started, d.completed) for d in days] == [(NOW.date(), 6, 1)]


class TestCustomerTimeline:
    @pytest.fixture
    def history(self, banks: Store) -> Store:
        add_link(
            banks,
            "mine",
            customer_id="cust_1",
            changes=[(day(5), "connected", None), (day(2), "error", "auth_expired")],
        )
        add_link(banks, "theirs", customer_id="cust_2", changes=[(day(4), "connected", None)])
        add_session(
            banks,
            "relink-1",
            mode="relink",
            outcome="success",
            link_id="mine",
            customer_id="cust_1",
            started_at=day(1),
            finished_at=day(1) + timedelta(minutes=3),
            events=[screen("Credentials", 10)],
        )
        with banks.write() as session:
            session.add(
                WebhookDelivery(
                    received_at=day(2, 10),
                    link_id="mine",
                    verdict="accepted",
                    event="link.state_changed",
                    reason="ok",
                )
            )
            session.add(
                WebhookDelivery(
                    received_at=day(2, 10), link_id="theirs", verdict="accepted", reason="ok"
                )
            )
            session.add(
                SyncAttempt(link_id="mine", kind="link", at=day(3), outcome="ok", worker="w")
            )
            session.add(
                AuditEntry(
                    at=day(1, 8),
                    actor="dana",
                    role="support",
                    action="link.note",
                    link_id="mine",
                    customer_id="cust_1",
                    outcome="success",
                    detail="called",
                )
            )
            session.add(
                AuditEntry(
                    at=day(1, 8),
                    actor="eve",
                    action="link.note",
                    link_id="theirs",
                    customer_id="cust_2",
                    outcome="success",
                )
            )
        return banks

    def test_everything_about_one_customer_newest_first(self, history: Store) -> None:
        page = TimelineReads(history, clock=clock).customer_timeline("cust_1", limit=100)
        kinds = [(e.kind, e.link_id) for e in page.entries]
        assert sorted(kinds) == sorted(
            [
                ("exchange", "mine"),  # the relink that succeeded
                ("event", "mine"),
                ("session", "mine"),  # started
                ("staff", "mine"),
                ("webhook", "mine"),
                ("state", "mine"),
                ("sync", "mine"),
                ("state", "mine"),
            ]
        )
        assert [e.at for e in page.entries] == sorted((e.at for e in page.entries), reverse=True)
        assert all(e.institution_name == "Alpha Bank" for e in page.entries)
        assert page.next_cursor is None
        relinked = next(e for e in page.entries if e.kind == "exchange")
        assert (relinked.what, relinked.who) == ("Relinked: the link works again", "dana")

    def test_kinds_filter_and_paging_without_overlap(self, history: Store) -> None:
        analytics = TimelineReads(history, clock=clock)
        only = analytics.customer_timeline("cust_1", kinds=["state", "webhook"])
        assert sorted(e.kind for e in only.entries) == ["state", "state", "webhook"]
        assert analytics.customer_timeline("cust_1", kinds=[]).entries == []
        seen: list[tuple[str, str]] = []
        cursor = None
        while True:
            page = analytics.customer_timeline("cust_1", limit=3, after=cursor)
            seen.extend((e.kind, e.ref) for e in page.entries)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert len(seen) == len(set(seen)) == 8


class TestLinksCsv:
    def test_pages_through_the_filter_and_stops_at_the_cap(self, banks: Store) -> None:
        add_bank(banks, "bank-evil", '=HYPERLINK("http://x")')
        for i in range(7):
            add_link(
                banks, f"e{i}", institution_id="bank-evil", state="error", error_code="auth_expired"
            )
        for i in range(4):
            add_link(banks, f"ok{i}")
        queries = LinkQueries(banks, clock=clock)
        expired = LinkFilters(error_code="auth_expired")
        export = links_csv(queries, expired, sort=LinkSort.LINK_ID, page_size=2)
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert (export.rows, export.capped) == (7, False)
        assert [r["link_id"] for r in rows] == [f"e{i}" for i in range(7)]
        assert all(r["institution_name"].startswith("'=") for r in rows)  # not a formula
        capped = links_csv(queries, expired, sort=LinkSort.LINK_ID, cap=5, page_size=2)
        assert (capped.rows, capped.capped) == (5, True)
        assert len(list(csv.DictReader(io.StringIO(capped.text)))) == 5
        exact = links_csv(queries, None, cap=11, page_size=4)
        assert (exact.rows, exact.capped) == (11, False)


class TestReapply:
    @pytest.fixture
    def wired(
        self, fake_moneykit: FakeMoneyKit, signer: WebhookSigner, core_services: Services
    ) -> Services:
        fake_moneykit.signer = signer
        fake_moneykit.add_link(
            "mk_1", state="error", error_code="auth_expired", tags=["customer:cust_9"]
        )
        core_services.discovery.sync_all()
        return core_services

    def deliveries(self, services: Services) -> list[WebhookDelivery]:
        with services.store.read() as session:
            return list(session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)))

    def audit(self, services: Services) -> list[AuditEntry]:
        with services.store.read() as session:
            return list(
                session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "webhook.reapply"))
            )

    def test_an_admin_re_applies_a_verified_delivery_and_it_is_audited(
        self,
        wired: Services,
        signer: WebhookSigner,
        fake_moneykit: FakeMoneyKit,
        core_clock: FakeClock,
    ) -> None:
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, state="error")
        assert wired.webhooks.receive(body, headers).verdict == "accepted"
        wired.webhook_apply.apply_pending()
        (delivery,) = self.deliveries(wired)
        fake_moneykit.links["mk_1"].update(state="connected", error_code=None)

        result = wired.webhook_apply.reapply(
            delivery.id, Actor("root", Role.ADMIN), reason="stale row"
        )
        assert (result.status, result.link_id) == ("applied", "mk_1")
        with wired.store.read() as session:
            link = session.get(Link, "mk_1")
            assert link is not None and (link.state, link.error_code) == ("connected", None)
        (entry,) = self.audit(wired)
        assert (entry.actor, entry.role, entry.outcome, entry.reason, entry.customer_id) == (
            "root",
            "admin",
            "applied",
            "stale row",
            "cust_9",
        )

    def test_support_may_not_and_the_refusal_is_audited(
        self, wired: Services, signer: WebhookSigner, core_clock: FakeClock
    ) -> None:
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now)
        wired.webhooks.receive(body, headers)
        (delivery,) = self.deliveries(wired)
        with pytest.raises(PermissionDenied):
            wired.webhook_apply.reapply(delivery.id, Actor("dana", Role.SUPPORT))
        assert [e.outcome for e in self.audit(wired)] == ["refused"]

    def test_a_rejected_or_unknown_delivery_cannot_be_re_applied(
        self, wired: Services, signer: WebhookSigner, core_clock: FakeClock
    ) -> None:
        body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, state="connected")
        wired.webhooks.receive(body.replace(b"connected", b"connectee"), headers)
        wired.webhooks.flush_refusals()  # refusals are written in batches, off the request
        (forged,) = self.deliveries(wired)
        admin = Actor("root", Role.ADMIN)
        with pytest.raises(NotReapplicable):
            wired.webhook_apply.reapply(forged.id, admin)
        with pytest.raises(NotReapplicable):
            wired.webhook_apply.reapply(forged.id + 100, admin)
        assert self.audit(wired) == []


def test_a_mangled_timeline_cursor_starts_again_at_the_newest(banks: Store) -> None:
    add_link(banks, "m", customer_id="cust_m", changes=[(day(2), "connected", None)])
    analytics = TimelineReads(banks, clock=clock)
    newest = analytics.customer_timeline("cust_m").entries
    for cursor in ("not-base64!", "WyJub3QtYS1kYXRlIiwic3RhdGUiLCIxIl0", ""):
        assert analytics.customer_timeline("cust_m", after=cursor).entries == newest


class TestBrokeToday:
    @pytest.fixture
    def broken(self, banks: Store) -> Store:
        today = NOW.replace(hour=0)
        add_link(
            banks,
            "expired",
            customer_id="cust_1",
            state="error",
            error_code="auth_expired",
            changes=[
                (day(5), "connected", None),
                (NOW - timedelta(hours=2), "error", "auth_expired"),
            ],
        )
        add_link(
            banks,
            "no-accounts",
            institution_id="bank-b",
            customer_id="cust_1",
            state="error",
            error_code="no_accounts",
            changes=[
                (day(5), "connected", None),
                (NOW - timedelta(hours=1), "error", "no_accounts"),
            ],
        )
        # From an error without a code into a relink error: it became a relink today.
        add_link(
            banks,
            "coded",
            customer_id="cust_2",
            state="error",
            error_code="invalid_credentials",
            changes=[
                (day(3), "error", None),
                (NOW - timedelta(hours=3), "error", "invalid_credentials"),
            ],
        )
        # Not today's breakages:
        add_link(
            banks,
            "yesterday",
            customer_id="cust_3",
            state="error",
            error_code="auth_expired",
            changes=[
                (day(5), "connected", None),
                (today - timedelta(minutes=1), "error", "auth_expired"),
            ],
        )
        add_link(  # first seen broken: nobody knows when it broke
            banks,
            "first-seen",
            customer_id="cust_3",
            state="error",
            error_code="auth_expired",
            changes=[(NOW - timedelta(hours=1), "error", "auth_expired")],
        )
        add_link(  # already needed a relink yesterday
            banks,
            "still-broken",
            customer_id="cust_3",
            state="error",
            error_code="invalid_credentials",
            changes=[
                (day(5), "connected", None),
                (day(1), "error", "auth_expired"),
                (NOW - timedelta(hours=1), "error", "invalid_credentials"),
            ],
        )
        add_link(  # a wait error: MoneyKit retries, nothing for staff to do
            banks,
            "waiting",
            customer_id="cust_3",
            state="error",
            error_code="institution_error",
            changes=[
                (day(5), "connected", None),
                (NOW - timedelta(hours=1), "error", "institution_error"),
            ],
        )
        add_link(  # broke this morning, repaired since
            banks,
            "repaired",
            customer_id="cust_3",
            changes=[
                (day(5), "connected", None),
                (NOW - timedelta(hours=4), "error", "auth_expired"),
                (NOW - timedelta(hours=3), "connected", None),
            ],
        )
        with banks.write() as session:
            for link_id, created in (
                ("stuck-now", NOW - timedelta(minutes=31)),  # stuck since a minute ago
                ("stuck-long-ago", NOW - timedelta(days=2)),
                ("still-pending", NOW - timedelta(minutes=5)),
            ):
                session.add(
                    Link(
                        link_id=link_id,
                        institution_id="bank-a",
                        customer_id=None,
                        state="connecting",
                        created_at=created,
                        updated_at=created,
                    )
                )
        return banks

    def test_links_that_moved_into_a_broken_verdict_today_newest_first(self, broken: Store) -> None:
        result = OverviewHistory(broken, clock=clock).broke_today()
        assert [(row.link_id, row.health, row.reason) for row in result.links] == [
            ("stuck-now", Health.STUCK, "stuck_connecting"),
            ("no-accounts", Health.ATTENTION, "no_accounts"),
            ("expired", Health.NEEDS_RELINK, "auth_expired"),
            ("coded", Health.NEEDS_RELINK, "invalid_credentials"),
        ]
        assert [row.broke_at for row in result.links] == [
            NOW - timedelta(minutes=1),
            NOW - timedelta(hours=1),
            NOW - timedelta(hours=2),
            NOW - timedelta(hours=3),
        ]
        expired = result.links[2]
        assert (expired.customer_id, expired.institution_name) == ("cust_1", "Alpha Bank")
        assert (result.total, result.customers) == (4, 2)  # cust_1 twice, cust_2, no customer
        assert result.since == NOW.replace(hour=0)

    def test_the_limit_bounds_the_rows_not_the_totals(self, broken: Store) -> None:
        result = OverviewHistory(broken, clock=clock).broke_today(limit=2)
        assert [row.link_id for row in result.links] == ["stuck-now", "no-accounts"]
        assert result.total == 4

    def test_a_quiet_day_is_empty(self, banks: Store) -> None:
        add_link(banks, "fine", changes=[(day(5), "connected", None)])
        result = OverviewHistory(banks, clock=clock).broke_today()
        assert (result.links, result.total, result.customers) == ([], 0, 0)

    def test_a_customers_links_to_act_on_leave_out_the_fine_ones(self, broken: Store) -> None:
        add_link(broken, "fine", customer_id="cust_1", changes=[(day(5), "connected", None)])
        analytics = TimelineReads(broken, clock=clock)
        assert sorted(analytics.customer_links_to_act_on("cust_1")) == ["expired", "no-accounts"]
        assert analytics.customer_links_to_act_on("cust_1", limit=1) in (
            ["expired"],
            ["no-accounts"],
        )
        assert analytics.customer_links_to_act_on("cust_") == []  # the id is exact, no prefix
        # A wait error is shown too: the playbook says not to relink, which is worth knowing.
        assert analytics.customer_links_to_act_on("cust_3") == [
            "first-seen",
            "still-broken",
            "waiting",
            "yesterday",
        ]
