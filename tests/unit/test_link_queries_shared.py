"""The read side's large-table helpers: capped counts, shared summaries, institution names, and the
index-backed sort and filter expressions (run on SQLite and on PostgreSQL)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from linkdesk.health import Health, HealthThresholds
from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.read.worker import WorkerProgress
from linkdesk.store import Store
from linkdesk.store.health_totals import (
    RECOUNT_MAX_AGE,
    SUMMARY_RECALL_MAX_AGE,
    SUMMARY_STATE_NAME,
    BankLinks,
    HealthSummary,
    HealthTotals,
)
from linkdesk.store.models import Link, LinkCount
from linkdesk.store.repository import (
    apply_event_state,
    mark_link_deleted,
    put_named_state,
    upsert_link,
)
from linkdesk.store.shared import wait_for_refreshes
from tests.unit.test_store import api_link

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def add_link(
    store: Store,
    link_id: str,
    *,
    institution: tuple[str, str] = ("bank-a", "Alpha Bank"),
    state: str = "connected",
    error_code: str | None = None,
    customer: str | None = "cust_0001",
    minute: int = 0,
) -> None:
    with store.write() as session:
        upsert_link(
            session,
            api_link(
                link_id,
                institution_id=institution[0],
                institution_name=institution[1],
                state=state,
                error_code=error_code,
                tags=[f"customer:{customer}"] if customer else [],
            ),
            customer_id=customer,
            now=T0 + timedelta(minutes=minute),
            source="sync",
        )


class Ticker:
    """A stepped clock for the ages of shared counts: one for this process's monotonic time and,
    shifted by a fixed epoch, for the wall time processes share through the store."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def queries(store: Store) -> LinkQueries:
    return LinkQueries(store, clock=lambda: T0 + timedelta(hours=1))


def totals(store: Store, ticker: Ticker | None = None) -> HealthTotals:
    if ticker is None:
        return HealthTotals(store, clock=lambda: T0 + timedelta(hours=1))
    return HealthTotals(
        store, clock=lambda: T0 + timedelta(hours=1), monotonic=ticker, wall=ticker.wall
    )


def test_a_capped_count_stops_after_cap_plus_one(store: Store) -> None:
    for number in range(7):
        add_link(store, f"mk_{number:03d}", minute=number)
    links = queries(store)

    assert links.count_links() == 7
    assert links.count_links(cap=3) == 4  # "more than 3"
    assert links.count_links(cap=7) == 7
    assert links.count_links(cap=100) == 7
    assert links.count_links(LinkFilters(search="mk_00"), cap=2) == 3
    assert links.count_links(LinkFilters(customer="nobody"), cap=2) == 0


def test_health_summary_counts_verdicts_and_error_codes_in_one_pass(store: Store) -> None:
    add_link(store, "mk_001")
    add_link(store, "mk_002", state="error", error_code="auth_expired")
    add_link(store, "mk_003", state="error", error_code="auth_expired")
    add_link(store, "mk_004", state="error", error_code="institution_error")
    summary = totals(store).health_summary()

    assert summary.total == 4
    assert summary.counts[Health.NEEDS_RELINK] == 2
    assert summary.counts[Health.WAIT] == 1
    assert summary.errors == {"auth_expired": 2, "institution_error": 1}
    assert totals(store).counts_by_health() == summary.counts


def test_a_shared_summary_is_reused_within_max_age_and_recounted_at_zero(store: Store) -> None:
    links = totals(store)
    add_link(store, "mk_001")
    assert links.health_summary(max_age=3600).total == 1

    add_link(store, "mk_002", state="error", error_code="auth_expired")
    # Another session asking within max_age gets the same (now one link short) summary ...
    assert links.health_summary(max_age=3600).total == 1
    # ... while max_age=0 counts again, and the new count becomes the shared one.
    assert links.health_summary().total == 2
    assert links.health_summary(max_age=3600).errors == {"auth_expired": 1}


def test_a_stale_shared_summary_is_served_while_one_thread_recounts(store: Store) -> None:
    ticker = Ticker()
    links = totals(store, ticker)
    add_link(store, "mk_001")
    assert links.health_summary(max_age=3600).total == 1
    add_link(store, "mk_002")
    ticker.advance(0.6)

    # Past max_age (but inside the refresh window, ten max_ages) the old value comes back at
    # once and a background thread recounts; the next caller sees the new count.
    old = links.health_summary(max_age=0.5)
    assert old.total == 1
    for thread in threading.enumerate():
        if thread.name == "linkdesk-shared-refresh":
            thread.join(timeout=10)
    assert links.health_summary(max_age=3600).total == 2


