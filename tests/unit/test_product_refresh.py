"""Product refreshes: stored from MoneyKit's product fields, shown as the reason of a verdict.

Against the in-process sandbox: a link made through Connect without prefetch, a refresh that is
still running, then one that failed, each read and stored the way the worker does it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from starlette.exceptions import StarletteDeprecationWarning

from linkdesk.bootstrap import Services, build_services
from linkdesk.health import (
    Health,
    HealthThresholds,
    assess,
    health_condition_at,
    playbook_for,
    product_refreshes,
    refresh_issue_condition,
    refresh_issue_counts,
)
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.moneykit.models import LinkProductStatus
from linkdesk.read.links import LinkFilters
from linkdesk.services.ingest import LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.settings import Settings
from linkdesk.store.models import Link
from sandbox.app import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SANDBOX = "http://testserver"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _status(**fields: Any) -> LinkProductStatus:
    return LinkProductStatus.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, "not_fetched"),
        ({"refreshed_at": NOW, "last_attempted_at": NOW}, "fetched"),
        ({"last_attempted_at": NOW}, "pending"),
        ({"refreshed_at": NOW, "last_attempted_at": NOW + timedelta(seconds=1)}, "pending"),
        ({"refreshed_at": NOW, "last_attempted_at": NOW, "error_code": "timeout"}, "failed"),
    ],
)
def test_refresh_state_from_moneykits_fields(fields: dict[str, Any], state: str) -> None:
    assert _status(**fields).refresh_state == state


def test_a_links_refresh_issue_is_its_worst_product() -> None:
    base = {"link_id": "mk_1", "institution_id": "b", "institution_name": "B", "state": "connected"}
    fine = {"refreshed_at": NOW, "last_attempted_at": NOW}
    running = {"refreshed_at": NOW, "last_attempted_at": NOW + timedelta(minutes=1)}
    failed = {**fine, "error_code": "rate_limit"}
    link = ApiLink.model_validate({**base, "products": {"accounts": fine, "identity": {}}})
    assert link.refresh_issue is None  # never fetched is not an issue
    link = ApiLink.model_validate({**base, "products": {"a": fine, "t": running}})
    assert link.refresh_issue == "pending"
    link = ApiLink.model_validate({**base, "products": {"a": failed, "t": running}})
    assert link.refresh_issue == "failed"


@pytest.mark.parametrize(
    ("state", "error", "refreshed_ago", "issue", "health", "reason"),
    [
        ("connected", None, timedelta(hours=1), "failed", Health.HEALTHY, "product_refresh_failed"),
        (
            "connected",
            None,
            timedelta(hours=1),
            "pending",
            Health.HEALTHY,
            "product_refresh_pending",
        ),
        ("connected", None, timedelta(hours=1), None, Health.HEALTHY, "connected"),
        # Stale wins: no fresh data at all is the bigger news.
        ("connected", None, timedelta(days=3), "failed", Health.STALE, "stale"),
        # A broken link's own error is what staff act on.
        (
            "error",
            "auth_expired",
            timedelta(hours=1),
            "failed",
            Health.NEEDS_RELINK,
            "auth_expired",
        ),
    ],
)
def test_a_refresh_issue_is_the_reason_of_the_existing_verdict(
    state: str,
    error: str | None,
    refreshed_ago: timedelta,
    issue: str | None,
    health: Health,
    reason: str,
) -> None:
    verdict = assess(
        state,
        error,
        now=NOW,
        created_at=NOW - timedelta(days=30),
        products_refreshed_at=NOW - refreshed_ago,
        refresh_issue=issue,
    )
    assert (verdict.health, verdict.reason) == (health, reason)
    if reason.startswith("product_refresh"):
        assert playbook_for(reason) is not None


def test_unknown_refresh_issue_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown refresh issue"):
        refresh_issue_condition("exploded")


@pytest.fixture
def sandbox_http() -> Iterator[TestClient]:
    # Refreshes never land by themselves here: the test lands them when it wants.
    app = create_app(
        client_id="c", client_secret="s", demo_links=3, public_url=SANDBOX, refresh_delay_s=600
    )
    with TestClient(app, base_url=SANDBOX) as client:
        yield client


@pytest.fixture
def services(database_url: str, sandbox_http: TestClient) -> Iterator[Services]:
    settings = Settings(
        moneykit_base_url=SANDBOX,
        moneykit_connect_host=SANDBOX,
        moneykit_client_id="c",
        moneykit_client_secret=SecretStr("s"),
        database_url=database_url,
    )
    built = build_services(settings, http_client=sandbox_http)
    yield built
    built.close()


def _connected_link(services: Services, sandbox_http: TestClient) -> str:
    session = services.client.create_link_session(
        customer_user_id="cust_refresh",
        redirect_uri="http://localhost:8501/oauth_return",
        products=["transactions", "identity"],
    )
    page = {"Authorization": f"Bearer {session.link_session_token}"}
    login = sandbox_http.post(
        "/connect-api/institution",
        json={"institution_id": "moneykit-instant-bank"},
        headers=page,
    )
    ids = [a["account_id"] for a in login.json()["accounts"]]
    done = sandbox_http.post("/connect-api/complete", json={"account_ids": ids}, headers=page)
    token = done.json()["completion"]["exchangeable_token"]
    return services.client.exchange_token(token).link.link_id


def _read_and_store(services: Services, link_id: str) -> None:
    ingestor = LinkIngestor(
        store=services.store,
        client=services.client,
        customer_tag_prefix="customer:",
        clock=lambda: datetime.now(UTC),
    )
    link = services.client.get_link(link_id)
    ingestor.ingest(
        link,
        source="test",
        fetcher=InstitutionFetcher(services.client),
        fetched_at=datetime.now(UTC),
    )


def test_refreshes_are_stored_counted_and_keep_the_link_healthy(
    services: Services, sandbox_http: TestClient
) -> None:
    link_id = _connected_link(services, sandbox_http)
    _read_and_store(services, link_id)
    with services.store.read() as session:
        states = {p.product: p.state for p in product_refreshes(session, link_id)}
        assert states == {
            "accounts": "fetched",
            "identity": "not_fetched",
            "transactions": "not_fetched",
        }
        assert session.get(Link, link_id).refresh_issue is None  # type: ignore[union-attr]

    sandbox_http.post(
        f"/_sandbox/links/{link_id}/refresh-failure",
        json={"products": ["transactions"], "error_code": "timeout"},
    ).raise_for_status()
    services.client.refresh_products(link_id, ["transactions"])
    _read_and_store(services, link_id)
    with services.store.read() as session:
        first = product_refreshes(session, link_id)[0]
        assert (first.product, first.state) == ("transactions", "pending")
        assert refresh_issue_counts(session) == {"failed": 0, "pending": 1}

    sandbox_http.post("/_sandbox/products/settle").raise_for_status()
    _read_and_store(services, link_id)
    now = datetime.now(UTC)
    with services.store.read() as session:
        first = product_refreshes(session, link_id)[0]
        assert (first.product, first.state, first.error_code) == (
            "transactions",
            "failed",
            "timeout",
        )
        assert first.error_message
        assert refresh_issue_counts(session) == {"failed": 1, "pending": 0}
        row = session.get(Link, link_id)
        assert row is not None and row.refresh_issue == "failed"
        failed_ids = session.scalars(
            sa.select(Link.link_id).where(refresh_issue_condition("failed"))
        ).all()
        assert failed_ids == [link_id]
        # The verdict group is unchanged, so every count and plan by verdict stays right.
        healthy = session.scalars(
            sa.select(Link.link_id).where(health_condition_at(Health.HEALTHY, now))
        ).all()
        assert link_id in healthy
        verdict = assess(
            row.state,
            row.error_code,
            now=now,
            created_at=row.created_at,
            discovered_at=row.discovered_at,
            products_refreshed_at=row.products_refreshed_at,
            thresholds=HealthThresholds(),
            refresh_issue=row.refresh_issue,
        )
        assert (verdict.health, verdict.reason) == (Health.HEALTHY, "product_refresh_failed")

    # The same reason wherever the link is read: the Links list, the link detail, the worker's
    # schedule (a healthy link keeps the routine interval).
    listed = services.links.list_links(LinkFilters(search=link_id), limit=5).rows
    assert [(r.link_id, r.health, r.health_reason) for r in listed] == [
        (link_id, Health.HEALTHY, "product_refresh_failed")
    ]
    detail = services.link_detail.get_link(link_id)
    assert detail is not None and detail.row.health_reason == "product_refresh_failed"
