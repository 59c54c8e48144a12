"""How long until the store agrees with MoneyKit again, when MoneyKit is hostile.

Starts the sandbox (``python -m sandbox``) on a free port and Linkdesk against it: a temporary
SQLite store, the webhook receiver on a real port (uvicorn, as the integration tests do) and the
SyncWorker in a thread with short intervals. Setup runs with the sandbox's faults and limits off:
discovery, every link's webhook pointed at the receiver, one full worker pass, and a read of the
truth. Then the sandbox turns hostile:

* half of the webhooks are dropped (never sent, never retried);
* ``/links…`` API calls fail with 5xx 20 % of the time and with an injected 429 5 % of the time;
* MoneyKit's own rate limits are on;

and about 20 % of the links are forced through state changes (auth_expired, institution_error,
back to connected; some twice, so a lost second webhook leaves the first one's state behind).
The clock runs from the first forced change until every link's ``(state, error_code)`` in the
store equals the sandbox's, or gives up after ``--timeout`` seconds.

    .venv/bin/python bench/convergence.py [--links 300] [--timeout 300]
"""

from __future__ import annotations

import argparse
import random
import re
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
from starlette.applications import Starlette

from bench._common import (
    CLIENT_ID,
    CLIENT_SECRET,
    SandboxProcess,
    ThreadedServer,
    machine_line,
)
from linkdesk.bootstrap import Services, build_services
from linkdesk.services.worker import RoundReport
from linkdesk.settings import Settings
from linkdesk.store.models import Link, LinkStateChange, WebhookDelivery
from linkdesk.webhooks.asgi import webhook_route

Truth = dict[str, tuple[str, str | None]]

FAULT_RULES = [
    {
        "pattern": r"^(GET|POST|PATCH|DELETE) /links",
        "error_rate": 0.20,
        "error_status": 503,
        "rate_limit_rate": 0.05,
        "retry_after_s": 2,
    }
]
_LINK_PATH = re.compile(r"^/links/[^/]+")


class RequestCounter:
    """Counts every response Linkdesk's MoneyKit client gets, by endpoint and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, int]] = Counter()

    def hook(self, response: httpx.Response) -> None:
        path = response.request.url.path
        endpoint = _LINK_PATH.sub("/links/{id}", path)
        if endpoint.startswith("/assets/"):
            endpoint = "/assets/…"
        with self._lock:
            self.counts[(f"{response.request.method} {endpoint}", response.status_code)] += 1

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()

    def snapshot(self) -> Counter[tuple[str, int]]:
        with self._lock:
            return Counter(self.counts)


class Sandbox:
    """Calls to the sandbox outside Linkdesk: controls, and the truth read with faults off."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)
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

    def api(self, method: str, path: str, json: Any = None) -> Any:
        response = self.http.request(method, path, json=json, headers=self._bearer())
        response.raise_for_status()
        return response.json()

    def read_truth(self, link_ids: list[str]) -> Truth:
        """Every link's state as the API shows it (call only with faults and limits off)."""
        truth: Truth = {}
        for link_id in link_ids:
            body = self.api("GET", f"/links/{link_id}")
            truth[link_id] = (body["state"], body.get("error_code"))
        return truth

    def close(self) -> None:
        self.http.close()


def plan_changes(
    truth: Truth, share: float, rng: random.Random
) -> dict[str, list[tuple[str, str | None]]]:
    """Forced states per chosen link, in order. Some links change twice, so the first webhook's
    state is wrong once the second is lost."""
    live = sorted(link_id for link_id, (state, _) in truth.items() if state != "deleted")
    chosen = rng.sample(live, max(1, round(len(live) * share)))
    plan: dict[str, list[tuple[str, str | None]]] = {}
    for link_id in chosen:
        roll = rng.random()
        if truth[link_id][0] == "connected":
            if roll < 0.4:
                plan[link_id] = [("error", "auth_expired")]
            elif roll < 0.7:
                plan[link_id] = [("error", "institution_error")]
            else:
                plan[link_id] = [("error", "auth_expired"), ("connected", None)]
        elif roll < 0.7:
            plan[link_id] = [("connected", None)]
        else:
            plan[link_id] = [("connected", None), ("error", "institution_error")]
    return plan