def _finish_refreshes() -> None:
    wait_for_refreshes(timeout=10)


def test_a_new_process_shows_the_last_stored_summary_while_it_counts_again(store: Store) -> None:
    ticker = Ticker()
    add_link(store, "mk_001")
    assert totals(store, ticker).health_summary(max_age=30).total == 1  # counted, and stored
    add_link(store, "mk_002", state="error", error_code="auth_expired")

    # A process that has just started (its own HealthTotals) answers from the stored row at once:
    # still one link, with its verdicts and error codes as they were counted ...
    ticker.advance(0.05)
    restarted = totals(store, ticker)
    recalled = restarted.health_summary(max_age=0.01)
    assert (recalled.total, recalled.counts[Health.HEALTHY], recalled.errors) == (1, 1, {})
    # ... and, the row being older than the caller's max_age, counts again in the background.
    _finish_refreshes()
    assert restarted.health_summary(max_age=3600).errors == {"auth_expired": 1}
    # The new count is stored for the next process to start.
    assert totals(store, ticker).health_summary(max_age=3600).total == 2


def test_a_replica_takes_a_count_another_stored_within_max_age_instead_of_counting(
    store: Store,
) -> None:
    ticker = Ticker()
    add_link(store, "mk_001")
    first, second = totals(store, ticker), totals(store, ticker)
    assert second.health_summary(max_age=0.2).total == 1
    ticker.advance(0.3)  # the second replica's count is now older than its max_age
    add_link(store, "mk_002")
    assert first.health_summary().total == 2  # the first replica counts (and stores) now
    add_link(store, "mk_003")

    # The second takes the first's count, which is within its max_age, instead of counting the
    # table itself (it would find three links).
    assert second.health_summary(max_age=0.2).total == 1  # its own, served while it looks
    _finish_refreshes()
    assert second.health_summary(max_age=0.2).total == 2
    assert second.health_summary().total == 3  # max_age=0 always counts


def test_a_stored_summary_too_old_or_from_other_thresholds_is_not_shown(store: Store) -> None:
    add_link(store, "mk_001")
    counted = totals(store).health_summary()
    add_link(store, "mk_002")
    record = counted.to_record(HealthThresholds())

    def stored(value: dict[str, object]) -> int:
        with store.write() as session:
            put_named_state(session, SUMMARY_STATE_NAME, value, T0)
        return totals(store).health_summary(max_age=30).total

    assert stored(record | {"saved_at": time.time() - 60}) == 1  # a minute old: shown
    too_old = time.time() - SUMMARY_RECALL_MAX_AGE - 60
    assert stored(record | {"saved_at": too_old}) == 2  # counted now instead
    other = counted.to_record(HealthThresholds(stale_after=timedelta(hours=1)))
    assert stored(other | {"saved_at": time.time()}) == 2
    assert stored({"saved_at": time.time(), "groups": "not a list"}) == 2
    broken = record | {"saved_at": time.time(), "groups": [["healthy", "connected", "", -5]]}
    assert stored(broken) == 2
    _finish_refreshes()


def test_a_summary_round_trips_through_its_record() -> None:
    groups = {
        (Health.HEALTHY, "connected", ""): 7,
        (Health.NEEDS_RELINK, "error", "auth_expired"): 2,
        (Health.WAIT, "error", "institution_error"): 1,
    }
    banks = {"bank-a": BankLinks(8, 3), "bank-b": BankLinks(2, 0)}
    summary = HealthSummary.from_groups(groups, T0, banks)
    assert summary.counts[Health.NEEDS_RELINK] == 2
    assert summary.errors == {"auth_expired": 2, "institution_error": 1}
    limits = HealthThresholds()
    record = summary.to_record(limits)
    assert HealthSummary.from_record(record, limits) == summary
    # A record of the release before banks were counted is not shown: the totals are counted.
    assert (
        HealthSummary.from_record({k: v for k, v in record.items() if k != "banks"}, limits) is None
    )
    assert HealthSummary.from_record(record | {"banks": [["bank-a", -1, 0]]}, limits) is None


def _banks_counted(store: Store) -> dict[str, BankLinks]:
    with store.read() as session:
        rows = session.execute(
            sa.select(Link.institution_id, Link.state, sa.func.count()).group_by(
                Link.institution_id, Link.state
            )
        ).all()
    banks: dict[str, BankLinks] = {}
    for bank, state, n in rows:
        counted = banks.get(bank, BankLinks(0, 0))
        banks[bank] = BankLinks(
            counted.links + n, counted.in_error + (n if state == "error" else 0)
        )
    return banks


