"""Links page at scale: server-side time of each interaction with 10k, 100k and 1M links.

For every size and backend (SQLite, and PostgreSQL on the test server of ``scripts/postgres.sh``)
a store seeded by ``bench/seed.py`` is opened and three things are timed in the same run:

* **page**: the complete script run of the dashboard (``dashboard.py`` → ``app_pages/links.py``),
  signed in, through ``streamlit.testing.v1.AppTest``: every query, the widgets, the table's Arrow
  serialisation, the worker panel fragment. This is what a Streamlit server does for one rerun,
  plus AppTest's own bookkeeping (a little more than the server would spend);
* **data**: the exact read-side calls that page run made (``LinkQueries``, ``HealthTotals``,
  ``WorkerProgress``: recorded while it ran, then replayed on the same objects), i.e. the
  store's share of the page time;
* **naive**: a page that reads every link joined with its institution into a pandas DataFrame and
  hands it to ``st.dataframe`` (filtering and sorting would then happen in the browser), run
  through AppTest the same way. Fewer repetitions at the larger sizes: one run takes seconds.

Interactions: first load (a new session), filter change (health, error, institution), next page
(walking up to ``--depth`` pages deep), search (customer prefix, link id prefix, part of a bank
name) and sort change. p50/p95 over ``--runs`` runs each (≥ 50 by default).

    .venv/bin/python bench/links_page.py                      # 10k, 100k, 1M on both backends
    .venv/bin/python bench/links_page.py --sizes 10k --backends sqlite --runs 20
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import streamlit.testing.v1.app_test as app_test_module  # noqa: E402
import streamlit.testing.v1.local_script_runner as local_script_runner_module  # noqa: E402
from streamlit.runtime.scriptrunner.script_cache import ScriptCache  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from bench._common import machine_line, percentile  # noqa: E402
from bench.seed import SeededStore, parse_backends, parse_sizes, seeded_store  # noqa: E402
from linkdesk.auth import Actor, Role  # noqa: E402
from linkdesk.read.links import LinkQueries  # noqa: E402
from linkdesk.read.worker import WorkerProgress  # noqa: E402
from linkdesk.store.engine import Store, create_engine  # noqa: E402
from linkdesk.store.health_totals import HealthTotals, forget_stored_summary  # noqa: E402
from ui.auth import ACTOR_KEY  # noqa: E402
from ui.wiring import get_services  # noqa: E402

TARGET_P95_MS = {100_000: 50.0, 1_000_000: 100.0}
TARGET_FIRST_LOAD_MS = 1000.0
DASHBOARD = str(REPO_ROOT / "dashboard.py")
INTERACTIONS = ("first load", "filter", "next page", "search", "sort")


# -- AppTest as close to a server as it gets ------------------------------------------------

_SHARED_SCRIPT_CACHE = ScriptCache()


def _shared_script_cache() -> ScriptCache:
    return _SHARED_SCRIPT_CACHE


def share_script_cache() -> None:
    """AppTest makes a new ScriptCache for every run, so it parses, rewrites (magic) and compiles
    dashboard.py and the page on each one; a Streamlit server keeps one cache per process and
    compiles a script once. One shared cache removes that test-only cost from the figures."""
    app_test_module.ScriptCache = _shared_script_cache  # type: ignore[misc,assignment]
    local_script_runner_module.ScriptCache = _shared_script_cache  # type: ignore[misc,assignment]


# -- recording the page's store calls ------------------------------------------------------

Call = tuple[Any, str, tuple[Any, ...], dict[str, Any]]  # (object, method, args, kwargs)
_RECORDED_CLASSES: tuple[type, ...] = (LinkQueries, HealthTotals, WorkerProgress)
_recording = threading.local()


def _install_recorder() -> None:
    """Wrap the read side's public methods so a page run's top-level calls are recorded."""
    for cls in _RECORDED_CLASSES:
        if getattr(cls, "_bench_recorder", False):
            continue
        for name in dir(cls):
            method = getattr(cls, name)
            if name.startswith("_") or not callable(method) or isinstance(method, property):
                continue
            setattr(cls, name, _recorded(name, method))
        cls._bench_recorder = True  # type: ignore[attr-defined]


def _recorded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        # AppTest runs the script in a thread of its own: the switch is process-wide (one page
        # runs at a time here); the nesting depth is per thread.
        calls = _RECORDER.calls if _RECORDER.active else None
        depth = getattr(_recording, "depth", 0)
        if calls is not None and depth == 0:
            calls.append((self, name, args, kwargs))
        _recording.depth = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            _recording.depth = depth

    return wrapper


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.active = False


_RECORDER = _Recorder()


@contextmanager
def recording() -> Iterator[list[Call]]:
    _RECORDER.calls = []
    _RECORDER.active = True
    try:
        yield _RECORDER.calls
    finally:
        _RECORDER.active = False


def replay(calls: list[Call]) -> float:
    started = time.perf_counter()
    for owner, name, args, kwargs in calls:
        getattr(owner, name)(*args, **kwargs)
    return time.perf_counter() - started


# -- the page through AppTest --------------------------------------------------------------


@dataclass
class Samples:
    page: list[float] = field(default_factory=list)
    data: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    # The step of each run ("health=stale", "q=Credit"…), to tell where a tail comes from.
    steps: list[str] = field(default_factory=list)


def _configure_environment(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("LINKDESK_SIGNING_KEY", "bench-signing-key-" + "x" * 32)
    # The pages read the store only; MoneyKit is never called while drawing them.
    os.environ.setdefault("MONEYKIT_BASE_URL", "http://localhost:9")
    os.environ.setdefault("MONEYKIT_CONNECT_HOST", "http://localhost:9")
    os.environ.setdefault("LINKDESK_STAFF_USER", "bench-agent")
    os.environ["LINKDESK_RUN_WORKER"] = "false"


def _new_session() -> AppTest:
    app = AppTest.from_file(DASHBOARD, default_timeout=600)
    app.session_state[ACTOR_KEY] = Actor("bench-admin", Role.ADMIN)
    # A browser opening /links: before the first run AppTest names a page by its file.
    app.switch_page("app_pages/links.py")
    return app


def _check(app: AppTest) -> AppTest:
    if app.exception:
        raise RuntimeError(f"the Links page failed: {app.exception[0].value}")
    if not app.dataframe:
        raise RuntimeError("the Links page drew no table")
    return app


class PageBench:
    def __init__(self, queries: LinkQueries, samples: dict[str, Samples]) -> None:
        self.queries = queries
        self.samples = samples

    def timed(self, interaction: str, step: Callable[[], AppTest], label: str = "") -> AppTest:
        with recording() as calls:
            started = time.perf_counter()
            app = step()
            elapsed = time.perf_counter() - started
            recorded = list(calls)
        _check(app)
        bucket = self.samples.setdefault(interaction, Samples())
        bucket.page.append(elapsed)
        bucket.data.append(replay(recorded))
        bucket.steps.append(label)
        for _, name, _, _ in recorded:
            bucket.calls[name] = bucket.calls.get(name, 0) + 1
        return app


def _button(app: AppTest, label: str) -> Any:
    return next(button for button in app.button if button.label == label)


def _without_filters(app: AppTest) -> AppTest:
    """Clear what a loop of any length may have left set: the steps after it (next page, sort)
    need the whole list, and "Next page" is disabled on a list that fits one page."""
    for key in ("links.filter.health", "links.filter.error", "links.filter.institution"):
        if app.selectbox(key=key).value is not None:
            app = app.selectbox(key=key).set_value(None).run()
    for key in ("links.filter.customer", "links.filter.q"):
        if app.text_input(key=key).value:
            app = app.text_input(key=key).input("").run()
    return app


def run_page_interactions(
    queries: LinkQueries, runs: int, first_loads: int, depth: int, institution_ids: list[str]
) -> dict[str, Samples]:
    samples: dict[str, Samples] = {}
    bench = PageBench(queries, samples)
    for _ in range(first_loads):
        bench.timed("first load", _new_session().run)

    app = _check(_new_session().run())
    big, small = institution_ids[0], institution_ids[-1]
    filter_steps: list[tuple[str, Any]] = [
        ("links.filter.health", "needs_relink"),
        ("links.filter.health", "stale"),
        ("links.filter.health", None),
        ("links.filter.error", "auth_expired"),
        ("links.filter.error", "institution_error"),
        ("links.filter.error", None),
        ("links.filter.institution", big),
        ("links.filter.institution", small),
        ("links.filter.institution", None),
        ("links.filter.health", "healthy"),
        ("links.filter.health", None),
    ]
    for index in range(runs):
        key, value = filter_steps[index % len(filter_steps)]
        label = f"{key.rsplit('.', 1)[-1]}={value}"
        app = bench.timed("filter", app.selectbox(key=key).set_value(value).run, label)
    app = _without_filters(app)

    pages_deep = 0
    for _ in range(runs):
        if pages_deep >= depth:
            app = _button(app, "← First page").click().run()
            pages_deep = 0
        app = bench.timed(
            "next page", _button(app, "Next page →").click().run, f"page {pages_deep + 2}"
        )
        pages_deep += 1
    app = _button(app, "← First page").click().run()

    search_steps: list[tuple[str, str]] = [
        ("links.filter.customer", "cust_00012"),
        ("links.filter.customer", ""),
        ("links.filter.q", "mk_3a7"),
        ("links.filter.q", "Credit"),
        ("links.filter.q", "Harbor"),
        ("links.filter.q", ""),
    ]
    for index in range(runs):
        key, text = search_steps[index % len(search_steps)]
        label = f"{key.rsplit('.', 1)[-1]}={text!r}"
        app = bench.timed("search", app.text_input(key=key).input(text).run, label)
    app = _without_filters(app)

    sort_steps = ["link_id", "institution", "customer", "state", "updated_asc", "updated_desc"]
    for index in range(runs):
        value = sort_steps[index % len(sort_steps)]
        app = bench.timed("sort", app.selectbox(key="links.sort").set_value(value).run, value)
    return samples


# -- the naive page ------------------------------------------------------------------------


def naive_page(url: str) -> None:
    """Every link with its institution into pandas, then st.dataframe (AppTest script)."""
    import pandas as pd
    import sqlalchemy as sa
    import streamlit as st

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            frame = pd.read_sql_query(
                sa.text(
                    "SELECT i.avatar AS logo, i.name AS institution, i.color AS colour, "
                    "l.customer_id AS customer, l.state, l.error_code AS error, "
                    "coalesce(l.products_refreshed_at, l.last_synced_at, l.updated_at) "
                    "AS last_update, l.link_id "
                    "FROM links l JOIN institutions i ON i.institution_id = l.institution_id "
                    "ORDER BY l.updated_at DESC, l.link_id DESC"
                ),
                connection,
            )
    finally:
        engine.dispose()
    st.caption(f"{len(frame)} links")
    st.dataframe(frame, hide_index=True)


def run_naive(url: str, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        app = AppTest.from_function(naive_page, args=(url,), default_timeout=900)
        started = time.perf_counter()
        app.run()
        seconds.append(time.perf_counter() - started)
        if app.exception:
            raise RuntimeError(f"the naive page failed: {app.exception[0].value}")
        del app
        gc.collect()
    return seconds


def naive_runs_for(size: int, wanted: int | None) -> int:
    if wanted is not None:
        return wanted
    if size <= 10_000:
        return 20
    if size <= 100_000:
        return 5
    return 3


# -- reporting -----------------------------------------------------------------------------


def _ms(values: list[float], fraction: float) -> float:
    return percentile(sorted(values), fraction) * 1000


@dataclass
class Result:
    backend: str
    size: int
    samples: dict[str, Samples]
    naive: list[float]
    store: SeededStore


def print_result(result: Result) -> list[str]:
    """Print one size x backend block; return the verdict lines of its targets."""
    naive_p50 = _ms(result.naive, 0.5)
    naive_p95 = _ms(result.naive, 0.95)
    print(
        f"\n{result.backend} · {result.size:,} links "
        f"(seeded in {result.store.seed_seconds:.0f} s"
        f"{', now' if result.store.seeded_now else ', cached'})"
    )
    print(
        f"{'interaction':<12} {'n':>3}  {'page p50':>9} {'page p95':>9}  {'data p50':>9} "
        f"{'data p95':>9}  {'naive p50':>10} {'naive p95':>10}  {'naive/page':>10}"
    )
    verdicts = []
    for name, meaning in COLD_STARTS.items():
        cold = result.samples.get(f"cold start: {name}")
        if cold is not None:
            cold_ms = cold.page[0] * 1000
            print(f"first load of {meaning}: {cold_ms:.0f} ms")
            met = cold_ms < TARGET_FIRST_LOAD_MS
            verdicts.append(
                f"{result.backend} {result.size:,} first load after {name} {cold_ms:.0f} ms "
                f"< {TARGET_FIRST_LOAD_MS:.0f} ms: {'met' if met else 'NOT met'}"
            )
    target = TARGET_P95_MS.get(result.size)
    for interaction in INTERACTIONS:
        bucket = result.samples.get(interaction)
        if bucket is None:
            continue
        page_p50, page_p95 = _ms(bucket.page, 0.5), _ms(bucket.page, 0.95)
        data_p50, data_p95 = _ms(bucket.data, 0.5), _ms(bucket.data, 0.95)
        ratio = naive_p50 / page_p50 if page_p50 else float("nan")
        print(
            f"{interaction:<12} {len(bucket.page):>3}  {page_p50:>9.1f} {page_p95:>9.1f}  "
            f"{data_p50:>9.1f} {data_p95:>9.1f}  {naive_p50:>10.1f} {naive_p95:>10.1f}  "
            f"{ratio:>9.1f}x"
        )
        if interaction == "first load":
            met = page_p95 < TARGET_FIRST_LOAD_MS
            verdicts.append(
                f"{result.backend} {result.size:,} first load p95 {page_p95:.0f} ms "
                f"< {TARGET_FIRST_LOAD_MS:.0f} ms: {'met' if met else 'NOT met'}"
            )
        elif target is not None:
            for label, value in (("page", page_p95), ("data", data_p95)):
                met = value <= target
                verdicts.append(
                    f"{result.backend} {result.size:,} {interaction} {label} p95 {value:.1f} ms "
                    f"<= {target:.0f} ms: {'met' if met else 'NOT met'}"
                )
    for interaction in INTERACTIONS[1:]:
        bucket = result.samples.get(interaction)
        if bucket is None:
            continue
        slowest: dict[str, float] = {}
        for label, seconds in zip(bucket.steps, bucket.page, strict=True):
            slowest[label] = max(slowest.get(label, 0.0), seconds)
        worst = sorted(slowest.items(), key=lambda item: item[1], reverse=True)[:3]
        print(
            f"slowest {interaction} steps (page, max): "
            + ", ".join(f"{label} {seconds * 1000:.0f} ms" for label, seconds in worst)
        )
    calls = result.samples["filter"].calls if "filter" in result.samples else {}
    runs = len(result.samples["filter"].page) if "filter" in result.samples else 1
    per_run = ", ".join(f"{name} x{count / runs:g}" for name, count in sorted(calls.items()))
    print(f"store calls per filter-change run: {per_run}")
    print(f"naive: {len(result.naive)} runs")
    return verdicts


def _first_load_of_a_new_process() -> float:
    """A process starting: services built, then the first session's page (not counted in the
    interactions; printed on their own, see :data:`COLD_STARTS`)."""
    get_services.clear()
    started = time.perf_counter()
    _check(_new_session().run())
    return time.perf_counter() - started


# The first page of a process that has just started, in the two cases there are.
COLD_STARTS = {
    "new store": "first start on this store (no summary stored: it counts every link first)",
    "restart": "a restart (the summary the previous process stored is shown while it recounts)",
}


def bench_one(
    store: SeededStore, runs: int, first_loads: int, depth: int, naive_runs: int
) -> Result:
    _configure_environment(store.url)
    seeded = Store(create_engine(store.url))
    forget_stored_summary(seeded)
    seeded.dispose()
    cold = {"new store": _first_load_of_a_new_process()}
    get_services().close()  # lets its background count finish and store the summary
    cold["restart"] = _first_load_of_a_new_process()
    services = get_services()
    try:
        queries = services.links
        institutions = sorted(
            queries.list_institutions(), key=lambda row: row.link_count, reverse=True
        )
        ids = [row.institution_id for row in institutions if row.link_count]
        samples = run_page_interactions(queries, runs, first_loads, depth, ids)
    finally:
        services.close()
        get_services.clear()
    samples |= {f"cold start: {name}": Samples(page=[seconds]) for name, seconds in cold.items()}
    naive = run_naive(store.url, naive_runs)
    return Result(store.backend, store.size, samples, naive, store)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", type=parse_backends, default=["sqlite", "postgresql"])
    parser.add_argument("--runs", type=int, default=50, help="runs per interaction")
    parser.add_argument("--first-loads", type=int, default=20)
    parser.add_argument("--depth", type=int, default=10, help="pages deep for next page")
    parser.add_argument("--naive-runs", type=int, default=None, help="default: by size")
    parser.add_argument("--reseed", action="store_true", help="seed the stores again")
    args = parser.parse_args(argv)

    print(machine_line())
    share_script_cache()
    _install_recorder()
    verdicts: list[str] = []
    for backend in args.backends:
        for size in args.sizes:
            store = seeded_store(size, backend, force=args.reseed)
            result = bench_one(
                store,
                args.runs,
                args.first_loads,
                args.depth,
                naive_runs_for(size, args.naive_runs),
            )
            verdicts.extend(print_result(result))
    print("\ntargets (p95 <= 50 ms at 100k, <= 100 ms at 1M; first load < 1 s):")
    for line in verdicts:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
