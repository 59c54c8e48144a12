"""Every Connect callback reaches Python exactly once, in a real browser.

A stub Connect UI (``component_harness/stub_connect.html``) fires a burst of 52
callbacks with no pause: an ``open`` event, 50 more events and ``link.complete``. The
real launcher bundled in the component receives them, and the harness app
(``component_harness/app.py``) applies what ``moneykit_connect`` returns by
(session_id, seq) and writes it to a file. One trigger value per callback would lose
most of the burst; the cumulative log in component state must lose nothing.

Then a rerun and a remount must neither open Connect again (the stub server counts page
loads) nor add or change entries.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "component_harness"
BUNDLE = REPO / "components" / "moneykit_connect" / "frontend" / "dist" / "index.js"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not BUNDLE.is_file(),
        reason=f"the Connect component is not built ({BUNDLE} is missing): run `make setup`",
    ),
]
OUTPUT_DIR = REPO / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
]

SESSION_ID = "cs_e2e_delivery"
LINK_SESSION_TOKEN = "lst_e2e_delivery"
BURST = 50
EXPECTED_ENTRIES = BURST + 2  # the "open" event, the burst, the success


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StubConnect:
    """What the stub Connect UI server saw: page loads and the page's own reports."""

    loads: list[str] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    origin: str = ""

    def snapshot(self) -> tuple[list[str], list[dict[str, Any]]]:
        with self.lock:
            return list(self.loads), list(self.reports)


def _stub_handler(stub: StubConnect) -> type[BaseHTTPRequestHandler]:
    page = (HARNESS / "stub_connect.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path != "/start":
                self.send_error(404)
                return
            with stub.lock:
                stub.loads.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self) -> None:
            if self.path != "/report":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with stub.lock:
                stub.reports.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def stub_connect() -> Iterator[StubConnect]:
    stub = StubConnect()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _stub_handler(stub))
    # The launcher compares event.origin with the host string byte for byte, and the
    # browser reports "localhost" for a page loaded as localhost.
    stub.origin = f"http://localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Harness:
    url: str
    output: Path
    log_path: Path

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.output.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None


