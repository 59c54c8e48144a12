"""Every way a page of links can be read gives the same pages.

``LinkQueries.list_links`` reads a page in the sort's order, by collecting the matches and
sorting them, or one (state, error code) group at a time (linkdesk.store.plans); which one
depends on counts that change all day. Whatever the plan, the pages must hold exactly the links
whose verdict (``assess``, in Python) matches the filters, each once, in the sort's order.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkdesk.health import Health, HealthThresholds, assess
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.models import Base
from linkdesk.store.plans import Plan, choose_plan, filter_share
from linkdesk.store.repository import upsert_link
from tests.conftest import empty_all_tables, listed_order_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = HealthThresholds(stuck_after=timedelta(minutes=30), stale_after=timedelta(hours=48))
NAMES = ["Alpha", "Beta", "Zeta Bank"]
STATES = [
    ("connected", None),
    ("error", "auth_expired"),
    ("error", "institution_error"),
    ("error", "user_error"),  # attention
    ("connecting", None),
    ("awaiting_token_exchange", None),
    ("deleted", None),
    ("deleted", "auth_expired"),  # deleted while its login had expired: the code stays
]

link_specs = st.lists(
    st.tuples(
        st.integers(0, len(NAMES) - 1),
        st.integers(0, len(STATES) - 1),
        st.one_of(st.none(), st.sampled_from(["c_1", "c_2", "c_10"])),
        st.integers(0, 4),  # minutes before NOW of the last change: ties on purpose
        st.sampled_from([10, 90, 24 * 60, 5 * 24 * 60]),  # minutes since creation
        st.one_of(st.none(), st.sampled_from([1, 47, 49, 200])),  # hours since data refresh
    ),
    max_size=30,
)


def _store(url: str) -> Store:
    if url == "sqlite://":
        engine = create_engine(url)
        Base.metadata.create_all(engine)
    else:
        empty_all_tables(url)
        engine = create_engine(url)
    return Store(engine)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=link_specs,
    sort=st.sampled_from(list(LinkSort)),
    page_size=st.integers(1, 6),
    health=st.one_of(st.none(), st.sampled_from(list(Health))),
    error_code=st.sampled_from([None, "auth_expired", "institution_error"]),
    state=st.sampled_from([None, "error", "connected", "connecting"]),
    include_deleted=st.booleans(),
    plan=st.sampled_from([None, Plan.WALK, Plan.COLLECT]),
)
def test_every_plan_gives_each_matching_link_once_in_order(
    module_database, specs, sort, page_size, health, error_code, state, include_deleted, plan
):
    store = _store(module_database)
    rows = _seed(store, specs)
    queries = LinkQueries(store, clock=lambda: NOW, thresholds=LIMITS)
    filters = LinkFilters(
        health=health, error_code=error_code, state=state, include_deleted=include_deleted
    )
    queries.totals.health_summary()  # the counts plans are chosen with
    assert _read_all(queries, filters, sort, page_size, plan) == _expected(rows, filters, sort)
    store.dispose()


def _seed(
    store: Store, specs: list[tuple[int, int, str | None, int, int, int | None]]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i, (inst, state_index, customer, minute, age_min, refreshed_h) in enumerate(specs):
        link_state, link_error = STATES[state_index]
        created = NOW - timedelta(minutes=age_min)
        refreshed = NOW - timedelta(hours=refreshed_h) if refreshed_h is not None else None
        updated = NOW - timedelta(minutes=minute)
        products = {"accounts": {"refreshed_at": refreshed.isoformat()}} if refreshed else {}
        link = ApiLink.model_validate(
            {
                "link_id": f"mk_{i:03d}",
                "institution_id": f"inst_{inst}",
                "institution_name": NAMES[inst],
                "state": link_state,
                "error_code": link_error,
                "link_tags": [],
                "products": products,
            }
        )
        with store.write() as session:
            upsert_link(
                session, link, customer_id=customer, now=updated, source="sync", created_at=created
            )
        verdict = assess(
            link_state,
            link_error,
            now=NOW,
            created_at=created,
            products_refreshed_at=refreshed,
            thresholds=LIMITS,
        )
        rows.append(
            {
                "id": link.link_id,
                "name": NAMES[inst],
                "state": link_state,
                "error": link_error,
                "customer": customer,
                "updated": updated,
                "health": verdict.health,
            }
        )
    return rows


def _read_all(
    queries: LinkQueries, filters: LinkFilters, sort: LinkSort, page_size: int, plan: Plan | None
) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    # None: the plan the counts choose. Otherwise that plan, forced, wherever one is chosen.
    forced = mock.patch("linkdesk.read.links.choose_plan", return_value=plan) if plan else None
    with forced or contextlib.nullcontext():
        for _ in range(10_000):
            page = queries.list_links(filters, limit=page_size, after=cursor, sort=sort)
            assert len(page.rows) <= page_size
            seen.extend(r.link_id for r in page.rows)
            if page.next_cursor is None:
                return seen
            assert len(page.rows) == page_size
            cursor = page.next_cursor
    pytest.fail("pagination does not terminate")


def _expected(rows: list[dict[str, Any]], filters: LinkFilters, sort: LinkSort) -> list[str]:
    wanted = [
        r
        for r in rows
        if (filters.health is None or r["health"] is filters.health)
        and (filters.error_code is None or r["error"] == filters.error_code)
        and (filters.state is None or r["state"] == filters.state)
        and (filters.include_deleted or r["state"] != "deleted")
    ]
    reverse = sort is LinkSort.UPDATED_DESC
    return [
        r["id"] for r in sorted(wanted, key=lambda r: listed_order_key(sort, r), reverse=reverse)
    ]


def test_every_filter_sort_and_plan_on_one_store_of_every_kind_of_link(module_database):
    # Every state and error, fresh and stale, young and old, spread over banks, customers and
    # update times with ties: each verdict has several links in several groups.
    specs = [
        (i % 3, state_index, [None, "c_1", "c_2"][i % 3], i % 4, age, refreshed)
        for i, (state_index, age, refreshed) in enumerate(
            (s, a, r)
            for s in range(len(STATES))
            for a in (10, 24 * 60, 5 * 24 * 60)
            for r in (None, 1, 49)
        )
    ]
    store = _store(module_database)
    rows = _seed(store, specs)
    queries = LinkQueries(store, clock=lambda: NOW, thresholds=LIMITS)
    queries.totals.health_summary()
    assert {r["health"] for r in rows} == set(Health)
    filter_sets = [LinkFilters(health=h, include_deleted=False) for h in Health] + [
        LinkFilters(health=Health.DELETED),
        LinkFilters(error_code="auth_expired"),
        LinkFilters(state="connecting", include_deleted=False),
        LinkFilters(health=Health.NEEDS_RELINK, error_code="auth_expired"),
        LinkFilters(),
    ]
    for sort in LinkSort:
        for filters in filter_sets:
            expected = _expected(rows, filters, sort)
            for plan in (None, Plan.WALK, Plan.COLLECT):
                seen = _read_all(queries, filters, sort, 4, plan)
                assert seen == expected, (sort, filters, plan)
    store.dispose()


def test_a_banks_share_of_the_links_comes_from_the_shared_totals() -> None:
    store = _store("sqlite://")
    with store.write() as session:
        for i, inst in enumerate([0, 0, 0, 1]):
            link = ApiLink.model_validate(
                {
                    "link_id": f"mk_{i:03d}",
                    "institution_id": f"inst_{inst}",
                    "institution_name": NAMES[inst],
                    "state": "connected",
                    "link_tags": [],
                }
            )
            upsert_link(session, link, customer_id=None, now=NOW, source="sync")
    queries = LinkQueries(store, clock=lambda: NOW, thresholds=LIMITS)
    # No totals yet: no share is assumed (the index plan), and nothing waits for a count.
    assert queries._share_of_links(["inst_0"]) == 0.0
    queries.totals.health_summary()
    assert queries._share_of_links(["inst_0"]) == 0.75
    assert queries._share_of_links(["inst_0", "inst_1", "inst_9"]) == 1.0
    store.dispose()


def test_a_common_filter_is_read_in_order_and_a_rare_one_collected():
    # A million links: 73 % healthy pages fill after ~70 rows read in order; 1.2 % stuck would
    # need ~4,000 in order against 12,000 collected; none pending: collect (finds none at once).
    common = choose_plan(share=0.73, links=1_000_000, page_size=50, health=None, update_order=False)
    assert common is Plan.WALK
    assert (
        choose_plan(share=0.0001, links=1_000_000, page_size=50, health=None, update_order=False)
        is Plan.COLLECT
    )
    assert (
        choose_plan(share=0.0, links=1_000_000, page_size=50, health=None, update_order=False)
        is Plan.COLLECT
    )
    # The same share at ten thousand links: collecting 470 beats reading ~1,100 in order.
    assert (
        choose_plan(share=0.047, links=10_000, page_size=50, health=None, update_order=False)
        is Plan.COLLECT
    )
    assert (
        choose_plan(share=0.047, links=1_000_000, page_size=50, health=None, update_order=False)
        is Plan.WALK
    )
    # No index finds "needs attention": reading in order beats reading every link.
    assert (
        choose_plan(
            share=0.015, links=100_000, page_size=50, health=Health.ATTENTION, update_order=False
        )
        is Plan.WALK
    )
    # Stale links are the ones unchanged for longest: never looked for in update order.
    assert (
        choose_plan(
            share=0.2, links=1_000_000, page_size=50, health=Health.STALE, update_order=True
        )
        is Plan.COLLECT
    )


def test_the_share_is_exact_however_the_filters_combine():
    groups = {
        (Health.HEALTHY, "connected", ""): 70,
        (Health.NEEDS_RELINK, "error", "auth_expired"): 20,
        (Health.WAIT, "error", "institution_error"): 5,
        (Health.DELETED, "deleted", ""): 5,
    }

    def share(**kw: Any) -> float:
        return filter_share(groups, **{"health": None, "state": None, "error_code": None} | kw)

    assert share(include_deleted=True) == 1.0
    assert share(include_deleted=False) == 0.95
    # Needs relink and auth_expired are the same links here: not 0.2 x 0.2.
    assert (
        share(health=Health.NEEDS_RELINK, error_code="auth_expired", include_deleted=False) == 0.2
    )
    assert share(state="error", include_deleted=True) == 0.25
    assert share(health=Health.STALE, include_deleted=True) == 0.0