def test_links_per_bank_are_counted_and_moved_by_every_writer(store: Store) -> None:
    add_link(store, "mk_001")
    add_link(store, "mk_002", state="error", error_code="auth_expired")
    add_link(store, "mk_003", institution=("bank-b", "Beta Bank"))
    shared = totals(store)
    assert (
        shared.health_summary().banks
        == _banks_counted(store)
        == {
            "bank-a": BankLinks(2, 1),
            "bank-b": BankLinks(1, 0),
        }
    )

    def write(link_id: str, bank: str, state: str, error_code: str | None) -> None:
        with shared.writing(link_id) as session:
            link = api_link(
                link_id,
                institution_id=bank,
                institution_name=bank,
                state=state,
                error_code=error_code,
            )
            upsert_link(session, link, customer_id=None, now=T0, source="webhook")

    write("mk_003", "bank-b", "error", "institution_error")  # bank-b: one more in error
    write("mk_002", "bank-a", "connected", None)  # bank-a: one fewer
    write("mk_004", "bank-c", "error", "auth_expired")  # a new link of a new bank
    # Served from the shared totals (never counted again within an hour), and right.
    moved = shared.health_summary(max_age=3600).banks
    assert (
        moved
        == _banks_counted(store)
        == {
            "bank-a": BankLinks(2, 0),
            "bank-b": BankLinks(1, 1),
            "bank-c": BankLinks(1, 1),
        }
    )


