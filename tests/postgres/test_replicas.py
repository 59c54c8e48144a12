"""Two dashboard processes, each with its own worker, on one PostgreSQL database.

Real processes all the way: the sandbox (``python -m sandbox``) plays MoneyKit, and two
``streamlit run server.py`` serve the dashboard, MoneyKit's webhook route and a worker thread
each, against one fresh database they migrate themselves at start-up. Checked:

* every link is synced, by both workers between them, and never by two at the same time;
* a webhook delivered to both dashboards (twice each, at the same moment) is queued once and
  applied once;
* two replicas starting a relink of the same link at the same moment: exactly one wins.

Skipped without LINKDESK_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services, build_services
from linkdesk.services.errors import LeaseHeld, LeaseNotHeld
from linkdesk.settings import Settings
from linkdesk.store.engine import Store, create_engine
from linkdesk.store.models import Link, SyncAttempt, WebhookDelivery, WebhookEvent
from linkdesk.store.sync_jobs import PRIORITY_TRIGGERED, JobQueue
from tests.conftest import PostgresDatabases
from tests.integration.conftest import CLIENT_ID, CLIENT_SECRET, Sandbox, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
LINKS = 30
# Every read of a link takes this long at the sandbox, so two workers syncing one link at once
# would overlap by at least this much; far above the few milliseconds of bookkeeping slack.
LINK_READ_LATENCY_MS = 150
BOOKKEEPING_SLACK = timedelta(milliseconds=60)
STARTUP_TIMEOUT_S = 60.0
WEBHOOK_LINKS = 4


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start(name: str, args: list[str], env: dict[str, str]) -> Process:
    # Closed by Process.stop() at the end of the module.
    log = tempfile.TemporaryFile()  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return Process(name, proc, log)


def _healthy(process: Process, url: str) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def start_listening(
    name: str, args: Callable[[int], list[str]], env: dict[str, str], health_path: str
) -> tuple[Process, str]:
    """Start a server on a free port and wait until ``health_path`` answers 200.

    A port found free can be taken by another program before the server binds it; the server
    then exits at once and is started again on another port.
    """
    output = ""
    for _attempt in range(3):
        port = free_port()
        base = f"http://localhost:{port}"
        process = start(name, args(port), env)
        if _healthy(process, f"{base}{health_path}"):
            return process, base
        output = process.output()
        process.stop()
    pytest.fail(f"{name} did not become healthy:\n{output}")


@dataclass
class Cluster:
    sandbox: Sandbox
    database_url: str
    dashboards: list[str]  # base URLs
    processes: list[Process] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()}" for p in self.processes)


@pytest.fixture(scope="module")
def cluster(postgres_databases: PostgresDatabases) -> Iterator[Cluster]:
    url = postgres_databases.create("replicas")
    processes: list[Process] = []
    try:
        base_env = {
            **os.environ,
            "MONEYKIT_CLIENT_ID": CLIENT_ID,
            "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
        }
        sandbox_process, sandbox_url = start_listening(
            "sandbox",
            lambda port: [
                *("-m", "sandbox", "--host", "localhost", "--port", str(port)),
                *("--demo-links", str(LINKS), "--log-level", "warning"),
            ],
            base_env,
            "/_sandbox/health",
        )
        processes.append(sandbox_process)
        sandbox = Sandbox(sandbox_url)
        sandbox.control(
            "POST",
            "/faults",
            json={
                "seed": 1,
                "rules": [{"pattern": r"GET /links/[^/]+$", "latency_ms": LINK_READ_LATENCY_MS}],
            },
        )

        envs = []
        for _index in range(2):
            env = {
                **base_env,
                "DATABASE_URL": url,
                "MONEYKIT_BASE_URL": sandbox.url,
                "MONEYKIT_CONNECT_HOST": sandbox.url,
                "MONEYKIT_MAX_RETRIES": "0",
                "LINKDESK_RUN_WORKER": "true",
                "LINKDESK_WEBHOOK_ISSUER": sandbox.url,
                "LINKDESK_WORKER_POLL_SECONDS": "0.3",
                # Small batches, so both workers keep coming back for more of the same queue.
                "LINKDESK_WORKER_BATCH_SIZE": "4",
                "LINKDESK_SIGNING_KEY": "replica-test-signing-key-" + "x" * 16,
                "LINKDESK_SIGNING_KEY_FILE": str(Path(tempfile.gettempdir()) / "unused.key"),
            }
            envs.append(env)
        # Both start together against an empty database and migrate it at the same time.
        started: list[tuple[Process, str]] = []
        threads = [
            threading.Thread(
                target=lambda i=i: started.append(
                    start_listening(
                        f"dashboard-{i}",
                        lambda port: [
                            *("-m", "streamlit", "run", "server.py", "--server.port", str(port)),
                            *("--server.headless", "true", "--server.address", "localhost"),
                        ],
                        envs[i],
                        "/healthz",
                    )
                )
            )
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        processes.extend(process for process, _ in started)
        assert len(started) == 2, "a dashboard did not start (see the output above)"
        dashboards = [base for _, base in started]
        yield Cluster(sandbox, url, dashboards, processes)
    finally:
        for process in reversed(processes):
            process.stop()
        postgres_databases.drop(url)


@pytest.fixture(scope="module")
def store(cluster: Cluster) -> Iterator[Store]:
    engine = create_engine(cluster.database_url)
    yield Store(engine)
    engine.dispose()


def _count(store: Store, stmt: Any) -> int:
    with store.read() as session:
        return int(session.scalar(stmt) or 0)


def _sandbox_link_ids(sandbox: Sandbox) -> list[str]:
    response = sandbox.api("GET", "/links", params={"limit": 500})
    response.raise_for_status()
    return sorted(item["link_id"] for item in response.json()["links"])


def _synced_links(store: Store) -> set[str]:
    with store.read() as session:
        rows = session.scalars(
            sa.select(SyncAttempt.link_id).where(
                SyncAttempt.kind == "link", SyncAttempt.outcome == "ok"
            )
        ).all()
    return {r for r in rows if r}


def _assert_no_link_synced_twice_at_once(store: Store, cluster: Cluster) -> set[str | None]:
    with store.read() as session:
        attempts = session.execute(
            sa.select(
                SyncAttempt.link_id, SyncAttempt.at, SyncAttempt.duration_ms, SyncAttempt.worker
            ).where(SyncAttempt.kind == "link")
        ).all()
    windows: dict[str | None, list[tuple[Any, Any, str | None]]] = defaultdict(list)
    for link_id, at, duration_ms, worker in attempts:
        # ``at`` is written when the attempt is recorded, just after its job was finished.
        windows[link_id].append((at - timedelta(milliseconds=duration_ms), at, worker))
    for link_id, spans in windows.items():
        spans.sort()
        for (_, end, worker), (start_next, _, worker_next) in itertools.pairwise(spans):
            assert start_next >= end - BOOKKEEPING_SLACK, (
                f"{link_id} synced by {worker} and {worker_next} at the same time "
                f"({start_next} < {end})\n{cluster.logs()}"
            )
    return {worker for spans in windows.values() for _, _, worker in spans}


def test_every_link_is_synced_by_the_workers_and_never_twice_at_once(
    cluster: Cluster, store: Store
):
    expected = set(_sandbox_link_ids(cluster.sandbox))
    assert len(expected) == LINKS
    wait_for(lambda: _synced_links(store) >= expected, 60, "the first sync of every link")

    # Two more full rounds, asked for while both workers are up, so they share the queue.
    queue = JobQueue(store, clock=lambda: datetime.now(UTC))
    link_attempts = (
        sa.select(sa.func.count()).select_from(SyncAttempt).where(SyncAttempt.kind == "link")
    )
    for _ in range(2):
        before = _count(store, link_attempts)
        queue.request_all(priority=PRIORITY_TRIGGERED)
        wait_for(
            lambda before=before: _count(store, link_attempts) >= before + LINKS,  # type: ignore[misc]
            60,
            "a triggered round over every link",
        )

    workers = _assert_no_link_synced_twice_at_once(store, cluster)
    assert len(workers) == 2, f"expected both workers to take part, saw {workers}"
    assert _count(store, sa.select(sa.func.count()).select_from(Link)) == LINKS


class FanOut:
    """Stands in for MoneyKit's webhook target: every delivery it gets is posted, unchanged and
    at the same moment, twice to each dashboard (a retry racing the first attempt)."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.statuses: dict[str, list[int]] = {}
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.body()
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower().startswith("moneykit-") or name.lower() == "content-type"
        }
        token = headers.get("moneykit-delivery-token", "?")
        async with httpx.AsyncClient(timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(f"{base}/webhooks/moneykit", content=body, headers=headers)
                    for base in self.targets * 2
                )
            )
        self.statuses[token] = sorted(r.status_code for r in responses)
        return JSONResponse({"ok": True})

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}/hook"

    def __enter__(self) -> FanOut:
        app = Starlette(routes=[Route("/hook", self.handle, methods=["POST"])])
        config = uvicorn.Config(
            app, host="localhost", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: bool(self._server and self._server.started), 10, "the fan-out server")
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def test_a_webhook_sent_to_both_dashboards_is_applied_once(cluster: Cluster, store: Store):
    sandbox = cluster.sandbox
    wait_for(
        lambda: _count(store, sa.select(sa.func.count()).select_from(Link)) == LINKS,
        60,
        "the links to be stored",
    )
    with store.read() as session:
        link_ids = session.scalars(
            sa.select(Link.link_id).where(Link.state == "connected").order_by(Link.link_id)
        ).all()[:WEBHOOK_LINKS]
    assert len(link_ids) == WEBHOOK_LINKS

    with FanOut(cluster.dashboards) as fan_out:
        for link_id in link_ids:
            patched = sandbox.api("PATCH", f"/links/{link_id}", json={"webhook": fan_out.url})
            assert patched.is_success, patched.text
            assert sandbox.api("POST", f"/links/{link_id}/reset").is_success

        def queued() -> int:
            return _count(
                store,
                sa.select(sa.func.count())
                .select_from(WebhookEvent)
                .where(WebhookEvent.link_id.in_(link_ids)),
            )

        wait_for(lambda: queued() >= WEBHOOK_LINKS, 60, "the webhooks to arrive")
        wait_for(
            lambda: (
                _count(
                    store,
                    sa.select(sa.func.count())
                    .select_from(WebhookEvent)
                    .where(WebhookEvent.link_id.in_(link_ids), WebhookEvent.status == "pending"),
                )
                == 0
            ),
            60,
            "the workers to apply the webhooks",
        )
        statuses = dict(fan_out.statuses)

    # Each delivery: four simultaneous posts, one accepted (202), three duplicates (200).
    assert statuses and all(codes == [200, 200, 200, 202] for codes in statuses.values()), statuses
    with store.read() as session:
        events = session.execute(
            sa.select(
                WebhookEvent.idempotency_key,
                WebhookEvent.status,
                WebhookEvent.applied_at,
                WebhookEvent.link_id,
            ).where(WebhookEvent.link_id.in_(link_ids))
        ).all()
        deliveries = session.execute(
            sa.select(WebhookDelivery.idempotency_key, WebhookDelivery.verdict).where(
                WebhookDelivery.link_id.in_(link_ids)
            )
        ).all()
        states = dict(
            session.execute(
                sa.select(Link.link_id, Link.error_code).where(Link.link_id.in_(link_ids))
            ).all()
        )
    keys = [key for key, *_ in events]
    assert len(keys) == len(set(keys)) == len(statuses)  # one queued event per delivery
    assert all(
        status == "applied" and applied_at is not None for _, status, applied_at, _ in events
    )
    verdicts: dict[str | None, list[str]] = defaultdict(list)
    for key, verdict in deliveries:
        verdicts[key].append(verdict)
    assert all(
        sorted(v) == ["accepted", "duplicate", "duplicate", "duplicate"] for v in verdicts.values()
    ), verdicts
    assert set(states.values()) == {"auth_expired"}


