"""Alert evaluation cost as the number of links grows (10k / 100k / 1M seeded links).

One evaluation runs every rule the way a worker does: it rolls the state changes recorded since
the last evaluation up into the per-bank buckets, then checks each rule over the rollup and over
indexed counts. Its cost should follow the changes since the last evaluation, not the size of
the links table. Each round here adds the same 50 state changes (links of a few banks breaking)
before evaluating, so every size does the same work apart from the table sizes.

Also printed: the first evaluation's catch-up over a store's whole history of state changes (a
first start on an existing install), the time of each rule, and the time of the shared metrics
gauges (grouped counts over the links table, computed at most once per 15 s per process).

Seeded stores come from ``bench/seed.py`` (cached in ``bench/.data/``); what this script adds
(state changes, alert rows) is removed again at the end.

    .venv/bin/python bench/alerts.py [--sizes 10k,100k,1M] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import machine_line, percentile  # noqa: E402
from bench.seed import parse_backends, parse_sizes, seeded_store  # noqa: E402
from linkdesk.alerts.service import AlertService  # noqa: E402
from linkdesk.health import HealthThresholds  # noqa: E402
from linkdesk.metrics import Metrics  # noqa: E402
from linkdesk.services.audit import AuditLog  # noqa: E402
from linkdesk.store.engine import Store, create_engine  # noqa: E402
from linkdesk.store.health_totals import HealthTotals  # noqa: E402
from linkdesk.store.models import (  # noqa: E402
    Alert,
    AlertBankBucket,
    AlertEvent,
    AlertNotification,
    AlertRule,
    AlertSilence,
    AlertState,
    Link,
    LinkStateChange,
)

ROUNDS = 20
CHANGES_PER_ROUND = 50


def _clean(store: Store) -> None:
    with store.write() as session:
        for table in (
            AlertNotification,
            AlertEvent,
            Alert,
            AlertSilence,
            AlertRule,
            AlertBankBucket,
            AlertState,
        ):
            session.execute(sa.delete(table))


def _ms(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms  "
        f"p95 {percentile(ordered, 0.95) * 1000:7.1f} ms"
    )


def run(size: int, backend: str) -> None:
    seeded = seeded_store(size, backend)
    store = Store(create_engine(seeded.url))
    clock = lambda: datetime.now(UTC)  # noqa: E731
    thresholds = HealthThresholds()
    service = AlertService(
        store=store, audit=AuditLog(store, clock=clock), clock=clock, thresholds=thresholds
    )
    _clean(store)
    with store.read() as session:
        first_added = int(session.scalar(sa.select(sa.func.max(LinkStateChange.id))) or 0) + 1
        history = int(session.scalar(sa.select(sa.func.count()).select_from(LinkStateChange)) or 0)
        # Links of a few banks (the first by id), the ones that "break" in every round.
        victims = [
            (link_id, state)
            for link_id, state in session.execute(
                sa.select(Link.link_id, Link.state).order_by(Link.link_id).limit(CHANGES_PER_ROUND)
            ).all()
        ]
    try:
        service.ensure_default_rules()
        started = time.perf_counter()
        caught_up = 0
        while True:
            read = service.evaluator.rollup.roll_up()
            caught_up += read
            if read == 0:
                break
        catch_up = time.perf_counter() - started

        rounds: list[float] = []
        per_rule: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            now = clock()
            with store.write() as session:
                session.add_all(
                    LinkStateChange(
                        link_id=link_id,
                        at=now,
                        from_state=state,
                        from_error=None,
                        to_state="error",
                        to_error="institution_error",
                        source="sync",
                    )
                    for link_id, state in victims
                )
            started = time.perf_counter()
            service.evaluate()
            rounds.append(time.perf_counter() - started)
            for rule in service.rules():
                started = time.perf_counter()
                service.evaluator.run(rule.kind, rule.id, rule.params)
                per_rule.setdefault(rule.id, []).append(time.perf_counter() - started)

        totals = HealthTotals(store, thresholds=thresholds)
        metrics = Metrics(store=store, totals=totals, clock=clock)
        gauges: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            metrics._compute_db()
            gauges.append(time.perf_counter() - started)

        print(f"\n{backend} {size:>9,} links ({history:,} state changes in the history)")
        print(f"  first evaluation catch-up: {caught_up:,} changes rolled up in {catch_up:.1f} s")
        print(f"  evaluation, {CHANGES_PER_ROUND} new changes each: {_ms(rounds)}")
        for rule_id, times in sorted(per_rule.items()):
            print(f"    {rule_id:<31} {_ms(times)}")
        print(f"  metrics database gauges, one count: {_ms(gauges)}")
    finally:
        with store.write() as session:
            session.execute(sa.delete(LinkStateChange).where(LinkStateChange.id >= first_added))
        _clean(store)
        store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000])
    parser.add_argument("--backends", type=parse_backends, default=["sqlite"])
    args = parser.parse_args()
    print(machine_line())
    for backend in args.backends:
        for size in args.sizes:
            run(size, backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
