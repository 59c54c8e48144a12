"""The Links screen's totals: which views the shared summary answers, and the capped count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from linkdesk.health import Health
from linkdesk.read.links import LinkFilters, LinkQueries, Matching, matching_links
from linkdesk.store import Store
from linkdesk.store.health_totals import HealthSummary
from linkdesk.store.repository import upsert_link
from tests.unit.test_store import api_link

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def queries(store: Store) -> LinkQueries:
    specs = [
        ("mk_1", "connected", None),
        ("mk_2", "error", "auth_expired"),
        ("mk_3", "error", "auth_expired"),
        ("mk_4", "connected", None),
    ]
    for i, (link_id, state, error) in enumerate(specs):
        with store.write() as session:
            upsert_link(
                session,
                api_link(link_id, state=state, error_code=error),
                customer_id=f"cust_{i}",
                now=T0 + timedelta(minutes=i),
                source="sync",
            )
    return LinkQueries(store, clock=lambda: T0 + timedelta(hours=1))


def test_views_the_summary_knows_are_answered_from_it(queries: LinkQueries) -> None:
    # A summary that disagrees with the table shows which one answered.
    summary = HealthSummary.from_groups(
        {(Health.HEALTHY, "connected", ""): 100, (Health.NEEDS_RELINK, "error", "auth_expired"): 7},
        T0,
    )
    assert matching_links(queries, summary, LinkFilters(), cap=10) == Matching(107, exact=True)
    by_health = LinkFilters(health=Health.NEEDS_RELINK)
    assert matching_links(queries, summary, by_health, cap=10) == Matching(7, exact=True)
    by_error = LinkFilters(error_code="auth_expired")
    assert matching_links(queries, summary, by_error, cap=10) == Matching(7, exact=True)


def test_other_views_are_counted_up_to_the_cap(queries: LinkQueries) -> None:
    summary = HealthSummary.from_groups({(Health.HEALTHY, "connected", ""): 100}, T0)
    both = LinkFilters(health=Health.NEEDS_RELINK, error_code="auth_expired")
    assert matching_links(queries, summary, both, cap=10) == Matching(2, exact=True)
    assert matching_links(queries, summary, both, cap=1) == Matching(2, exact=False)
    by_customer = LinkFilters(customer="cust_")
    assert matching_links(queries, summary, by_customer, cap=10) == Matching(4, exact=True)
    # Without a summary yet (the first count under way), every view is counted.
    assert matching_links(queries, None, LinkFilters(), cap=10) == Matching(4, exact=True)
