"""Verified webhook deliveries per second into the store, in one process, on SQLite.

Each pass builds a fresh store (a temporary SQLite file brought to the latest migration) and an
in-process sandbox (Starlette TestClient, MoneyKit's rate limits off) that serves the JWKS and the
link re-reads. It then signs N deliveries the way the sandbox signs real ones (ES256 with the
sandbox's own key: ``kid``, ``iss``, ``iat``, ``request_body_sha256``), about 10 % of them
re-sent duplicates, and measures:

* ``receive``: ``WebhookReceiver.receive(raw_body, headers)`` (pass ``direct``), or the same through
  the real Starlette route, called as an ASGI server calls it (pass ``asgi``: adds routing, the
  streamed body read with its size limit, the thread hop the route makes and the JSON answer;
  HTTP parsing and the network belong to the server in front and are not included);
* ``apply``: ``apply_pending()`` until the queue is empty (re-reads from the in-process sandbox).

It prints rates, per-delivery receive latency percentiles and the bookkeeping checks.

    .venv/bin/python bench/webhook_throughput.py [--count 3000] [--links 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a plain script (the Makefile's bench target): the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message

from bench._common import CLIENT_ID, CLIENT_SECRET, latency_line, machine_line
from linkdesk.bootstrap import Services, build_services
from linkdesk.settings import Settings
from linkdesk.store.engine import create_engine, migrate
from linkdesk.store.models import WebhookDelivery, WebhookEvent
from linkdesk.webhooks.asgi import WEBHOOK_PATH, webhook_route
from sandbox.app import create_app
from sandbox.state import SandboxState
from sandbox.webhooks import sign

SANDBOX_ORIGIN = "http://testserver"  # TestClient's origin; also the signatures' issuer
# The mix MoneyKit sends: mostly state changes, some refresh notices.
EVENTS = ("link.state_changed", "link.product_refresh", "transactions.updates_available")
EVENT_WEIGHTS = (0.7, 0.2, 0.1)


@dataclass(frozen=True, slots=True)
class Delivery:
    body: bytes
    headers: dict[str, str]
    idempotency_key: str
    duplicate: bool


def _event_payload(
    state: SandboxState, link_id: str, event: str, at: datetime
) -> dict[str, object]:
    link = state.links[link_id]
    payload: dict[str, object] = {
        "webhook_event": event,
        "webhook_major_version": 1,
        "webhook_minor_version": 0,
        "webhook_idempotency_key": f"whk_{secrets.token_hex(12)}",
        "webhook_timestamp": at.isoformat().replace("+00:00", "Z"),
        "link_id": link_id,
        "link_tags": list(link.link_tags or []),
    }
    if event == "link.state_changed":
        payload["state"] = link.state
        if link.error_code:
            payload["error"] = link.error_code
    elif event == "link.product_refresh":
        payload.update(
            product="accounts", state="completed", state_changed_at=payload["webhook_timestamp"]
        )
    else:
        payload["has_history"] = True
    return payload


def make_deliveries(
    state: SandboxState, count: int, duplicate_rate: float, rng: random.Random
) -> list[Delivery]:
    """``count`` signed deliveries; about ``duplicate_rate`` of them re-send an earlier event.

    Half of the re-sends are retries (same delivery token, next attempt), half are a second
    delivery of the same event (new token, same idempotency key): the receiver must catch both.
    """
    link_ids = sorted(state.links)
    key = state.signing_keys[-1]
    issuer = SANDBOX_ORIGIN
    duplicates = round(count * duplicate_rate)
    originals = count - duplicates
    # Events happen after the store was primed, in order, one millisecond apart (a burst).
    start = datetime.now(UTC)
    sent: list[tuple[bytes, str, str]] = []  # body, delivery token, idempotency key
    deliveries: list[Delivery] = []
    for index in range(originals):
        event = rng.choices(EVENTS, EVENT_WEIGHTS)[0]
        payload = _event_payload(
            state, rng.choice(link_ids), event, start + timedelta(milliseconds=index)
        )
        body = json.dumps(payload, separators=(",", ":")).encode()
        token = f"whd_{secrets.token_hex(12)}"
        sent.append((body, token, str(payload["webhook_idempotency_key"])))
    order: list[tuple[int, bool]] = [(i, False) for i in range(originals)]
    for _ in range(duplicates):
        original = rng.randrange(originals)
        # A re-send arrives after its original: insert it somewhere later in the stream.
        position = order.index((original, False)) + 1
        order.insert(rng.randint(position, len(order)), (original, True))
    retry_coin = random.Random(rng.random())
    for index, duplicate in order:
        body, token, idempotency_key = sent[index]
        attempt = "1"
        if duplicate and retry_coin.random() < 0.5:
            attempt = "2"
        elif duplicate:
            token = f"whd_{secrets.token_hex(12)}"
        now = int(time.time())
        deliveries.append(
            Delivery(
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "MoneyKit-Signature": sign(key, body, issuer=issuer, issued_at=now),
                    "MoneyKit-Delivery-Token": token,
                    "MoneyKit-Delivery-Attempt": attempt,
                },
                idempotency_key=idempotency_key,
                duplicate=duplicate,
            )
        )
    return deliveries


def _test_client(app: Starlette) -> httpx.Client:
    # The pinned Starlette warns on import that its TestClient will move to another HTTP
    # library; that is about Starlette's future, not this measurement, so keep it out of the
    # printed results.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
        from starlette.testclient import TestClient

    return TestClient(app, base_url=SANDBOX_ORIGIN)


def build(tmp: Path, links: int, seed: int) -> tuple[Services, SandboxState, httpx.Client]:
    url = f"sqlite:///{tmp / 'bench.db'}"
    engine = create_engine(url)
    migrate(engine)
    sandbox_app = create_app(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        seed=seed,
        demo_links=links,
        public_url=SANDBOX_ORIGIN,
        rate_limits=False,
        refresh_delay_s=0,
    )
    http = _test_client(sandbox_app)
    settings = Settings(
        moneykit_base_url=SANDBOX_ORIGIN,
        moneykit_connect_host=SANDBOX_ORIGIN,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=url,
        signing_key_file=str(tmp / "signing.key"),
        webhook_issuer=SANDBOX_ORIGIN,
        moneykit_max_retries=0,
        # The measurement is of our code, not of MoneyKit's limits: lift the request budget so
        # every event is re-read instead of being handed to the worker.
        worker_link_reads_per_minute=100_000,
        worker_link_reads_per_link_per_minute=1000,
        sync_links_per_minute=100_000,
    )
    services = build_services(
        settings, engine=engine, http_client=http, migrate_schema=False, worker_id="bench"
    )
    state: SandboxState = sandbox_app.state.sandbox
    return services, state, http


def receive_direct(
    services: Services, deliveries: list[Delivery], deadline: float
) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    verdicts: Counter[str] = Counter()
    receiver = services.webhooks
    for delivery in deliveries:
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        result = receiver.receive(delivery.body, delivery.headers)
        latencies.append(time.perf_counter() - started)
        verdicts[f"{result.verdict}/{result.reason.value}"] += 1
    return latencies, verdicts


async def _post(app: ASGIApp, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """One POST handed to ``app`` the way an ASGI server (uvicorn) hands over a parsed request.

    No HTTP client in between: what is timed is Linkdesk's side of the request (routing, body
    read with its size limit, the thread hop, the receiver, the JSON answer), not a client's.
    """
    raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw_headers += [
        (b"host", b"linkdesk.local"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": WEBHOOK_PATH,
        "raw_path": WEBHOOK_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw_headers,
        "client": ("127.0.0.1", 40000),
        "server": ("linkdesk.local", 443),
    }
    request_sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def receive_asgi(
    services: Services, deliveries: list[Delivery], deadline: float, concurrency: int
) -> tuple[list[float], Counter[str]]:
    """The deliveries through the route, ``concurrency`` requests in flight at a time.

    MoneyKit sends deliveries in parallel; with more than one in flight the event loop's part of
    one request overlaps the receiver's part of another, as under a real server.
    """
    app = Starlette(routes=[webhook_route(services.webhooks)])

    async def run() -> tuple[list[float], Counter[str]]:
        latencies: list[float] = []
        verdicts: Counter[str] = Counter()
        pending = iter(deliveries)

        async def sender() -> None:
            for delivery in pending:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                status, answer = await _post(app, delivery.body, delivery.headers)
                latencies.append(time.perf_counter() - started)
                reason = json.loads(answer).get("reason", "?")
                verdicts[f"{status}/{reason}"] += 1

        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return latencies, verdicts

    return asyncio.run(run())


def apply_all(services: Services, deadline: float) -> tuple[Counter[str], float, int]:
    totals: Counter[str] = Counter()
    passes = 0
    started = time.perf_counter()
    while time.monotonic() < deadline:
        report = services.webhook_apply.apply_pending(limit=200)
        passes += 1
        done = report.applied + report.stale_ignored + report.queued_for_worker + report.failed
        totals.update(
            applied=report.applied,
            stale_ignored=report.stale_ignored,
            queued_for_worker=report.queued_for_worker,
            failed=report.failed,
        )
        if done == 0:
            break
    return totals, time.perf_counter() - started, passes


def how_applied(services: Services) -> Counter[str]:
    """Group the queue's outcomes by the receiver's own note (re-read, covered, stale…)."""
    with services.store.read() as session:
        rows = session.execute(sa.select(WebhookEvent.status, WebhookEvent.detail)).all()
    kinds: Counter[str] = Counter()
    for status, detail in rows:
        note = (detail or "").split(":")[0].split("(")[0].strip()
        kinds[f"{status}: {note}"] += 1
    return kinds


def run_pass(mode: str, args: argparse.Namespace) -> bool:
    print(f"\n== pass '{mode}' ==")
    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-") as tmp_name:
        services, state, http = build(Path(tmp_name), args.links, args.seed)
        try:
            started = time.perf_counter()
            sync = services.discovery.sync_all()
            print(
                f"store primed by discovery: {sync.ok} links "
                f"in {time.perf_counter() - started:.1f} s"
            )

            rng = random.Random(args.seed)
            deliveries = make_deliveries(state, args.count, args.duplicate_rate, rng)
            deadline = time.monotonic() + args.max_seconds
            started, cpu_started = time.perf_counter(), time.process_time()
            if mode == "direct":
                latencies, verdicts = receive_direct(services, deliveries, deadline)
            else:
                latencies, verdicts = receive_asgi(services, deliveries, deadline, args.concurrency)
            receive_s = time.perf_counter() - started
            receive_cpu = time.process_time() - cpu_started
            sent = deliveries[: len(latencies)]
            if len(sent) < len(deliveries):
                print(
                    f"STOPPED after {args.max_seconds:.0f} s: {len(sent)} of {len(deliveries)} sent"
                )
            print(
                f"receive: {len(sent)} deliveries in {receive_s:.2f} s "
                f"= {len(sent) / receive_s:.0f} deliveries/s; "
                # CPU time is what this process used: less disturbed by other work on the host.
                f"CPU {receive_cpu / len(sent) * 1000:.2f} ms/delivery "
                f"= {len(sent) / receive_cpu:.0f} deliveries per CPU-second"
            )
            print(latency_line("receive latency", latencies))
            print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))

            cpu_started = time.process_time()
            totals, apply_s, passes = apply_all(services, deadline + args.max_seconds)
            apply_cpu = time.process_time() - cpu_started
            applied_total = sum(totals.values())
            rate = applied_total / apply_s if apply_s > 0 else float("nan")
            print(
                f"apply: {applied_total} events in {apply_s:.2f} s = {rate:.0f} events/s "
                f"({passes} apply_pending calls; CPU incl. the in-process sandbox "
                f"{apply_cpu:.1f} s)"
            )
            print("apply outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
            print("how: " + ", ".join(f"{k} {v}" for k, v in sorted(how_applied(services).items())))
            return check(services, sent, totals)
        finally:
            services.close()
            http.close()


def check(services: Services, sent: list[Delivery], totals: Counter[str]) -> bool:
    unique = len({d.idempotency_key for d in sent})
    duplicates = len(sent) - unique
    with services.store.read() as session:
        accepted = (
            session.scalar(sa.select(sa.func.count()).where(WebhookDelivery.verdict == "accepted"))
            or 0
        )
        ignored = (
            session.scalar(sa.select(sa.func.count()).where(WebhookDelivery.verdict == "duplicate"))
            or 0
        )
        rejected = (
            session.scalar(sa.select(sa.func.count()).where(WebhookDelivery.verdict == "rejected"))
            or 0
        )
        queued = session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) or 0
        pending = (
            session.scalar(sa.select(sa.func.count()).where(WebhookEvent.status == "pending")) or 0
        )
    again = services.webhook_apply.apply_pending()
    again_total = again.applied + again.stale_ignored + again.queued_for_worker + again.failed
    checks = {
        f"accepted {accepted} == unique events sent {unique}": accepted == unique,
        f"duplicates ignored {ignored} == re-sends {duplicates}": ignored == duplicates,
        f"rejected {rejected} == 0": rejected == 0,
        f"queued events {queued} == accepted {accepted}": queued == accepted,
        f"handled by apply {sum(totals.values())} == queued {queued}": sum(totals.values())
        == queued,
        f"still pending {pending} == 0": pending == 0,
        f"a further apply_pending handles {again_total} == 0 (each applied once)": again_total == 0,
    }
    for label, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {label}")
    return all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--count", type=int, default=3000, help="deliveries per pass (default 3000)"
    )
    parser.add_argument(
        "--links", type=int, default=300, help="sandbox links the events name (default 300)"
    )
    parser.add_argument(
        "--duplicate-rate", type=float, default=0.10, help="share of re-sends (default 0.10)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=200.0,
        help="stop a pass's receiving after this long (signatures get stale at 300 s)",
    )
    parser.add_argument("--only", choices=("direct", "asgi"), help="run one pass only")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="deliveries in flight at once in the 'asgi' pass (default 1)",
    )
    args = parser.parse_args()
    if not 1 <= args.count <= 100_000 or not 0 <= args.duplicate_rate < 1:
        parser.error("--count must be 1..100000 and --duplicate-rate in [0, 1)")
    print(machine_line())
    print(
        f"webhook throughput: {args.count} deliveries/pass, ~{args.duplicate_rate:.0%} re-sends, "
        f"{args.links} links, SQLite file store"
    )
    modes = [args.only] if args.only else ["direct", "asgi"]
    results = [run_pass(mode, args) for mode in modes]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
