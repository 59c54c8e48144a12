"""Links the sync worker refreshes per minute against the sandbox with MoneyKit's rate limits on.

The sandbox runs as its own process (``python -m sandbox``, ``--links`` demo links, every one of
them ``connected``), with the rate limits of protocol doc §6.2 enforced as MoneyKit enforces them.
Linkdesk's ``SyncWorker`` runs ``run_forever`` in a thread of this process over a temporary SQLite
store, exactly as a worker process runs it, with the production settings except that a link is
due again one minute after its last read (the shortest interval the settings allow), so that
more work is always due than the limits let through.

What a refresh costs and what the limits allow: refreshing a connected link is one
``GET /links/{id}`` and one ``GET /links/{id}/accounts``. MoneyKit allows 1,000 link reads and
600 account reads a minute per app, so at most min(1000 / 1, 600 / 1) = 600 links a minute can be
refreshed; the accounts limit binds. (The per-link limits, 15 and 4 a minute, do not bind: each
link is read about once a minute. Institutions are read once per worker and hour, from a limit of
their own.) The limits are sliding one-minute windows, so a run of k whole minutes can hold at
most k x 600 refreshes: that is the theoretical maximum the measured count is compared with.

The worker's request budget (``linkdesk.services.ratelimit.RequestBudget``) keeps its windows
with the ``limits`` library; the script also prints what one ``try_acquire`` costs.

Printed: refreshes per minute (a link read and its accounts stored), the fraction of the maximum,
the worker's own request budget, requests by endpoint and status (429s are the limits biting),
per-link refresh time p50/p95 (a job from claim to stored), the worker's rounds. Exits non-zero
only when the bookkeeping is wrong (a read not recorded, a job left claimed, a link not stored).

    .venv/bin/python bench/sync_worker.py [--links 1500] [--minutes 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a plain script (the Makefile's bench target): the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa
from pydantic import SecretStr

from bench._common import (
    CLIENT_ID,
    CLIENT_SECRET,
    RequestCounter,
    SandboxProcess,
    machine_line,
    percentile,
)
from linkdesk.bootstrap import build_services
from linkdesk.services.ratelimit import Limit, RequestBudget
from linkdesk.services.worker import RoundReport
from linkdesk.settings import Settings
from linkdesk.store.models import Link, SyncAttempt, SyncJob
from sandbox.limits import RULES

LINK_READ = "GET /links/{id}"
ACCOUNTS_READ = "GET /links/{id}/accounts"


def documented_limit(method: str, path: str) -> tuple[int, int]:
    """(per app, per link) a minute for one endpoint, as the sandbox enforces it."""
    for rule in RULES:
        if rule.method == method and rule.pattern.match(path):
            assert rule.per_app is not None and rule.per_link is not None
            return rule.per_app, rule.per_link
    raise LookupError(f"no rate limit for {method} {path}")


def acquire_cost(budget: RequestBudget, calls: int = 20_000) -> float:
    """Microseconds of CPU per ``try_acquire`` for a fresh link each time (the worker's case),
    never refused: the windows are wide enough for every call."""
    started = time.process_time()
    for i in range(calls):
        budget.try_acquire("link", f"mk_{i}")
    return (time.process_time() - started) / calls * 1e6


def print_acquire_cost() -> None:
    wide = {"link": Limit(per_app=10**9, per_link=15)}
    print(
        "try_acquire CPU (20,000 links, app + per-link window): "
        f"{acquire_cost(RequestBudget(wide)):.1f} us"
    )


class Sandbox:
    """Controls and plain API calls to the sandbox, outside Linkdesk's client."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        self._token: str | None = None

    def control(self, method: str, path: str, json: Any = None) -> Any:
        response = self.http.request(method, f"/_sandbox{path}", json=json)
        response.raise_for_status()
        return response.json() if response.content else None

    def _bearer(self) -> dict[str, str]:
        if self._token is None:
            response = self.http.post(
                "/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                },
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return {"Authorization": f"Bearer {self._token}"}

    def api_get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self.http.get(path, params=params, headers=self._bearer())
        response.raise_for_status()
        return response.json()

    def link_ids(self) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = self.api_get("/links", {"limit": 5000, **({"cursor": cursor} if cursor else {})})
            ids.extend(item["link_id"] for item in page["links"])
            cursor = page.get("next_cursor")
            if not cursor or not page["links"]:
                return ids

    def close(self) -> None:
        self.http.close()


def connect_every_link(sandbox: Sandbox) -> int:
    """Make every demo link ``connected`` (limits off); returns how many were changed.

    The demo set has ~14 % links in error, which cost one request instead of two. With every
    link connected each refresh costs exactly two, so the maximum is a plain number.
    """
    changed = 0
    for link_id in sandbox.link_ids():
        if sandbox.api_get(f"/links/{link_id}")["state"] != "connected":
            sandbox.control("POST", f"/links/{link_id}/state", {"state": "connected"})
            changed += 1
    return changed


def bench_settings(sandbox_url: str, tmp: Path, args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.concurrency is not None:
        overrides["sync_concurrency"] = args.concurrency
    if args.batch_size is not None:
        overrides["worker_batch_size"] = args.batch_size
    return Settings(
        moneykit_base_url=sandbox_url,
        moneykit_connect_host=sandbox_url,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=f"sqlite:///{tmp / 'linkdesk.db'}",
        signing_key_file=str(tmp / "signing.key"),
        moneykit_max_retries=0,
        # Every link is due again a minute after its read: more is due than the limits allow.
        worker_link_interval_minutes=1,
        worker_unhealthy_interval_minutes=1,
        # Priming reads every link once with the sandbox's limits off; do not pace it.
        sync_links_per_minute=100_000,
        **overrides,
    )


def prime(settings: Settings) -> float:
    """Store every link once (the state of a worker that has been running), limits off."""
    started = time.monotonic()
    services = build_services(settings, worker_id="bench-prime")
    try:
        result = services.discovery.sync_all()
        if result.failed:
            raise RuntimeError(f"priming failed for {result.failed} links")
    finally:
        services.close()
    return time.monotonic() - started


class Rounds:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reports: list[RoundReport] = []

    def add(self, report: RoundReport) -> None:
        with self._lock:
            self.reports.append(report)

    def totals(self) -> Counter[str]:
        with self._lock:
            total: Counter[str] = Counter()
            for r in self.reports:
                total.update(
                    rounds=1,
                    claimed=r.claimed,
                    ok=r.ok,
                    deferred=r.deferred,
                    rate_limited=r.rate_limited,
                    errors=r.errors,
                )
            return total


def measure(settings: Settings, args: argparse.Namespace) -> bool:
    counter = RequestCounter()
    http = httpx.Client(timeout=10, event_hooks={"response": [counter.hook]})
    services = build_services(
        settings, http_client=http, migrate_schema=False, worker_id="bench-sync"
    )
    rounds = Rounds()
    stop = threading.Event()
    worker = threading.Thread(
        target=services.worker.run_forever,
        args=(stop,),
        kwargs={"on_round": rounds.add},
        name="bench-sync-worker",
        daemon=True,
    )
    window = args.minutes * 60.0
    try:
        started_at = datetime.now(UTC)
        started = time.monotonic()
        cpu_started = time.process_time()
        worker.start()
        next_note = 30.0
        while (elapsed := time.monotonic() - started) < window:
            time.sleep(min(1.0, window - elapsed))
            if time.monotonic() - started >= next_note:
                done = counter.snapshot()[(ACCOUNTS_READ, 200)]
                print(f"  {next_note:4.0f} s: {done} links refreshed")
                next_note += 30.0
        requests = counter.snapshot()
        ended_at = datetime.now(UTC)
        cpu = time.process_time() - cpu_started
        stop.set()
        worker.join(timeout=120)
        if worker.is_alive():
            print("FAIL: the worker did not stop within 120 s")
            return False
        report(services.settings, requests, rounds.totals(), cpu, args)
        per_link_times(services.store, started_at, ended_at)
        return check(services, counter.snapshot())
    finally:
        stop.set()
        services.close()
        http.close()


def report(
    settings: Settings,
    requests: Counter[tuple[str, int]],
    rounds: Counter[str],
    cpu_seconds: float,
    args: argparse.Namespace,
) -> None:
    link_app, link_per_link = documented_limit("GET", "/links/x")
    accounts_app, accounts_per_link = documented_limit("GET", "/links/x/accounts")
    # One link read and one accounts read per refresh of a connected link.
    max_per_minute = min(link_app / 1, accounts_app / 1)
    binding = "accounts" if accounts_app <= link_app else "link reads"
    refreshed = requests[(ACCOUNTS_READ, 200)]
    rate = refreshed / args.minutes
    maximum = max_per_minute * args.minutes
    print(
        f"MoneyKit's limits (sandbox/limits.py): {LINK_READ} {link_app}/min per app "
        f"({link_per_link} per link), {ACCOUNTS_READ} {accounts_app}/min per app "
        f"({accounts_per_link} per link)"
    )
    print(
        f"a refresh = 1 link read + 1 accounts read -> max = min({link_app}/1, {accounts_app}/1) "
        f"= {max_per_minute:.0f} links/min ({binding} bind); "
        f"{args.minutes} min -> at most {maximum:.0f}"
    )
    budget = min(settings.worker_link_reads_per_minute, settings.worker_account_reads_per_minute)
    print(
        f"worker budget (settings): {settings.worker_link_reads_per_minute} link reads/min, "
        f"{settings.worker_account_reads_per_minute} accounts reads/min -> at most "
        f"{budget} links/min = {budget / max_per_minute:.0%} of MoneyKit's maximum"
    )
    print(
        f"REFRESHED: {refreshed} links in {args.minutes} min = {rate:.0f} links/min "
        f"= {refreshed / maximum:.1%} of the theoretical maximum"
    )
    state_only = requests[(LINK_READ, 200)] - refreshed
    print(
        f"link reads without an accounts read (accounts budget spent, state still stored): "
        f"{state_only}"
    )
    limited = sum(n for (_endpoint, status), n in requests.items() if status == 429)
    print(f"429 answers: {limited}")
    print(
        "requests: "
        + ", ".join(
            f"{endpoint} {status}: {n}" for (endpoint, status), n in sorted(requests.items())
        )
    )
    print(
        f"worker: {rounds['rounds']} rounds, {rounds['claimed']} jobs claimed: {rounds['ok']} ok, "
        f"{rounds['deferred']} deferred (budget), {rounds['rate_limited']} rate-limited (429), "
        f"{rounds['errors']} errors; CPU of this process {cpu_seconds:.1f} s "
        f"({cpu_seconds / (args.minutes * 60):.0%} of one core)"
    )


def per_link_times(store: Any, started_at: datetime, ended_at: datetime) -> None:
    with store.read() as session:
        durations = sorted(
            session.scalars(
                sa.select(SyncAttempt.duration_ms).where(
                    SyncAttempt.kind == "link",
                    SyncAttempt.outcome == "ok",
                    SyncAttempt.at >= started_at,
                    SyncAttempt.at <= ended_at,
                )
            ).all()
        )
    print(
        f"per-link refresh time (job claimed to stored, {len(durations)} jobs): "
        f"p50 {percentile(durations, 0.5):.0f} ms, p95 {percentile(durations, 0.95):.0f} ms, "
        f"max {percentile(durations, 1.0):.0f} ms"
    )


def check(services: Any, requests: Counter[tuple[str, int]]) -> bool:
    with services.store.read() as session:
        ok_reads = (
            session.scalar(
                sa.select(sa.func.count()).where(
                    SyncAttempt.kind == "link", SyncAttempt.outcome == "ok"
                )
            )
            or 0
        )
        still_claimed = (
            session.scalar(
                sa.select(sa.func.count()).where(
                    SyncJob.claimed_by.is_not(None), SyncJob.claimed_until.is_not(None)
                )
            )
            or 0
        )
        links = session.scalar(sa.select(sa.func.count()).select_from(Link)) or 0
        jobs = session.scalar(sa.select(sa.func.count()).where(SyncJob.kind == "link")) or 0
        not_connected = (
            session.scalar(sa.select(sa.func.count()).where(Link.state != "connected")) or 0
        )
    link_reads = requests[(LINK_READ, 200)]
    checks = {
        f"successful link reads {link_reads} == ok attempts recorded {ok_reads}": link_reads
        == ok_reads,
        f"jobs left claimed after the worker stopped {still_claimed} == 0": still_claimed == 0,
        f"every stored link has a job: {jobs} jobs for {links} links": jobs == links,
        f"links stored as not connected {not_connected} == 0": not_connected == 0,
    }
    for label, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {label}")
    return all(checks.values())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--links",
        type=int,
        default=1500,
        help="sandbox links (default 1500; more than the limits let through in a minute)",
    )
    parser.add_argument(
        "--minutes",
        type=int,
        default=2,
        help="measured whole minutes (default 2; whole, so the limit's windows add up exactly)",
    )
    parser.add_argument("--concurrency", type=int, help="worker threads (default: settings)")
    parser.add_argument("--batch-size", type=int, help="jobs claimed per round (default: settings)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not 1 <= args.minutes <= 60 or not 1 <= args.links <= 20_000:
        parser.error("--minutes must be 1..60 and --links 1..20000")
    print(machine_line())
    print(
        f"sync worker throughput: {args.links} links, every one connected, due every minute, "
        f"{args.minutes} min measured, sandbox rate limits ON"
    )
    print_acquire_cost()
    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sandbox_process = SandboxProcess(
            demo_links=args.links, extra_args=["--seed", str(args.seed)]
        )
        sandbox_process.start(tmp / "sandbox.log")
        sandbox = Sandbox(sandbox_process.url)
        try:
            sandbox.control("POST", "/rate-limits", {"enabled": False})
            changed = connect_every_link(sandbox)
            settings = bench_settings(sandbox_process.url, tmp, args)
            primed_in = prime(settings)
            print(
                f"setup (limits off, not timed): {changed} links set to connected, "
                f"store primed with {args.links} links in {primed_in:.1f} s"
            )
            # Turning the limits on empties their windows: the measured run starts from zero.
            sandbox.control("POST", "/rate-limits", {"enabled": True})
            ok = measure(settings, args)
        finally:
            sandbox.close()
            sandbox_process.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
