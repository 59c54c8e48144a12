"""Server time of every dashboard page at the demo world's size (issue: p95 per page).

Builds the demo world exactly as `make run` does (a `python -m sandbox` process, then Linkdesk's
demo reset: discovery through the API and the synthetic history) in a temporary SQLite store,
then runs each page through Streamlit's `AppTest`, signed in as an admin: the first run of a fresh
session, then reruns of that session (what a click or a filter change costs). The time is the
whole script run on the server: queries, rendering to protobuf, widgets. Browser rendering and
the network are not in it.

    .venv/bin/python bench/pages.py [--links 2000] [--runs 40]

Prints p50/p95/max per page. Exits non-zero if a page raised or showed an exception.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from bench._common import (
    CLIENT_ID,
    CLIENT_SECRET,
    REPO_ROOT,
    SandboxProcess,
    latency_line,
    machine_line,
)
from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import build_services
from linkdesk.settings import Settings
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
        with services.store.read() as session:
            link_id, customer = session.execute(
                sa.select(Link.link_id, Link.customer_id)
                .where(Link.error_code == "auth_expired", Link.customer_id.is_not(None))
                .order_by(Link.link_id)
                .limit(1)
            ).one()
        return str(link_id), str(customer), seconds
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


def _measure(name: str, make: Callable[[], AppTest], runs: int) -> bool:
    first: list[float] = []
    reruns: list[float] = []
    app = make()
    for index in range(runs):
        if index % 10 == 0:
            app = make()  # a new session now and then: first loads are timed too
            started = time.perf_counter()
            app.run()
            first.append(time.perf_counter() - started)
        else:
            started = time.perf_counter()
            app.run()
            reruns.append(time.perf_counter() - started)
        if app.exception:
            print(f"{name}: the page showed an exception: {app.exception[0].value}")
            return False
    print(latency_line(f"{name:<18} rerun", reruns))
    print(latency_line(f"{name:<18} first", first))
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--links", type=int, default=2000, help="demo world size (2000)")
    parser.add_argument("--runs", type=int, default=40, help="runs per page (40)")
    args = parser.parse_args()

    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="linkdesk-bench-pages-") as tmp:
        folder = Path(tmp)
        sandbox = SandboxProcess(demo_links=10)
        sandbox.start(folder / "sandbox.log")
        try:
            _environment(sandbox.url, f"sqlite:///{folder / 'linkdesk.db'}", args.links, folder)
            link_id, customer, build_s = _build_world(args.links)
            print(f"build: {build_s:.1f} s for {args.links:,} links")
            get_services.clear()
            pages = {
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
            }
            ok = all(_measure(name, make, args.runs) for name, make in pages.items())
        finally:
            sandbox.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
