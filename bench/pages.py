"""Server time of every dashboard page at the demo world's size (issue: p95 per page).

Builds the demo world exactly as `make run` does (a `python -m sandbox` process, then Linkdesk's
demo reset: discovery through the API and the synthetic history) in a temporary SQLite store,
then runs each page through Streamlit's `AppTest`, signed in as an admin: the first run of a fresh
session, then reruns of that session (what a click or a filter change costs). The time is the
whole script run on the server: queries, rendering to protobuf, widgets. Browser rendering and
the network are not in it.

    .venv/bin/python bench/pages.py [--links 2000] [--runs 40] [--pages overview,outreach]

With ``--sizes`` (``10k,100k,1M``) the pages run instead on the stores ``bench/seed.py`` builds
(links with nine months of history, on ``--backends sqlite,postgresql``), against the issue's
targets: every page's first view ≤ 1 s and rerun p95 ≤ 100 ms, and the first page of the first
process ever on the store (its landing page, the Overview) < 1 s. ``--profile PAGE`` prints where
one rerun of that page spends its time (cProfile, the 25 largest cumulative entries).

Prints p50/p95/max per page. Exits non-zero if a page raised or showed an exception.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from streamlit.components.v2.component_manager import BidiComponentManager
from streamlit.runtime.scriptrunner.script_runner import ScriptRunner
from streamlit.testing.v1 import AppTest

from bench._common import (
    CLIENT_ID,
    CLIENT_SECRET,
    REPO_ROOT,
    SandboxProcess,
    latency_line,
    machine_line,
    percentile,
)
from bench.seed import parse_backends, parse_sizes, seeded_store
from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import build_services, prepare_to_serve
from linkdesk.settings import Settings
from linkdesk.store.engine import Store, create_engine
from linkdesk.store.health_totals import forget_stored_summary
from linkdesk.store.models import Link
from ui.auth import ACTOR_KEY
from ui.wiring import get_services

ADMIN = Actor("bench.admin", Role.ADMIN)


def _environment(sandbox_url: str, database_url: str, links: int, folder: Path) -> None:
    os.environ.update(
        {
            "MONEYKIT_BASE_URL": sandbox_url,
            "MONEYKIT_CONNECT_HOST": sandbox_url,
            "MONEYKIT_CLIENT_ID": CLIENT_ID,
            "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
            "DATABASE_URL": database_url,
            "LINKDESK_DEMO_MODE": "true",
            "LINKDESK_DEMO_LINKS": str(links),
            "LINKDESK_SIGNING_KEY_FILE": str(folder / "signing.key"),
            "LINKDESK_RUN_WORKER": "false",
        }
    )


FIRST_VIEW_TARGET = 1.0
RERUN_P95_TARGET = 0.100


def _unhealthy_link(store: Store) -> tuple[str, str]:
    """(a link id in auth_expired, its customer id): what a support agent opens."""
    with store.read() as session:
        link_id, customer = session.execute(
            sa.select(Link.link_id, Link.customer_id)
            .where(Link.error_code == "auth_expired", Link.customer_id.is_not(None))
            .order_by(Link.link_id)
            .limit(1)
        ).one()
    return str(link_id), str(customer)


def _build_world(links: int) -> tuple[str, str, float]:
    """(an unhealthy link id, its customer id, seconds the build took)."""
    services = build_services(Settings())
    try:
        started = time.perf_counter()
        report = services.demo.reset(ADMIN)
        seconds = time.perf_counter() - started
        if report.links != links or report.discovery_failed:
            raise SystemExit(f"demo world incomplete: {report.summary}")
        print(f"demo world: {report.summary}")
        return (*_unhealthy_link(services.store), seconds)
    finally:
        services.close()


def _page(path: str, **query: str) -> Callable[[], AppTest]:
    def make() -> AppTest:
        app = AppTest.from_file(str(REPO_ROOT / "dashboard.py"), default_timeout=120)
        app.session_state[ACTOR_KEY] = ADMIN
        for name, value in query.items():
            app.query_params[name] = value
        app.switch_page(f"app_pages/{path}.py")
        return app

    return make


def _pages(link_id: str, customer: str) -> dict[str, Callable[[], AppTest]]:
    return {
        "overview": _page("overview"),
        "links": _page("links"),
        "links filtered": _page("links", error="auth_expired"),
        "link detail": _page("links", link=link_id),
        "customer": _page("customer", customer=customer),
        "funnel": _page("funnel"),
        "activity": _page("activity"),
        "webhooks": _page("webhooks"),
        "connect": _page("connect"),
        "demo": _page("demo"),
        "alerts": _page("alerts"),
        "outreach": _page("outreach", error="auth_expired"),
        "outreach settings": _page("outreach_admin"),
        "staff sessions": _page("staff_sessions"),
    }


def _timed_run(app: AppTest) -> float:
    started = time.perf_counter()
    app.run()
    return time.perf_counter() - started


def _measure(
    name: str, make: Callable[[], AppTest], runs: int, new_session_every: int = 10
) -> tuple[list[float], list[float]] | None:
    """(first views, reruns) in seconds; None when the page showed an exception."""
    first: list[float] = []
    reruns: list[float] = []
    app = make()
    for index in range(max(runs, 2)):
        if index % new_session_every == 0:
            app = make()  # a new session now and then: first loads are timed too
            first.append(_timed_run(app))
        else:
            reruns.append(_timed_run(app))
        if app.exception:
            print(f"{name}: the page showed an exception: {app.exception[0].value}")
            return None
    print(latency_line(f"{name:<18} rerun", reruns))
    print(latency_line(f"{name:<18} first", first))
    return first, reruns


def _profile(make: Callable[[], AppTest]) -> str:
    """Where one rerun of a warm session spends its time. The script runs in a thread of its
    own, so the profiler is switched on inside it, around the script runner's one run."""
    profiler = cProfile.Profile()
    original = ScriptRunner._run_script

    def profiled(runner: ScriptRunner, rerun_data: Any) -> None:
        profiler.enable()
        try:
            original(runner, rerun_data)
        finally:
            profiler.disable()

    app = make()
    app.run()
    with mock.patch.object(ScriptRunner, "_run_script", profiled):
        app.run()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
    return out.getvalue()