def stored_states(services: Services) -> Truth:
    with services.store.read() as session:
        rows = session.execute(sa.select(Link.link_id, Link.state, Link.error_code)).all()
    return {link_id: (state, error_code) for link_id, state, error_code in rows}


def mismatches(truth: Truth, stored: Truth) -> list[str]:
    return sorted(link_id for link_id, want in truth.items() if stored.get(link_id) != want)


def build(
    sandbox_url: str, tmp: Path, counter: RequestCounter, args: argparse.Namespace
) -> tuple[Services, httpx.Client]:
    http = httpx.Client(timeout=10, event_hooks={"response": [counter.hook]})
    settings = Settings(
        moneykit_base_url=sandbox_url,
        moneykit_connect_host=sandbox_url,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=f"sqlite:///{tmp / 'linkdesk.db'}",
        signing_key_file=str(tmp / "signing.key"),
        webhook_issuer=sandbox_url,  # the sandbox signs with its own URL as issuer
        moneykit_max_retries=0,
        # "Short" intervals: the shortest the settings allow (whole minutes), so a lost webhook
        # is made up for within about a minute instead of the production 10-30.
        worker_link_interval_minutes=args.link_interval_minutes,
        worker_unhealthy_interval_minutes=args.link_interval_minutes,
        worker_max_backoff_minutes=1,
        worker_poll_seconds=args.poll_seconds,
        # Setup discovery runs with the sandbox's limits off; do not pace it for production.
        sync_links_per_minute=100_000,
    )
    return build_services(settings, http_client=http, worker_id="bench-convergence"), http


def setup(sandbox: Sandbox, services: Services, receiver_url: str) -> tuple[Truth, float]:
    started = time.monotonic()
    sandbox.control("POST", "/rate-limits", {"enabled": False})
    sandbox.control("DELETE", "/faults")
    report = services.discovery.sync_all()
    link_ids = sorted(stored_states(services))
    for link_id in link_ids:
        sandbox.api("PATCH", f"/links/{link_id}", {"webhook": receiver_url})
    # One full worker pass, so routine reads are scheduled as in a process that has been running.
    for _ in range(1000):
        if services.worker.run_once().claimed == 0:
            break
    truth = sandbox.read_truth(link_ids)
    print(
        f"setup: {report.ok} links discovered, webhooks pointed at the receiver, one worker pass, "
        f"truth read ({time.monotonic() - started:.1f} s)"
    )
    return truth, time.monotonic() - started


def go_hostile(sandbox: Sandbox, args: argparse.Namespace) -> None:
    sandbox.control(
        "POST",
        "/webhooks/settings",
        {"drop_rate": args.drop_rate, "seed": args.seed, "time_scale": 60.0},
    )
    sandbox.control("POST", "/faults", {"seed": args.seed, "rules": FAULT_RULES})
    sandbox.control("POST", "/rate-limits", {"enabled": True})
    sandbox.control("DELETE", "/webhooks")


def calm_down(sandbox: Sandbox) -> None:
    sandbox.control("DELETE", "/faults")
    sandbox.control("POST", "/rate-limits", {"enabled": False})
    sandbox.control("POST", "/webhooks/settings", {"drop_rate": 0.0})


class Rounds:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports: list[RoundReport] = []

    def add(self, report: RoundReport) -> None:
        with self.lock:
            self.reports.append(report)

    def totals(self) -> tuple[int, Counter[str]]:
        with self.lock:
            reports = list(self.reports)
        totals: Counter[str] = Counter()
        for report in reports:
            totals.update(
                claimed=report.claimed,
                ok=report.ok,
                errors=report.errors,
                rate_limited=report.rate_limited,
                deferred=report.deferred,
            )
            if report.webhooks is not None:
                totals.update(
                    webhooks_applied=report.webhooks.applied,
                    webhooks_stale=report.webhooks.stale_ignored,
                    webhooks_to_worker=report.webhooks.queued_for_worker,
                )
        return len(reports), totals