@pytest.fixture
def harness(stub_connect: StubConnect, tmp_path: Path) -> Iterator[Harness]:
    port = _free_port()
    output = tmp_path / "received.json"
    log_path = tmp_path / "streamlit.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HARNESS_OUTPUT": str(output),
        "HARNESS_CONNECT_HOST": stub_connect.origin,
        "HARNESS_SESSION_ID": SESSION_ID,
        "HARNESS_LINK_SESSION_TOKEN": LINK_SESSION_TOKEN,
    }
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(HARNESS / "app.py"),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://localhost:{port}"
            try:
                _wait_until(
                    lambda: process.poll() is None and _healthy(f"{url}/_stcore/health"),
                    timeout=30,
                    what=f"Streamlit to answer on {url}",
                    fail_fast=lambda: process.poll() is not None,
                )
            except BaseException:
                _keep_failure_log(log_path)
                raise
            yield Harness(url=url, output=output, log_path=log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _keep_failure_log(log_path: Path) -> None:
    OUTPUT_DIR.mkdir(exist_ok=True)
    shutil.copy(log_path, OUTPUT_DIR / "component_delivery_streamlit.log")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    fail_fast: Callable[[], bool] | None = None,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if fail_fast is not None and fail_fast():
            break
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _settle(harness: Harness, *, quiet: float = 1.5, timeout: float = 20) -> dict[str, Any]:
    """The harness output once no new run has happened for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last = harness.read()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = harness.read()
        if current != last:
            last, stable_since = current, time.monotonic()
        elif last is not None and time.monotonic() - stable_since >= quiet:
            return last
    pytest.fail("the harness app never settled")


def test_a_burst_of_callbacks_reaches_python_exactly_once(
    harness: Harness, stub_connect: StubConnect
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        step = "open the app"
        try:
            page.goto(harness.url)

            step = "deliver the burst"
            _wait_until(
                lambda: (out := harness.read()) and len(out["received"]) >= EXPECTED_ENTRIES,
                timeout=60,
                what=f"{EXPECTED_ENTRIES} entries to reach Python",
            )
            first = _settle(harness)
            _assert_complete_log(first["received"])
            assert first["last_log"] == first["received"]
            assert first["conflicts"] == []

            status = page.locator(".mkc-status")
            assert status.get_attribute("data-status") == "finished"
            assert "Connect finished" in status.inner_text()
            # The launcher removes its overlay 300 ms after link.complete.
            assert page.locator("iframe#moneykit-connect-frame").count() == 0

            # Only the count: the load URLs carry the link-session token.
            assert len(stub_connect.snapshot()[0]) == 1, "Connect was opened more than once"
            _assert_launch_was_right(stub_connect, app_origin=harness.url)

            step = "rerun"
            page.get_by_role("button", name="Rerun").click()
            _wait_until(
                lambda: (out := harness.read()) and out["runs"] > first["runs"],
                timeout=20,
                what="the rerun",
            )
            after_rerun = _settle(harness)
            assert len(stub_connect.snapshot()[0]) == 1, "a rerun opened Connect again"
            assert after_rerun["received"] == first["received"]
            assert after_rerun["last_log"] == first["received"]
            assert after_rerun["conflicts"] == []

            step = "unmount"
            page.get_by_text("Show Connect").click()
            _wait_until(
                lambda: (out := harness.read()) and out["shown"] is False,
                timeout=20,
                what="the component to be hidden",
            )
            hidden = _settle(harness)
            assert hidden["last_log"] == []
            assert page.locator(".mkc-status").count() == 0

            step = "remount"
            page.get_by_text("Show Connect").click()
            # Streamlit dropped the hidden component's state, so the log can only come
            # back if the new mount re-publishes it.
            _wait_until(
                lambda: (out := harness.read()) and out["shown"] and out["last_log"],
                timeout=20,
                what="the remounted component to re-publish its log",
            )
            remounted = _settle(harness)
            assert len(stub_connect.snapshot()[0]) == 1, "a remount opened Connect again"
            assert remounted["last_log"] == first["received"]
            assert remounted["received"] == first["received"]
            assert remounted["conflicts"] == []
            assert page.locator(".mkc-status").get_attribute("data-status") == "finished"
        except BaseException:
            OUTPUT_DIR.mkdir(exist_ok=True)
            shot = OUTPUT_DIR / f"component_delivery_{step.replace(' ', '_')}.png"
            page.screenshot(path=str(shot), full_page=True)
            _keep_failure_log(harness.log_path)
            raise
        finally:
            browser.close()


def _assert_complete_log(received: list[dict[str, Any]]) -> None:
    assert len(received) == EXPECTED_ENTRIES
    assert [entry["seq"] for entry in received] == list(range(1, EXPECTED_ENTRIES + 1))
    assert {entry["session_id"] for entry in received} == {SESSION_ID}

    *events, success = received
    assert [entry["type"] for entry in events] == ["event"] * (BURST + 1)
    assert events[0]["data"] == {"name": "open", "properties": {}}
    assert [entry["data"] for entry in events[1:]] == [
        {"name": "burst", "properties": {"index": index}} for index in range(1, BURST + 1)
    ]
    assert [entry["at"] for entry in received] == sorted(entry["at"] for entry in received)

    assert success["type"] == "success"
    assert success["data"]["exchangeable_token"] == "ext_e2e_delivery"
    assert success["data"]["link_id"] == "mk_link_e2e"
    assert success["data"]["institution"]["id"] == "moneykit-creds-bank"
    assert success["data"]["institution"]["selectedAccounts"][0]["account_id"] == "acc_1"


def _assert_launch_was_right(stub: StubConnect, *, app_origin: str) -> None:
    # The launcher answers connect.started with the colour scheme only when the host
    # string matched event.origin exactly. The page reports it by beacon, so allow for
    # the beacon's trip.
    _wait_until(
        lambda: any(r.get("received") == "connect.set_color_scheme" for r in stub.snapshot()[1]),
        timeout=5,
        what="the launcher's reply to connect.started",
    )
    reports = stub.snapshot()[1]
    (scheme,) = [r for r in reports if r.get("received") == "connect.set_color_scheme"]
    assert scheme["data"] == {"colorScheme": "light"}

    (loaded,) = [report for report in reports if "loaded" in report]
    assert loaded["loaded"] == "/start"
    assert loaded["query"]["linkSessionToken"] == LINK_SESSION_TOKEN
    assert loaded["query"]["origin"] == app_origin
    assert loaded["query"]["launcherVersion"] == "0.3.26"
    # No containerID: the overlay is the whole viewport, not the component's box.
    assert (loaded["width"], loaded["height"]) == (1280, 720)