def _link_counts_differ(store: Store) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(kept, counted afresh) where ``link_counts`` and the links table disagree."""
    place = (Link.state, sa.func.coalesce(Link.error_code, ""), Link.institution_id)
    kept_place = (LinkCount.state, LinkCount.error_code, LinkCount.institution_id)
    with store.read() as session:
        fresh = {
            (a, b, c): int(n)
            for a, b, c, n in session.execute(sa.select(*place, sa.func.count()).group_by(*place))
        }
        kept = {
            (a, b, c): int(n)
            for a, b, c, n in session.execute(
                sa.select(*kept_place, sa.func.sum(LinkCount.links)).group_by(*kept_place)
            )
        }
    return {
        key: (kept.get(key, 0), fresh.get(key, 0))
        for key in kept.keys() | fresh.keys()
        if kept.get(key, 0) != fresh.get(key, 0)
    }


def test_every_writer_of_links_keeps_their_counts_and_another_process_sees_them(
    store: Store,
) -> None:
    add_link(store, "mk_001")
    add_link(store, "mk_002", state="error", error_code="auth_expired")
    here, elsewhere = totals(store), totals(store)  # two processes on one store
    assert elsewhere.health_summary().counts[Health.NEEDS_RELINK] == 1
    with here.writing("mk_001") as session:  # a webhook's state, where MoneyKit is not asked
        applied = apply_event_state(
            session,
            "mk_001",
            state="error",
            error_code="auth_expired",
            as_of=T0 + timedelta(hours=1),
            now=T0 + timedelta(hours=1),
        )
        assert applied
    with here.writing("mk_002") as session:
        assert mark_link_deleted(session, "mk_002", now=T0, source="sync")
    add_link(store, "mk_003", institution=("bank-b", "Beta Bank"), minute=5)
    with pytest.raises(RuntimeError), store.write() as session:  # rolled back: not counted
        add_link_in(session, "mk_004")
        raise RuntimeError("the transaction fails after the write")
    assert _link_counts_differ(store) == {}
    # The other process counts what this one wrote, on its next count: nothing cached.
    moved = elsewhere.health_summary()
    assert moved.counts[Health.NEEDS_RELINK] == 1
    assert moved.groups[(Health.DELETED, "deleted", "")] == 1
    assert moved.banks["bank-b"] == BankLinks(1, 0)
    with store.read() as session:
        assert session.get(Link, "mk_004") is None


def test_a_move_made_here_after_a_write_elsewhere_is_set_right_by_a_count_soon(
    store: Store,
) -> None:
    # The e2e repair journey's case: the worker (another process) breaks one link, then a staff
    # member repairs another here. Moved from a count that never saw the first write, this
    # process's totals would say no login has expired while one has, until the next count.
    add_link(store, "mk_001", state="error", error_code="auth_expired")
    add_link(store, "mk_002")
    ticker = Ticker()
    here, elsewhere = totals(store, ticker), totals(store, ticker)
    assert here.health_summary().errors == {"auth_expired": 1}
    with elsewhere.writing("mk_002") as session:
        applied = apply_event_state(
            session,
            "mk_002",
            state="error",
            error_code="auth_expired",
            as_of=T0 + timedelta(hours=1),
            now=T0 + timedelta(hours=1),
        )
        assert applied
    with here.writing("mk_001") as session:
        repaired = api_link("mk_001", institution_name="Alpha Bank")
        upsert_link(session, repaired, customer_id=None, now=T0, source="relink")
    # Served at once as moved; a count from the rollup follows in the background.
    wait_for_refreshes(10)
    summary = here.health_summary(max_age=RECOUNT_MAX_AGE)  # the clock never moved: no age
    assert summary.errors == {"auth_expired": 1}
    assert summary.counts[Health.NEEDS_RELINK] == 1


def add_link_in(session: sa.orm.Session, link_id: str) -> None:
    link = api_link(link_id, institution_id="bank-a", institution_name="Alpha Bank")
    upsert_link(session, link, customer_id=None, now=T0, source="sync")


def test_a_failing_store_write_does_not_fail_the_count(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_link(store, "mk_001")
    links = totals(store)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise sa.exc.OperationalError("UPDATE", {}, Exception("database is locked"))

    monkeypatch.setattr("linkdesk.store.health_totals.put_named_state", refuse)
    assert links.health_summary(max_age=30).total == 1


def test_worker_status_is_shared_too(store: Store) -> None:
    progress = WorkerProgress(store, clock=lambda: T0 + timedelta(hours=1))
    first = progress.status(max_age=3600)
    assert progress.status(max_age=3600) is first
    assert progress.status() is not first


def test_institution_names_are_ordered_by_name(store: Store) -> None:
    add_link(store, "mk_001", institution=("bank-z", "Zeta Bank"))
    add_link(store, "mk_002", institution=("bank-a", "Alpha Bank"))
    add_link(store, "mk_003", institution=("bank-m", "Mu Credit Union"))
    names = queries(store).institution_names()
    assert list(names.items()) == [
        ("bank-a", "Alpha Bank"),
        ("bank-m", "Mu Credit Union"),
        ("bank-z", "Zeta Bank"),
    ]


def test_search_by_bank_name_or_link_id_prefix(store: Store) -> None:
    add_link(store, "mk_001", institution=("bank-a", "Alpha Bank"))
    add_link(store, "mk_002", institution=("bank-c", "Beta Credit Union"))
    add_link(store, "xx_credit", institution=("bank-a", "Alpha Bank"))
    links = queries(store)

    def found(text: str) -> set[str]:
        return {row.link_id for row in links.list_links(LinkFilters(search=text)).rows}

    assert found("credit") == {"mk_002"}  # bank name part, case-insensitive
    assert found("xx_cr") == {"xx_credit"}  # link id prefix, no bank matches
    assert found("mk_00") == {"mk_001", "mk_002"}
    assert found("nothing like it") == set()


@pytest.mark.parametrize("sort", [LinkSort.CUSTOMER, LinkSort.STATE])
def test_sorts_on_coalesced_columns_put_missing_values_first(store: Store, sort: LinkSort) -> None:
    add_link(store, "mk_001", customer="cust_0002", state="error", error_code="auth_expired")
    add_link(store, "mk_002", customer=None, state="error", error_code=None)
    add_link(store, "mk_003", customer="cust_0001", state="error", error_code="auth_expired")
    links = queries(store)
    first = links.list_links(sort=sort, limit=1)
    second = links.list_links(sort=sort, limit=1, after=first.next_cursor)
    third = links.list_links(sort=sort, limit=1, after=second.next_cursor)
    order = [page.rows[0].link_id for page in (first, second, third)]
    if sort is LinkSort.CUSTOMER:
        assert order == ["mk_002", "mk_003", "mk_001"]
    else:
        assert order[0] == "mk_002"  # error without a code ('') before auth_expired
        assert order[1:] == ["mk_001", "mk_003"]
    assert third.next_cursor is None


def test_stale_and_healthy_filters_follow_the_clock(store: Store) -> None:
    add_link(store, "mk_001")
    late = LinkQueries(store, clock=lambda: T0 + timedelta(days=30))
    early = queries(store)
    assert early.count_links(LinkFilters(health=Health.HEALTHY), cap=10) == 1
    assert early.count_links(LinkFilters(health=Health.STALE), cap=10) == 0
    assert late.count_links(LinkFilters(health=Health.STALE), cap=10) == 1
    assert late.count_links(LinkFilters(health=Health.HEALTHY), cap=10) == 0
