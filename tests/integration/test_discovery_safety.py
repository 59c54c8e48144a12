"""A listing is no proof of deletion, against the real sandbox process.

Linkdesk talks to the sandbox through a forwarding transport that plays a faulty proxy or an
upstream bug: it passes every request on to the sandbox, and can blank the next ``GET /links``
answer (``{"links": []}``) once. After a blank listing no link may be deleted and every sync job
must survive; only a link MoneyKit really deleted (``DELETE /links/{id}``) is marked deleted,
and a link listed again afterwards is restored with its history and its job.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from linkdesk.bootstrap import Services, build_services
from linkdesk.services.discovery import DISCOVERY_SUSPECT
from linkdesk.settings import Settings
from linkdesk.store.models import Link, LinkStateChange, SyncJob
from linkdesk.store.repository import get_named_state
from linkdesk.store.sync_jobs import link_job_id
from tests.integration.conftest import CLIENT_ID, CLIENT_SECRET, Sandbox

LINKS = 12


class BlankingProxy(httpx.BaseTransport):
    """Forwards every request to the sandbox; ``blank_next_listing()`` empties one listing."""

    def __init__(self) -> None:
        self._upstream = httpx.HTTPTransport()
        self._blank = 0
        self._lock = threading.Lock()
        self.blanked = 0

    def blank_next_listing(self) -> None:
        with self._lock:
            self._blank += 1

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._upstream.handle_request(request)
        if request.method != "GET" or request.url.path != "/links":
            return response
        with self._lock:
            if not self._blank:
                return response
            self._blank -= 1
            self.blanked += 1
        response.read()
        response.close()
        # What the upstream bug answers: a well-formed, empty listing.
        return httpx.Response(
            200,
            content=json.dumps({"links": [], "next_cursor": None}).encode(),
            headers={"content-type": "application/json"},
            request=request,
        )

    def close(self) -> None:
        self._upstream.close()


class SteppedClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class World:
    services: Services
    proxy: BlankingProxy
    clock: SteppedClock

    def next_discovery(self) -> str:
        self.clock.advance(
            timedelta(minutes=self.services.settings.worker_discovery_interval_minutes + 1)
        )
        report = self.services.worker.run_once()
        assert report.discovery is not None
        return report.discovery

    def links(self) -> dict[str, str]:
        with self.services.store.read() as session:
            return {link.link_id: link.state for link in session.query(Link).all()}

    def jobs(self) -> set[str]:
        with self.services.store.read() as session:
            return set(session.scalars(sa.select(SyncJob.link_id).where(SyncJob.kind == "link")))

    def suspect(self) -> dict[str, object] | None:
        with self.services.store.read() as session:
            return get_named_state(session, DISCOVERY_SUSPECT)


@pytest.fixture
def world(sandbox: Sandbox, tmp_path: Path, database_url: str) -> Iterator[World]:
    """Linkdesk behind the proxy, on each store backend in turn."""
    sandbox.control("DELETE", "/faults")
    sandbox.control("POST", "/reset", json={"demo_links": LINKS})
    # The clock of this test moves by hours; the sandbox's own per-minute limits do not.
    sandbox.control("POST", "/rate-limits", json={"enabled": False})
    proxy = BlankingProxy()
    http = httpx.Client(transport=proxy, timeout=10)
    clock = SteppedClock()
    settings = Settings(
        moneykit_base_url=sandbox.url,
        moneykit_connect_host=sandbox.url,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=database_url,
        signing_key_file=str(tmp_path / "signing.key"),
        moneykit_max_retries=0,
        worker_batch_size=100,
    )
    services = build_services(settings, http_client=http, clock=clock, worker_id="safety")
    try:
        yield World(services, proxy, clock)
    finally:
        services.close()
        http.close()
        sandbox.control("POST", "/rate-limits", json={"enabled": True})


def test_one_blank_listing_loses_nothing_and_only_a_real_deletion_deletes(
    world: World, sandbox: Sandbox
) -> None:
    first = world.services.worker.run_once()
    assert first.discovery is not None and first.discovery.startswith("ok")
    known = world.links()
    assert len(known) == LINKS and "deleted" not in known.values()
    assert world.jobs() == set(known)

    world.proxy.blank_next_listing()
    blank = world.next_discovery()
    assert world.proxy.blanked == 1
    assert blank.startswith("suspect")
    assert world.links() == known and world.jobs() == set(known)
    flagged = world.suspect()
    assert flagged is not None and (flagged["listed"], flagged["missing"]) == (0, LINKS)

    for _ in range(3):  # complete listings again
        assert world.next_discovery().startswith("ok")
    assert "deleted" not in world.links().values()
    assert world.jobs() == set(known)
    assert world.suspect() == {}

    # MoneyKit really deletes one: its own read says so, and only then is it deleted.
    victim = sorted(known)[0]
    world.services.client.delete_link(victim)
    assert "1 deleted" in world.next_discovery()
    assert world.links()[victim] == "deleted"
    assert link_job_id(victim) not in {link_job_id(i) for i in world.jobs()}
    assert world.links() == {**known, victim: "deleted"}

    # Listed again: restored, its history kept and its job back.
    sandbox.control("POST", f"/links/{victim}/state", json={"state": "connected"})
    assert "1 restored" in world.next_discovery()
    assert world.links()[victim] == "connected"
    assert victim in world.jobs()
    with world.services.store.read() as session:
        history = (
            session.execute(
                sa.select(LinkStateChange.to_state)
                .where(LinkStateChange.link_id == victim)
                .order_by(LinkStateChange.id)
            )
            .scalars()
            .all()
        )
    assert history[-2:] == ["deleted", "connected"]


def test_a_full_sync_ignores_a_blank_listing(world: World) -> None:
    first = world.services.discovery.sync_all()
    assert first.listed == LINKS and not first.suspect
    known = world.links()
    world.proxy.blank_next_listing()
    world.clock.advance(timedelta(minutes=5))
    report = world.services.discovery.sync_all()
    assert report.suspect and report.deleted == 0
    assert world.links() == known
    assert world.suspect() not in (None, {})
    world.clock.advance(timedelta(minutes=5))
    again = world.services.discovery.sync_all()
    assert not again.suspect and again.deleted == 0
    assert world.links() == known
    assert world.suspect() == {}
