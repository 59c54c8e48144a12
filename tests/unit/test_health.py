"""Health verdicts: the table, the time thresholds, the SQL twin, and a playbook for each reason."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from linkdesk.health import (
    PLAYBOOKS,
    Health,
    HealthThresholds,
    assess,
    playbook_for,
)
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store
from linkdesk.store.health_totals import HealthTotals
from linkdesk.store.models import Institution
from linkdesk.store.models import Link as LinkRow
from linkdesk.store.repository import link_moved, upsert_link

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LIMITS = HealthThresholds(stuck_after=timedelta(minutes=30), stale_after=timedelta(hours=48))
PUBLIC_LINK_ERRORS = [
    "system_error",
    "provider_error",
    "institution_error",
    "user_error",
    "auth_expired",
    "no_accounts",
    "user_setup_required",
    "invalid_credentials",
    "user_oauth_denied",
    "user_input_incorrect",
    "incomplete",
]

# (state, error, age of creation, age of last refresh, expected health, expected reason)
CASES = [
    ("connected", None, timedelta(days=9), timedelta(hours=1), Health.HEALTHY, "connected"),
    ("connected", None, timedelta(days=9), timedelta(hours=47), Health.HEALTHY, "connected"),
    ("connected", None, timedelta(days=9), timedelta(hours=49), Health.STALE, "stale"),
    ("connected", None, timedelta(hours=49), None, Health.STALE, "stale"),
    ("connected", None, timedelta(hours=2), None, Health.HEALTHY, "connected"),
    (
        "awaiting_token_exchange",
        None,
        timedelta(minutes=31),
        None,
        Health.STUCK,
        "stuck_awaiting_token_exchange",
    ),
    (
        "awaiting_token_exchange",
        None,
        timedelta(minutes=29),
        None,
        Health.PENDING,
        "awaiting_token_exchange",
    ),
    ("connecting", None, timedelta(hours=3), None, Health.STUCK, "stuck_connecting"),
    ("connecting", None, timedelta(minutes=5), None, Health.PENDING, "connecting"),
    ("error", "auth_expired", timedelta(days=1), None, Health.NEEDS_RELINK, "auth_expired"),
    ("error", "invalid_credentials", timedelta(days=1), None, Health.NEEDS_RELINK, None),
    ("error", "user_input_incorrect", timedelta(days=1), None, Health.NEEDS_RELINK, None),
    ("error", "user_oauth_denied", timedelta(days=1), None, Health.NEEDS_RELINK, None),
    ("error", "user_setup_required", timedelta(days=1), None, Health.NEEDS_RELINK, None),
    ("error", "incomplete", timedelta(days=1), None, Health.NEEDS_RELINK, None),
    ("error", "institution_error", timedelta(days=1), None, Health.WAIT, None),
    ("error", "provider_error", timedelta(days=1), None, Health.WAIT, None),
    ("error", "system_error", timedelta(days=1), None, Health.WAIT, None),
    ("error", "user_error", timedelta(days=1), None, Health.ATTENTION, None),
    ("error", "no_accounts", timedelta(days=1), None, Health.ATTENTION, None),
    ("error", None, timedelta(days=1), None, Health.ATTENTION, "error_without_code"),
    ("deleted", None, timedelta(days=100), None, Health.DELETED, "deleted"),
    ("brand_new_state", None, timedelta(days=1), None, Health.ATTENTION, "unknown_state"),
]


@pytest.mark.parametrize(("state", "error", "created", "refreshed", "health", "reason"), CASES)
def test_verdict_table(state, error, created, refreshed, health, reason):
    verdict = assess(
        state,
        error,
        now=NOW,
        created_at=NOW - created,
        discovered_at=NOW - created,
        products_refreshed_at=NOW - refreshed if refreshed else None,
        thresholds=LIMITS,
    )
    assert verdict.health is health
    assert verdict.reason == (reason or error)


def test_thresholds_come_from_settings(core_settings):
    settings = core_settings.model_copy(
        update={"health_stuck_after_minutes": 5, "health_stale_after_hours": 2}
    )
    limits = HealthThresholds.from_settings(settings)
    verdict = assess(
        "connecting", None, now=NOW, created_at=NOW - timedelta(minutes=6), thresholds=limits
    )
    assert verdict.health is Health.STUCK
    verdict = assess(
        "connected",
        None,
        now=NOW,
        products_refreshed_at=NOW - timedelta(hours=3),
        thresholds=limits,
    )
    assert verdict.health is Health.STALE


def test_every_error_and_time_verdict_has_a_playbook():
    for code in [*PUBLIC_LINK_ERRORS, "stuck_awaiting_token_exchange", "stuck_connecting", "stale"]:
        playbook = playbook_for(code)
        assert playbook is not None, code
        for text in (playbook.title, playbook.meaning, playbook.tell_the_customer, playbook.action):
            assert len(text) > 10
    assert playbook_for("connected") is None
    assert set(PLAYBOOKS) >= set(PUBLIC_LINK_ERRORS)


def api_link(link_id: str, state: str, error: str | None, refreshed: datetime | None) -> ApiLink:
    products = {"accounts": {"refreshed_at": refreshed.isoformat()}} if refreshed else {}
    return ApiLink.model_validate(
        {
            "link_id": link_id,
            "institution_id": "bank-a",
            "institution_name": "Bank A",
            "state": state,
            "error_code": error,
            "link_tags": [],
            "products": products,
        }
    )


def test_sql_filters_and_counts_agree_with_the_verdicts(memory_store: Store):
    for i, (state, error, created, refreshed, _health, _reason) in enumerate(CASES):
        with memory_store.write() as session:
            upsert_link(
                session,
                api_link(f"l{i:02d}", state, error, NOW - refreshed if refreshed else None),
                customer_id=None,
                now=NOW - created,
                source="sync",
                created_at=NOW - created,
            )
    queries = LinkQueries(memory_store, clock=lambda: NOW, thresholds=LIMITS)
    expected: dict[Health, set[str]] = {h: set() for h in Health}
    for i, case in enumerate(CASES):
        expected[case[4]].add(f"l{i:02d}")
    counts = queries.totals.counts_by_health()
    for health in Health:
        rows = queries.list_links(LinkFilters(health=health), limit=100).rows
        assert {r.link_id for r in rows} == expected[health], health
        assert {r.health for r in rows} <= {health}
        assert counts[health] == len(expected[health])
    by_id = {r.link_id: r for r in queries.list_links(limit=100).rows}
    assert by_id["l02"].health_reason == "stale"
    assert by_id["l05"].health_reason == "stuck_awaiting_token_exchange"


def test_stale_and_stuck_pages_keep_keyset_pagination(memory_store: Store):
    for i in range(7):
        with memory_store.write() as session:
            upsert_link(
                session,
                api_link(f"s{i}", "connected", None, NOW - timedelta(days=3)),
                customer_id=None,
                now=NOW - timedelta(days=4, minutes=i),
                source="sync",
            )
    queries = LinkQueries(memory_store, clock=lambda: NOW, thresholds=LIMITS)
    seen: list[str] = []
    after = None
    while True:
        page = queries.list_links(LinkFilters(health=Health.STALE), limit=3, after=after)
        seen.extend(r.link_id for r in page.rows)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert sorted(seen) == [f"s{i}" for i in range(7)] and len(seen) == 7


@pytest.mark.parametrize("connected_with_an_error", [False, True])
def test_the_shared_totals_equal_a_verdict_per_link(
    memory_store: Store, connected_with_an_error: bool
):
    # The totals count by state, error code and bank, and find the verdicts the clock decides
    # by themselves: every group and bank must equal assessing each link one by one.
    rng = random.Random(7)
    states = [
        ("connected", None),
        ("connected", None),
        ("connecting", None),
        ("awaiting_token_exchange", None),
        ("error", "auth_expired"),
        ("error", "institution_error"),
        ("error", "user_error"),
        ("error", None),
        ("deleted", None),
        ("paused", None),
    ]
    if connected_with_an_error:
        states.append(("connected", "auth_expired"))
    expected_groups: Counter[tuple[Health, str, str]] = Counter()
    expected_banks: Counter[tuple[str, bool]] = Counter()
    with memory_store.write() as session:
        for bank in ("bank-a", "bank-b"):
            session.add(Institution(institution_id=bank, name=bank.title()))
        session.flush()
        for i in range(300):
            state, error = rng.choice(states)
            bank = rng.choice(["bank-a", "bank-b"])
            created = NOW - timedelta(minutes=rng.choice([5, 50, 60 * 24 * 5]))
            refreshed = rng.choice([None, NOW - timedelta(hours=1), NOW - timedelta(days=3)])
            session.add(
                LinkRow(
                    link_id=f"t{i:03d}",
                    institution_id=bank,
                    state=state,
                    error_code=error,
                    created_at=rng.choice([created, None]),
                    discovered_at=created,
                    products_refreshed_at=refreshed,
                )
            )
            link_moved(session, None, (state, error, bank))
            verdict = assess(
                state,
                error,
                now=NOW,
                created_at=None,
                discovered_at=created,
                products_refreshed_at=refreshed,
                thresholds=LIMITS,
            )
            expected_groups[(verdict.health, state, error or "")] += 1
            expected_banks[(bank, state == "error")] += 1
    # created_at None and set give the same verdict here (both measured from ``created``).
    summary = HealthTotals(memory_store, clock=lambda: NOW, thresholds=LIMITS).health_summary()
    assert summary.groups == dict(expected_groups)
    assert {bank: (n.links, n.in_error) for bank, n in summary.banks.items()} == {
        bank: (
            expected_banks[(bank, False)] + expected_banks[(bank, True)],
            expected_banks[(bank, True)],
        )
        for bank in ("bank-a", "bank-b")
    }
    assert summary.total == 300