def run(args: argparse.Namespace, tmp: Path) -> bool:
    process = SandboxProcess(
        demo_links=args.links, extra_args=["--seed", str(args.seed), "--webhook-time-scale", "60"]
    )
    process.start(tmp / "sandbox.log")
    sandbox = Sandbox(process.url)
    counter = RequestCounter()
    services, http = build(process.url, tmp, counter, args)
    receiver = ThreadedServer(Starlette(routes=[webhook_route(services.webhooks)]))
    stop = threading.Event()
    worker: threading.Thread | None = None
    try:
        receiver.start()
        receiver_url = f"http://localhost:{receiver.port}/webhooks/moneykit"
        truth, _ = setup(sandbox, services, receiver_url)
        if mismatches(truth, stored_states(services)):
            print("note: the store differed from the truth already before the changes")
        plan = plan_changes(truth, args.change_share, random.Random(args.seed))
        go_hostile(sandbox, args)
        counter.reset()

        rounds = Rounds()
        worker = threading.Thread(
            target=services.worker.run_forever,
            args=(stop,),
            kwargs={"on_round": rounds.add},
            name="bench-worker",
            daemon=True,
        )
        started = time.monotonic()
        started_at = datetime.now(UTC)
        worker.start()
        forced = 0
        for link_id, steps in plan.items():
            for state, error_code in steps:
                body = sandbox.control(
                    "POST", f"/links/{link_id}/state", {"state": state, "error_code": error_code}
                )
                truth[link_id] = (body["state"], body.get("error_code"))
                forced += 1
        forced_s = time.monotonic() - started
        wrong_at_start = len(mismatches(truth, stored_states(services)))
        print(
            f"hostile: {forced} forced changes on {len(plan)} links in {forced_s:.1f} s; "
            f"{wrong_at_start} links differ from the truth"
        )

        converged_s: float | None = None
        wrong: list[str] = []
        next_report = started + 30
        while time.monotonic() - started < args.timeout:
            wrong = mismatches(truth, stored_states(services))
            if not wrong:
                converged_s = time.monotonic() - started
                break
            if time.monotonic() >= next_report:
                print(f"  … {time.monotonic() - started:.0f} s: {len(wrong)} links still differ")
                next_report += 30
            time.sleep(0.25)
        round_count, totals = rounds.totals()
        requests = counter.snapshot()
        held = True
        if converged_s is not None:
            time.sleep(args.hold_seconds)
            held = not mismatches(truth, stored_states(services))
        stop.set()
        worker.join(timeout=60)

        print()
        if converged_s is None:
            print(
                f"NOT CONVERGED within {args.timeout:.0f} s: {len(wrong)} links still differ, "
                f"e.g. {', '.join(wrong[:5])}"
            )
        else:
            print(f"converged after {converged_s:.1f} s (from the first forced change)")
            print(f"still equal {args.hold_seconds:.0f} s later: {'yes' if held else 'NO'}")
        report_details(services, sandbox, requests, round_count, totals, plan, started_at)
        return verify(sandbox, services, truth) and converged_s is not None and held
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=60)
        receiver.stop()
        services.close()
        http.close()
        sandbox.close()
        process.stop()