def _replica_services(cluster: Cluster, tmp_path: Path, name: str) -> Services:
    settings = Settings(
        moneykit_base_url=cluster.sandbox.url,
        moneykit_connect_host=cluster.sandbox.url,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=cluster.database_url,
        signing_key_file=str(tmp_path / f"{name}.key"),
        moneykit_max_retries=0,
    )
    # Its own engine and pool, as a separate dashboard process would have.
    return build_services(settings, worker_id=name)


def test_two_replicas_starting_one_relink_at_once_exactly_one_wins(
    cluster: Cluster, store: Store, tmp_path: Path
):
    with store.read() as session:
        link_ids = session.scalars(
            sa.select(Link.link_id).where(Link.state == "connected").order_by(Link.link_id.desc())
        ).all()[:3]
    for link_id in link_ids:
        assert cluster.sandbox.api("POST", f"/links/{link_id}/reset").is_success

    replicas = [_replica_services(cluster, tmp_path, f"replica-{i}") for i in range(2)]
    try:
        for link_id in link_ids:
            barrier = threading.Barrier(2)
            results: list[str] = []

            def relink(
                services: Services,
                agent: str,
                link_id: str = link_id,
                barrier: threading.Barrier = barrier,
                results: list[str] = results,
            ) -> None:
                barrier.wait()
                try:
                    services.sessions.start_relink(
                        link_id=link_id, actor=Actor(agent, Role.SUPPORT)
                    )
                    results.append("started")
                except LeaseHeld:
                    results.append("lease_held")

            threads = [
                threading.Thread(target=relink, args=(services, f"agent-{i}"))
                for i, services in enumerate(replicas)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert sorted(results) == ["lease_held", "started"], (link_id, results)
            lease = replicas[0].activity.relink_in_progress(link_id)
            assert lease is not None and lease.holder in {"agent-0", "agent-1"}
    finally:
        for services in replicas:
            services.close()


def test_two_replicas_taking_over_one_relink_at_once_exactly_one_wins(
    cluster: Cluster, store: Store, tmp_path: Path
):
    """Two admins on two replicas take over the same agent's reservation at the same moment:
    the database moves the lease once, one take over is refused, one is audited."""
    with store.read() as session:
        link_ids = session.scalars(
            sa.select(Link.link_id).where(Link.state == "connected").order_by(Link.link_id)
        ).all()[:3]
    for link_id in link_ids:
        assert cluster.sandbox.api("POST", f"/links/{link_id}/reset").is_success

    replicas = [_replica_services(cluster, tmp_path, f"admin-replica-{i}") for i in range(2)]
    try:
        for link_id in link_ids:
            agent = Actor("agent-on-leave", Role.SUPPORT)
            held = replicas[0].sessions.start_relink(link_id=link_id, actor=agent)
            barrier = threading.Barrier(2)
            results: list[str] = []

            def take_over(
                services: Services,
                admin: str,
                link_id: str = link_id,
                seen: str = held.session_id,
                barrier: threading.Barrier = barrier,
                results: list[str] = results,
            ) -> None:
                barrier.wait()
                try:
                    services.sessions.take_over_relink(
                        link_id, actor=Actor(admin, Role.ADMIN), reason="race", seen_session=seen
                    )
                    results.append(admin)
                except LeaseNotHeld:
                    results.append("refused")

            threads = [
                threading.Thread(target=take_over, args=(services, f"admin-{i}"))
                for i, services in enumerate(replicas)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert sorted(results)[1] == "refused" and results.count("refused") == 1, results
            (winner,) = [name for name in results if name != "refused"]
            lease = replicas[1].activity.relink_in_progress(link_id)
            assert lease is not None and lease.holder == winner
            taken = replicas[0].audit.entries(action="connect.relink_take_over", link_id=link_id)
            assert [entry.actor for entry in taken] == [winner]
    finally:
        for services in replicas:
            services.close()
