"""Every filter of the Links page against every sort: the data layer's time for one page.

``links_page.py`` times the interactions a user makes most (a few filters, the default sort).
A user may pick any verdict, error or state and sort it any way; this script times each pair on
the stores of ``seed.py``: the first page and a page a few pages deep, ``--runs`` times each,
through ``LinkQueries.list_links`` with the shared counts ready (as on the Links page).

    .venv/bin/python bench/filter_sort_grid.py                          # 100k and 1M, both stores
    .venv/bin/python bench/filter_sort_grid.py --sizes 1M --backends sqlite --runs 5

Prints one line per filter (worst p95 across its sorts, per sort) and the ten slowest pairs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import machine_line, percentile  # noqa: E402
from bench.seed import parse_backends, parse_sizes, seeded_store  # noqa: E402
from linkdesk.health import Health  # noqa: E402
from linkdesk.read.link_order import LinkSort  # noqa: E402
from linkdesk.read.links import LinkFilters, LinkQueries  # noqa: E402
from linkdesk.store.engine import Store, create_engine, migrate  # noqa: E402

TARGET_P95_MS = {100_000: 50.0, 1_000_000: 100.0}
DEPTH = 3  # the deep page: this many "Next page" clicks in


def _filters() -> dict[str, LinkFilters]:
    named = {"all": LinkFilters(include_deleted=False)}
    named |= {h.value: LinkFilters(health=h, include_deleted=False) for h in Health}
    named["error auth_expired"] = LinkFilters(error_code="auth_expired", include_deleted=False)
    named["error institution_error"] = LinkFilters(error_code="institution_error")
    named["state connecting"] = LinkFilters(state="connecting")
    return named


def measure(queries: LinkQueries, filters: LinkFilters, sort: LinkSort, runs: int) -> list[float]:
    samples: list[float] = []
    for _ in range(runs):
        cursor = None
        for depth in range(DEPTH + 1):
            started = time.perf_counter()
            page = queries.list_links(filters, sort=sort, after=cursor)
            elapsed = (time.perf_counter() - started) * 1000
            if depth in (0, DEPTH):  # the first page and a deep one
                samples.append(elapsed)
            cursor = page.next_cursor
            if cursor is None:
                break
    return sorted(samples)


def run(size: int, backend: str, runs: int) -> None:
    seeded = seeded_store(size, backend)
    migrate(seeded.url)
    store = Store(create_engine(seeded.url))
    queries = LinkQueries(store)
    # The page has these (shared, refreshed in the background).
    summary = queries.totals.health_summary()
    queries.list_links(LinkFilters())  # warm the connection pool and the caches
    target = TARGET_P95_MS.get(size)
    print(
        f"\n{backend} {size:,} links (target p95 {target or '-'} ms); verdicts: "
        + ", ".join(f"{h.value} {n:,}" for h, n in summary.counts.items())
    )
    worst: list[tuple[float, str, str]] = []
    for name, filters in _filters().items():
        cells = []
        for sort in LinkSort:
            samples = measure(queries, filters, sort, runs)
            p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
            worst.append((p95, name, sort.value))
            cells.append(f"{sort.value} {p50:.0f}/{p95:.0f}")
        print(f"  {name:24} " + "  ".join(cells), flush=True)
    worst.sort(reverse=True)
    over = [w for w in worst if target is not None and w[0] > target]
    print("  slowest (p95 ms): " + ", ".join(f"{n} × {s} {p:.0f}" for p, n, s in worst[:10]))
    print(f"  pairs over the target: {len(over)} of {len(worst)}")
    store.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("100k,1M"))
    parser.add_argument("--backends", type=parse_backends, default=["sqlite", "postgresql"])
    # 10 runs: 20 samples a pair, so its p95 is not simply its one slowest sample.
    parser.add_argument("--runs", type=int, default=10, help="first + deep page each run")
    args = parser.parse_args()
    print(machine_line())
    print("p50/p95 ms per sort, first page and a page 3 deep, through LinkQueries.list_links")
    for size in args.sizes:
        for backend in args.backends:
            run(size, backend, args.runs)


if __name__ == "__main__":
    main()