def report_details(
    services: Services,
    sandbox: Sandbox,
    requests: Counter[tuple[str, int]],
    round_count: int,
    totals: Counter[str],
    plan: dict[str, list[tuple[str, str | None]]],
    since_at: datetime,
) -> None:
    print(
        f"worker rounds: {round_count} (jobs claimed {totals['claimed']}, ok {totals['ok']}, "
        f"errors {totals['errors']}, rate-limited {totals['rate_limited']}, "
        f"deferred {totals['deferred']}; webhook events applied {totals['webhooks_applied']}, "
        f"stale {totals['webhooks_stale']}, handed to the worker {totals['webhooks_to_worker']})"
    )
    by_status: Counter[int] = Counter()
    by_endpoint: Counter[str] = Counter()
    for (endpoint, status), n in requests.items():
        by_status[status] += n
        by_endpoint[endpoint] += n
    total = sum(by_status.values())
    print(
        f"MoneyKit requests until convergence: {total} "
        f"({', '.join(f'{s}: {n}' for s, n in sorted(by_status.items()))})"
    )
    print(
        f"  429s seen: {by_status[429]}; "
        f"5xx seen: {sum(n for s, n in by_status.items() if s >= 500)}"
    )
    print("  by endpoint: " + ", ".join(f"{e} {n}" for e, n in by_endpoint.most_common()))

    records = sandbox.control("GET", "/webhooks")["deliveries"]
    outcomes = Counter(record["outcome"] for record in records)
    print(
        "webhooks (sandbox log since the changes): "
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
    )
    with services.store.read() as session:
        verdicts = Counter(
            dict(
                session.execute(
                    sa.select(WebhookDelivery.verdict, sa.func.count())
                    .where(WebhookDelivery.received_at >= since_at)
                    .group_by(WebhookDelivery.verdict)
                ).all()
            )
        )
        sources = Counter(
            dict(
                session.execute(
                    sa.select(LinkStateChange.source, sa.func.count())
                    .where(LinkStateChange.at >= since_at, LinkStateChange.link_id.in_(list(plan)))
                    .group_by(LinkStateChange.source)
                ).all()
            )
        )
    print("receiver verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items())))
    print(
        "state changes stored for the changed links, by source: "
        + ", ".join(f"{k} {v}" for k, v in sorted(sources.items()))
    )
    worker = services.worker_progress.status()
    print(
        f"worker_status: jobs {worker.jobs_total}, due {worker.jobs_due}, lag {worker.lag}, "
        f"errors last hour {worker.errors_last_hour}, rate-limited last hour "
        f"{worker.rate_limited_last_hour}, webhooks pending {worker.webhooks_pending}"
    )


def verify(sandbox: Sandbox, services: Services, truth: Truth) -> bool:
    """A last read with faults off: the truth did not move, and the store has it."""
    calm_down(sandbox)
    again = sandbox.read_truth(sorted(truth))
    moved = mismatches(truth, again)
    wrong = mismatches(again, stored_states(services))
    print(
        f"check with faults off: truth moved for {len(moved)} links, "
        f"store differs for {len(wrong)} links"
    )
    return not moved and not wrong


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--links", type=int, default=300, help="sandbox demo links (default 300)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up after (s, default 300)"
    )
    parser.add_argument(
        "--change-share", type=float, default=0.20, help="links changed (default 0.20)"
    )
    parser.add_argument(
        "--drop-rate", type=float, default=0.50, help="webhooks dropped (default 0.50)"
    )
    parser.add_argument(
        "--link-interval-minutes", type=int, default=1, help="worker interval (default 1)"
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=1.0, help="worker idle poll (default 1)"
    )
    parser.add_argument("--hold-seconds", type=float, default=3.0, help="re-check after converging")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not 1 <= args.links <= 5000 or not 1 <= args.timeout <= 3600:
        parser.error("--links must be 1..5000 and --timeout 1..3600")
    print(machine_line())
    print(
        f"convergence: {args.links} links, {args.change_share:.0%} changed, "
        f"{args.drop_rate:.0%} webhooks dropped, faults {FAULT_RULES[0]['error_rate']:.0%} 5xx + "
        f"{FAULT_RULES[0]['rate_limit_rate']:.0%} 429 on /links…, MoneyKit rate limits on, "
        f"worker interval {args.link_interval_minutes} min, poll {args.poll_seconds} s"
    )
    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-") as tmp_name:
        ok = run(args, Path(tmp_name))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