def _page_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(_pages("", "")))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown pages: {', '.join(unknown)}")
    return names


def _chosen(pages: dict[str, Callable[[], AppTest]], names: list[str] | None) -> dict[str, Any]:
    return pages if names is None else {name: pages[name] for name in names}


def _start_as_the_server_does() -> None:
    """What ``server.py`` does before it serves anyone: Streamlit's runtime discovers the
    installed components, the lifespan builds the services and prepares them."""
    BidiComponentManager().discover_and_register_components(start_file_watching=False)
    prepare_to_serve(get_services())


def _bench_seeded(
    size: int, backend: str, runs: int, profile: str | None, names: list[str] | None
) -> tuple[bool, list[str]]:
    """Every page on a seeded store; (no page failed, the summary lines)."""
    store = seeded_store(size, backend)
    os.environ["DATABASE_URL"] = store.url
    seeded = Store(create_engine(store.url))
    link_id, customer = _unhealthy_link(seeded)
    forget_stored_summary(seeded)  # the first process ever on this store: nothing counted yet
    seeded.dispose()
    label = f"{backend} {size:,}"
    get_services.clear()
    _start_as_the_server_does()
    cold = _timed_run(_page("overview")())  # the landing page, as soon as the server is up
    lines = [
        f"{label}: first page of a new process (Overview) {cold * 1000:.0f} ms "
        f"{'PASS' if cold < FIRST_VIEW_TARGET else 'MISS'}"
    ]
    pages = _pages(link_id, customer)
    ok = True
    for name, make in _chosen(pages, names).items():
        measured = _measure(f"{label} {name}", make, runs, new_session_every=5)
        if measured is None:
            ok = False
            continue
        first, reruns = (sorted(values) for values in measured)
        first_p50, rerun_p95 = percentile(first, 0.5), percentile(reruns, 0.95)
        verdict = (
            "PASS" if first_p50 <= FIRST_VIEW_TARGET and rerun_p95 <= RERUN_P95_TARGET else "MISS"
        )
        lines.append(
            f"{label} {name:<15} first p50 {first_p50 * 1000:7.0f} ms (max {first[-1] * 1000:.0f})"
            f" · rerun p50 {percentile(reruns, 0.5) * 1000:6.0f} ms p95 {rerun_p95 * 1000:6.0f} ms"
            f"  {verdict}"
        )
    if profile is not None:
        print(f"== profile of one rerun of {profile!r} ({label})")
        print(_profile(pages[profile]))
    get_services().close()
    get_services.clear()
    return ok, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=2000, help="demo world size (2000)")
    parser.add_argument("--runs", type=int, default=40, help="runs per page (40)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="seeded: 10k,100k,1M")
    parser.add_argument("--backends", type=parse_backends, default=["sqlite"])
    parser.add_argument("--profile", default=None, help="seeded: profile one rerun of PAGE")
    parser.add_argument(
        "--pages", type=_page_names, default=None, help="only these pages (comma-separated names)"
    )
    args = parser.parse_args()

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-pages-") as tmp:
        folder = Path(tmp)
        sandbox = SandboxProcess(demo_links=10)
        sandbox.start(folder / "sandbox.log")
        try:
            _environment(sandbox.url, f"sqlite:///{folder / 'linkdesk.db'}", args.links, folder)
            if args.sizes:
                ok, lines = True, list[str]()
                for backend in args.backends:
                    for size in args.sizes:
                        one_ok, one_lines = _bench_seeded(
                            size, backend, args.runs, args.profile, args.pages
                        )
                        ok, lines = ok and one_ok, lines + one_lines
                print("\n".join(["== targets: first view <= 1 s, rerun p95 <= 100 ms", *lines]))
            else:
                link_id, customer, build_s = _build_world(args.links)
                print(f"build: {build_s:.1f} s for {args.links:,} links")
                get_services.clear()
                pages = _pages(link_id, customer)
                ok = all(
                    _measure(name, make, args.runs)
                    for name, make in _chosen(pages, args.pages).items()
                )
        finally:
            sandbox.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
