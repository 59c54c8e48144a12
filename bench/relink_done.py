"""Done on Connect's success screen → the confirmation on the dashboard, measured in the browser.

Starts the sandbox (a small demo world) and the dashboard (`server.py`) on free localhost ports,
then, in Debian's chromium at 1440x900, relinks one expired link after another the way a support
agent does: Links → the link → Relink → Credentials Bank `user_good`/`pass_good` → Done. Before
each Done the script installs listeners in both documents and reads, on the browser's clock
(`performance.timeOrigin + performance.now()`, comparable across the Connect frame and the page):

* **done**: the pointer goes down on Done (inside Connect's frame);
* **connect message**: the page receives Connect's `relink.complete` message;
* **frame gone**: the launcher has removed Connect's frame (its own close);
* **confirmation**: the success message ("… is connected again") is in the page.

The first relink warms the process up and is not counted. A link is broken again between runs
through the sandbox (`POST /links/{id}/reset`, which also sends the webhook).

    .venv/bin/python bench/relink_done.py [--runs 15] [--root PATH]

`--root` runs another checkout of Linkdesk (e.g. an export of main) with the same browser steps.
Prints p50/p95/max of Done → confirmation and of each part. Exits non-zero if a relink fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import sqlalchemy as sa
from playwright.sync_api import Page, ViewportSize, expect, sync_playwright

from bench._common import (
    CLIENT_ID,
    CLIENT_SECRET,
    REPO_ROOT,
    free_port,
    latency_line,
    machine_line,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AGENT, PASSWORD = "bench-agent", "bench-agent-password"
CONNECT_FRAME = "#moneykit-connect-frame"

# Installed in the page before Done: when Connect's message arrives, when its frame goes, when
# the confirmation shows. The pointer-down on Done is reported by the frame (see FRAME_PROBE).
PAGE_PROBE = """() => {
  const now = () => performance.timeOrigin + performance.now();
  const marks = { done: null, message: null, frameGone: null, confirmation: null };
  window.__relinkMarks = marks;
  window.addEventListener('message', (event) => {
    const data = event.data || {};
    if (data.__linkdeskBenchDone) { marks.done = data.__linkdeskBenchDone; }
    if (data.type === 'relink.complete' && marks.message === null) { marks.message = now(); }
  });
  const observer = new MutationObserver(() => {
    if (marks.frameGone === null && !document.querySelector('#moneykit-connect-frame')) {
      marks.frameGone = now();
    }
    if (marks.confirmation === null) {
      for (const alert of document.querySelectorAll('[data-testid=stAlertContentSuccess]')) {
        if (alert.textContent.includes('is connected again')) { marks.confirmation = now(); }
      }
    }
    if (marks.frameGone !== null && marks.confirmation !== null) { observer.disconnect(); }
  });
  observer.observe(document.body, { childList: true, subtree: true, characterData: true });
}"""
FRAME_PROBE = """(body) => {
  body.ownerDocument.addEventListener('pointerdown', () => {
    parent.postMessage({ __linkdeskBenchDone: performance.timeOrigin + performance.now() }, '*');
  }, { capture: true, once: true });
}"""


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


@contextmanager
def running(root: Path, folder: Path, links: int) -> Iterator[tuple[str, str, str]]:
    """Sandbox and dashboard of the checkout at ``root``; yields their URLs and the store's."""
    sandbox_port, dashboard_port = free_port(), free_port()
    sandbox = f"http://localhost:{sandbox_port}"
    dashboard = f"http://localhost:{dashboard_port}"
    database = f"sqlite:///{folder / 'linkdesk.db'}"
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "MONEYKIT_CLIENT_ID": CLIENT_ID,
        "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
        "MONEYKIT_BASE_URL": sandbox,
        "MONEYKIT_CONNECT_HOST": sandbox,
        "DATABASE_URL": database,
        "LINKDESK_REDIRECT_URI": f"{dashboard}/oauth_return",
        "LINKDESK_WEBHOOK_URL": f"{dashboard}/webhooks/moneykit",
        "MONEYKIT_DEMO_WEBHOOK_URL": f"{dashboard}/webhooks/moneykit",
        "LINKDESK_SIGNING_KEY_FILE": str(folder / "signing.key"),
        "LINKDESK_USERS": json.dumps(
            {
                AGENT: {
                    "role": "support",
                    "password_sha256": hashlib.sha256(PASSWORD.encode()).hexdigest(),
                }
            }
        ),
    }
    log = (folder / "processes.log").open("wb")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        command = [sys.executable, "-m", "sandbox", "--port", str(sandbox_port)]
        processes.append(
            subprocess.Popen(
                [*command, "--demo-links", str(links)], cwd=root, env=env, stdout=log, stderr=log
            )
        )
        _wait_for(f"{sandbox}/_sandbox/health", processes[0])
        for setup in (("migrate",), ("sync",)):
            subprocess.run(
                [sys.executable, "-m", "linkdesk", *setup],
                cwd=root,
                env=env,
                check=True,
                stdout=log,
                stderr=log,
            )
        processes.append(
            subprocess.Popen(
                [
                    *(sys.executable, "-m", "streamlit", "run", "server.py"),
                    *("--server.port", str(dashboard_port), "--server.headless", "true"),
                    *("--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"),
                ],
                cwd=root,
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        _wait_for(f"{dashboard}/_stcore/health", processes[1])
        yield sandbox, dashboard, database
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def _sandbox_post(sandbox: str, path: str) -> None:
    with httpx.Client(base_url=sandbox) as client:
        token = client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ).json()["access_token"]
        client.post(path, headers={"Authorization": f"Bearer {token}"}).raise_for_status()


def _link_state(engine: sa.Engine, link_id: str) -> tuple[str, str | None]:
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT state, error_code FROM links WHERE link_id = :id"), {"id": link_id}
        ).one()
    return str(row[0]), row[1]


