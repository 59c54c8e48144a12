"""Browser end-to-end fixtures: a real sandbox, a real dashboard and Debian's chromium.

Everything runs on free localhost ports. The Connect UI host is always `http://localhost:<port>`
because the launcher compares it byte for byte with the browser's origin.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from linkdesk.auth import hash_password

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
AGENT = "e2e-agent"
AGENT_PASSWORD = "e2e-agent-password"
ADMIN = "e2e-admin"
ADMIN_PASSWORD = "e2e-admin-password"
CLIENT_ID = "e2e_client"
CLIENT_SECRET = "e2e_secret"  # credentials of a throwaway sandbox


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
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


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class Stack:
    sandbox_url: str
    dashboard_url: str
    database_url: str
    env: dict[str, str]


@contextmanager
def running_stack(
    work: Path,
    *,
    name: str = "",
    demo_links: int = 60,
    extra_env: dict[str, str] | None = None,
    setup: tuple[tuple[str, ...], ...] = (("migrate",), ("sync",)),
    dashboard_port: int | None = None,
) -> Iterator[Stack]:
    """A sandbox and a dashboard (`server.py`) on free ports, set up with ``python -m linkdesk``
    commands (``setup``), stopped afterwards. Logs go to test-output/e2e/logs/<name>*.log."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: run `make test` (it installs it)")
    sandbox_port, dashboard_port = free_port(), dashboard_port or free_port()
    sandbox_url = f"http://localhost:{sandbox_port}"
    dashboard_url = f"http://localhost:{dashboard_port}"
    database_url = f"sqlite:///{work / 'linkdesk.db'}"
    env = {
        **os.environ,
        "MONEYKIT_CLIENT_ID": CLIENT_ID,
        "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
        "MONEYKIT_BASE_URL": sandbox_url,
        "MONEYKIT_CONNECT_HOST": sandbox_url,
        "DATABASE_URL": database_url,
        "LINKDESK_REDIRECT_URI": f"{dashboard_url}/oauth_return",
        "LINKDESK_WEBHOOK_URL": f"{dashboard_url}/webhooks/moneykit",
        "MONEYKIT_DEMO_WEBHOOK_URL": f"{dashboard_url}/webhooks/moneykit",
        "LINKDESK_SIGNING_KEY_FILE": str(work / "signing.key"),
        "LINKDESK_USERS": json.dumps(
            {
                AGENT: {"role": "support", "password_hash": hash_password(AGENT_PASSWORD)},
                ADMIN: {"role": "admin", "password_hash": hash_password(ADMIN_PASSWORD)},
            }
        ),
        **(extra_env or {}),
    }
    logs = OUTPUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        sandbox_log = (logs / f"{name}sandbox.log").open("wb")
        # A port chosen here can be taken before the child binds it (the sandbox binds two: its
        # own and OAuth Bank's); a sandbox that exits while starting is started again on others.
        for attempt in range(3):
            sandbox = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sandbox",
                    "--port",
                    str(sandbox_port),
                    "--bank-port",
                    str(free_port()),
                    "--demo-links",
                    str(demo_links),
                ],
                cwd=ROOT,
                env=env,
                stdout=sandbox_log,
                stderr=subprocess.STDOUT,
            )
            processes.append(sandbox)
            try:
                wait_for(f"{sandbox_url}/_sandbox/health", sandbox)
                break
            except RuntimeError:
                if sandbox.poll() is None or attempt == 2:
                    raise
            sandbox_port = free_port()
            sandbox_url = f"http://localhost:{sandbox_port}"
            env.update(MONEYKIT_BASE_URL=sandbox_url, MONEYKIT_CONNECT_HOST=sandbox_url)
        for command in setup:
            subprocess.run(
                [sys.executable, "-m", "linkdesk", *command], cwd=ROOT, env=env, check=True
            )
        dashboard = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "server.py",
                "--server.port",
                str(dashboard_port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                # The code under test stays as it was at start: re-importing a module edited
                # mid-run leaves objects of the old and the new classes side by side.
                "--server.fileWatcherType",
                "none",
            ],
            cwd=ROOT,
            env=env,
            stdout=(logs / f"{name}dashboard.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(dashboard)
        wait_for(f"{dashboard_url}/_stcore/health", dashboard)
        yield Stack(sandbox_url, dashboard_url, database_url, env)
    finally:
        for process in reversed(processes):
            stop(process)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("e2e")) as running:
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def open_signed_in(
    page: Page, stack: Stack, path: str = "/", *, user: str = AGENT, password: str = AGENT_PASSWORD
) -> None:
    """Open a dashboard URL as a person would: sign in first when the dashboard asks."""
    page.goto(stack.dashboard_url + path)
    sign_in_button = page.get_by_role("button", name="Sign in")
    sidebar = page.get_by_test_id("stSidebar")
    expect(sign_in_button.or_(sidebar)).to_be_visible()
    if sign_in_button.is_visible():
        page.get_by_label("Username").fill(user)
        page.get_by_role("textbox", name="Password").fill(password)
        sign_in_button.click()
        expect(sidebar).to_be_visible()


@pytest.fixture()
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUTPUT / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)
