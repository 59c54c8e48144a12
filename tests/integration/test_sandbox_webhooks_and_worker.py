"""Linkdesk against the real sandbox: signed webhooks over HTTP, key rotation, and the worker
meeting injected 429s and 5xx."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services
from linkdesk.health import Health
from linkdesk.store.models import Link, SyncJob, WebhookDelivery
from linkdesk.store.shared import wait_for_refreshes
from linkdesk.store.sync_jobs import link_job_id
from tests.integration.conftest import AheadClock, Sandbox

ADMIN = Actor("integration-admin", Role.ADMIN)


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def accepted_for(services: Services, link_id: str) -> int:
    with services.store.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(
                    WebhookDelivery.link_id == link_id, WebhookDelivery.verdict == "accepted"
                )
            )
            or 0
        )


def a_connected_link(services: Services) -> str:
    with services.store.read() as session:
        link_id = session.scalar(
            sa.select(Link.link_id).where(Link.state == "connected").order_by(Link.link_id)
        )
    assert link_id is not None
    return link_id


def test_sandbox_webhooks_are_verified_applied_and_survive_key_rotation(
    sandbox: Sandbox, services: Services, receiver_url: str, ahead_clock: AheadClock
):
    first = services.worker.run_once()
    assert first.ok == 6 and first.errors == 0
    link_id = a_connected_link(services)
    assert sandbox.api("PATCH", f"/links/{link_id}", json={"webhook": receiver_url}).is_success

    assert sandbox.api("POST", f"/links/{link_id}/reset").is_success
    assert wait_for(lambda: accepted_for(services, link_id) >= 1), "no webhook accepted"
    report = services.webhook_apply.apply_pending()
    assert report.applied >= 1
    row = services.link_detail.get_link(link_id)
    assert row is not None
    assert (row.row.state, row.row.error_code, row.row.health) == (
        "error",
        "auth_expired",
        Health.NEEDS_RELINK,
    )
    assert any(c.source == "webhook" for c in row.state_changes)

    # MoneyKit rotates keys; the next delivery is signed with a kid we have not seen.
    sandbox.control("POST", "/keys/rotate")
    ahead_clock.advance(1.1)  # past jwks_min_refetch_seconds=1 of these settings
    sandbox.control("POST", f"/links/{link_id}/state", json={"state": "connected"})
    assert wait_for(lambda: accepted_for(services, link_id) >= 2), "rotated key not accepted"
    services.webhook_apply.apply_pending()
    row = services.link_detail.get_link(link_id)
    assert row is not None and row.row.state == "connected"
    with services.store.read() as session:
        refused = session.scalar(
            sa.select(sa.func.count()).where(WebhookDelivery.verdict == "rejected")
        )
    assert refused == 0


def test_worker_reschedules_a_rate_limited_link_and_backs_off_on_5xx(
    sandbox: Sandbox, services: Services
):
    services.worker.run_once()
    link_id = a_connected_link(services)
    sandbox.control(
        "POST",
        "/faults",
        json={
            "seed": 1,
            "rules": [
                {"pattern": f"GET /links/{link_id}$", "rate_limit_rate": 1.0, "retry_after_s": 30}
            ],
        },
    )
    services.worker.trigger_sync(ADMIN, link_id=link_id)
    before = datetime.now(UTC)
    report = services.worker.run_once()
    assert (report.claimed, report.rate_limited) == (1, 1)
    with services.store.read() as session:
        job = session.get(SyncJob, link_job_id(link_id))
        assert job is not None
        wait = job.due_at - before
    assert timedelta(seconds=25) <= wait <= timedelta(seconds=35)

    sandbox.control(
        "POST",
        "/faults",
        json={
            "seed": 1,
            "rules": [
                {"pattern": f"GET /links/{link_id}$", "error_rate": 1.0, "error_status": 503}
            ],
        },
    )
    services.worker.trigger_sync(ADMIN, link_id=link_id)
    report = services.worker.run_once()
    assert report.errors == 1
    status = services.worker.status()
    assert status.errors_last_hour >= 1 and "503" in (status.last_error or "")
    sandbox.control("DELETE", "/faults")


def test_a_state_the_worker_reads_reaches_the_overview_before_its_numbers_age_out(
    sandbox: Sandbox, services: Services
):
    # No webhook reaches us here: the worker's read is how the break is learned. The Overview's
    # numbers are kept for an hour below, so only the worker's own notice can move them.
    services.worker.run_once()
    before = services.overview.snapshot(max_age=3600)
    expired = before.summary.errors.get("auth_expired", 0)
    link_id = a_connected_link(services)
    assert sandbox.api("POST", f"/links/{link_id}/reset").is_success
    services.worker.trigger_sync(ADMIN, link_id=link_id)
    assert services.worker.run_once().claimed >= 1
    assert services.link_detail.get_link(link_id).row.error_code == "auth_expired"  # type: ignore[union-attr]
    wait_for_refreshes()  # the counts the read asked for start at once
    after = services.overview.snapshot(max_age=3600)
    assert after.summary.errors.get("auth_expired", 0) == expired + 1
    assert link_id in [row.link_id for row in after.broke_today.links]
    assert link_id not in [row.link_id for row in before.broke_today.links]
