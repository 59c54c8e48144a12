"""Memory of the dashboard process with a million links in the store and five open sessions.

Starts the real process (``streamlit run server.py``, headless, on a free port) on the SQLite
store of ``bench/seed.py`` (1M links by default), with the sync worker off
(``LINKDESK_RUN_WORKER=false``) and MoneyKit pointed at a closed localhost port: drawing the pages
reads the store only. Then five Chromium sessions (Debian's ``/usr/bin/chromium`` through
Playwright) each sign in, open the Links page, wait for its table, move to the next page, and
open the Overview and the Activity page. The server's resident memory (``VmRSS`` of the process
and any children, from ``/proc``) is printed at idle, after the first session, after all five,
and the peak seen by a sampler every 0.1 s.

    .venv/bin/python bench/memory.py                 # 1M links, 5 sessions
    .venv/bin/python bench/memory.py --size 100k --sessions 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import free_port, machine_line  # noqa: E402
from bench.seed import parse_sizes, seeded_store  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
TARGET_MB = 400.0
USER = "bench-admin"
PASSWORD = "bench-password-" + "m" * 12  # a throwaway account of this run only


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            found.extend(int(child) for child in children.read_text().split())
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


def process_tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, in MB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        total += _rss_kb(current)
        pending.extend(_children(current))
    return total / 1024


class PeakSampler:
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, process_tree_rss_mb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the dashboard exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError("the dashboard did not become healthy")


def _settle(seconds: float = 2.0) -> None:
    time.sleep(seconds)


def _wait_idle(page: object) -> None:
    """Until the app's script run has finished (Streamlit marks it on the app's root)."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')


def _nav_link(page: object, title: str) -> Any:
    """The sidebar's link to a page (in-app navigation keeps the browser session)."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    return page.get_by_test_id("stSidebar").get_by_role("link", name=title, exact=True)


def _sign_in(page: object, attempts: int = 3) -> None:
    """Fill and send the sign-in form; again when a rerun of the page redrew the form under the
    click (a busy server can still be finishing the page's first run), which loses the click."""
    from playwright.sync_api import Page
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    assert isinstance(page, Page)
    sidebar = page.get_by_test_id("stSidebar")
    for attempt in range(1, attempts + 1):
        page.get_by_label("Username").fill(USER)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        try:
            sidebar.wait_for(state="visible", timeout=30_000 if attempt < attempts else 180_000)
            return
        except PlaywrightTimeout:
            if attempt == attempts:
                raise
            if not page.get_by_role("button", name="Sign in").is_visible():
                sidebar.wait_for(state="visible", timeout=180_000)  # taken, the server is slow
                return
            print(f"sign-in not taken (attempt {attempt}); sending the form again", flush=True)
            _wait_idle(page)


def open_session(browser: object, base_url: str) -> tuple[object, float]:
    """A signed-in browser session that has drawn Links (two pages), Overview and Activity."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    started = time.perf_counter()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(180_000)
    expect.set_options(timeout=180_000)
    page.goto(f"{base_url}/links")
    _wait_idle(page)
    _sign_in(page)
    expect(page.get_by_text("matching links")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    _wait_idle(page)
    page.get_by_role("button", name="Next page →").click()
    expect(page.get_by_text("showing 51–100")).to_be_visible()
    _wait_idle(page)
    for title, marker in (("Overview", "stMetric"), ("Activity", "stMain")):
        _nav_link(page, title).click()
        expect(page.get_by_test_id(marker).first).to_be_visible()
        _wait_idle(page)
    # Back on the Links page: the session stays there, as a support agent's tab would.
    _nav_link(page, "Links").click()
    expect(page.get_by_text("matching links")).to_be_visible()
    _wait_idle(page)
    return context, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=lambda text: parse_sizes(text)[0], default=1_000_000)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: run `make chromium` first")
        return 1

    print(machine_line())
    store = seeded_store(args.size, "sqlite", force=args.reseed)
    port = free_port()
    base_url = f"http://localhost:{port}"
    work = Path(tempfile.mkdtemp(prefix="linkdesk-memory-"))
    env = {
        **os.environ,
        "DATABASE_URL": store.url,
        "LINKDESK_RUN_WORKER": "false",
        # Drawing the pages never calls MoneyKit; this port has nothing listening.
        "MONEYKIT_BASE_URL": f"http://localhost:{free_port()}",
        "MONEYKIT_CONNECT_HOST": f"http://localhost:{free_port()}",
        "MONEYKIT_CLIENT_ID": "bench_client",
        "MONEYKIT_CLIENT_SECRET": "bench_secret",
        "LINKDESK_SIGNING_KEY_FILE": str(work / "signing.key"),
        "LINKDESK_USERS": json.dumps(
            {
                USER: {
                    "role": "admin",
                    "password_sha256": hashlib.sha256(PASSWORD.encode()).hexdigest(),
                }
            }
        ),
    }
    log_path = work / "dashboard.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                str(REPO_ROOT / ".venv" / "bin" / "streamlit"),
                "run",
                "server.py",
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    contexts: list[object] = []
    try:
        _wait_healthy(f"{base_url}/_stcore/health", server)
        _settle(3.0)
        idle = process_tree_rss_mb(server.pid)
        print(f"store: {store.size:,} links ({store.url.split('/')[-1]}), server pid {server.pid}")
        print(f"RSS at idle (started, no session): {idle:.0f} MB")
        from playwright.sync_api import sync_playwright

        with PeakSampler(server.pid) as sampler, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            after: list[float] = []
            for number in range(1, args.sessions + 1):
                context, seconds = open_session(browser, base_url)
                contexts.append(context)
                _settle(2.0)
                rss = process_tree_rss_mb(server.pid)
                after.append(rss)
                print(
                    f"RSS after session {number} ({seconds:.1f} s to draw its pages): {rss:.0f} MB"
                )
            _settle(5.0)
            settled = process_tree_rss_mb(server.pid)
            print(f"RSS with {args.sessions} sessions open, 5 s later: {settled:.0f} MB")
            for context in contexts:
                context.close()  # type: ignore[attr-defined]
            browser.close()
        peak = max(sampler.peak, settled, *after)
        print(f"peak RSS (sampled every 0.1 s): {peak:.0f} MB")
        verdict = "met" if peak < TARGET_MB else "NOT met"
        print(f"target peak < {TARGET_MB:.0f} MB with {args.sessions} sessions: {verdict}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