def _sign_in(page: Page, url: str) -> None:
    page.goto(url)
    button = page.get_by_role("button", name="Sign in")
    sidebar = page.get_by_test_id("stSidebar")
    expect(button.or_(sidebar)).to_be_visible()
    if button.is_visible():
        page.get_by_label("Username").fill(AGENT)
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        button.click()
        expect(sidebar).to_be_visible()


def relink_once(page: Page, dashboard: str, link_id: str) -> dict[str, float]:
    """One relink through the real Connect flow; the browser's marks in milliseconds."""
    _sign_in(page, f"{dashboard}/links?link={link_id}")
    page.get_by_role("button", name="Relink", exact=True).click()
    expect(page.locator(CONNECT_FRAME)).to_be_visible()
    frame = page.frame_locator(CONNECT_FRAME)
    username = frame.get_by_label("Username")
    link_accounts = frame.get_by_role("button", name="Link accounts")
    done = frame.get_by_role("button", name="Done")
    # Which screens Connect shows depends on the bank: credentials, accounts, or done at once.
    expect(username.or_(link_accounts).or_(done)).to_be_visible()
    if username.is_visible():
        username.fill("user_good")
        frame.get_by_label("Password").fill("pass_good")
        frame.get_by_role("button", name=re.compile("^(Continue|Submit)$")).click()
        expect(link_accounts.or_(done)).to_be_visible()
    if link_accounts.is_visible():
        link_accounts.click()
    expect(done).to_be_visible()
    page.evaluate(PAGE_PROBE)
    frame.locator("body").evaluate(FRAME_PROBE)
    done.click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("is connected again")
    page.wait_for_function("() => window.__relinkMarks.frameGone !== null")
    marks: dict[str, float] = page.evaluate("() => window.__relinkMarks")
    return marks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="measured relinks (plus one warm-up)")
    parser.add_argument("--links", type=int, default=60, help="links in the demo world")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="checkout to run")
    args = parser.parse_args()

    parts: dict[str, list[float]] = {
        "Done → confirmation": [],
        "Done → Connect's message": [],
        "Done → Connect's frame gone": [],
        "Connect's message → confirmation": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="linkdesk-relink-bench-") as folder,
        running(args.root.resolve(), Path(folder), args.links) as (sandbox, dashboard, database),
        sync_playwright() as playwright,
    ):
        engine = sa.create_engine(database)
        # A different link each run: MoneyKit limits reads per link (accounts: 4 a minute), and
        # an agent does not relink one link every few seconds.
        with engine.connect() as connection:
            candidates = [
                str(link_id)
                for (link_id,) in connection.execute(
                    sa.text(
                        "SELECT link_id FROM links WHERE state = 'connected' "
                        "AND institution_id != 'moneykit-oauth-bank' ORDER BY link_id"
                    )
                )
            ]
        if len(candidates) < args.runs + 1:
            print(f"only {len(candidates)} connected links; use --links", file=sys.stderr)
            return 1
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for run in range(args.runs + 1):
            link_id = candidates[run % len(candidates)]
            _sandbox_post(sandbox, f"/links/{link_id}/reset")
            deadline = time.monotonic() + 60
            while _link_state(engine, link_id) != ("error", "auth_expired"):
                if time.monotonic() > deadline:
                    print(f"{link_id} never reached auth_expired", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            context = browser.new_context(viewport=ViewportSize(width=1440, height=900))
            page = context.new_page()
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            try:
                marks = relink_once(page, dashboard, link_id)
            finally:
                context.close()
            if _link_state(engine, link_id)[0] != "connected":
                print(f"{link_id} is not connected after the relink", file=sys.stderr)
                return 1
            if run == 0:
                continue  # warm-up
            done = marks["done"]
            parts["Done → confirmation"].append((marks["confirmation"] - done) / 1000)
            parts["Done → Connect's message"].append((marks["message"] - done) / 1000)
            parts["Done → Connect's frame gone"].append((marks["frameGone"] - done) / 1000)
            parts["Connect's message → confirmation"].append(
                (marks["confirmation"] - marks["message"]) / 1000
            )
        browser.close()
        engine.dispose()

    print(f"relink Done → confirmation in chromium 1440x900, checkout {args.root.resolve()}")
    print(machine_line())
    for label, seconds in parts.items():
        print(latency_line(label, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
