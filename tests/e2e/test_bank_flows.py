"""Every sandbox bank flow in Chromium, through the real launcher inside our Streamlit component.

A sandbox (API + Connect UI on one port, OAuth Bank's pages on a second) and a small Streamlit app
(``bank_harness/app.py``) start on free ports. Link sessions are made over the REST API; the
harness mounts ``moneykit_connect`` in link / relink / continue mode and writes what Python got
back to a JSON file per Connect session, which these tests check: callback types, institution
fields, link ids and exit errors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, free_port, stop, wait_for

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "bank_harness" / "app.py"
BUNDLE = REPO / "components" / "moneykit_connect" / "frontend" / "dist" / "index.js"
OUTPUT_DIR = REPO / "test-output"
CLIENT_ID = "bank_e2e_client"
CLIENT_SECRET = "bank_e2e_secret"
FRAME = "iframe#moneykit-connect-frame"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not BUNDLE.is_file(),
        reason=f"the Connect component is not built ({BUNDLE} is missing): run `make setup`",
    ),
]


@dataclass
class Stack:
    sandbox_url: str
    bank_url: str
    harness_url: str
    output_dir: Path
    logs: Path
    api: httpx.Client

    def session(self, **fields: Any) -> str:
        body = {"customer_user": {"id": "cust_bank_e2e"}, "redirect_uri": f"{self.harness_url}/"}
        body.update(fields)
        response = self.api.post("/link-session", json=body)
        response.raise_for_status()
        token: str = response.json()["link_session_token"]
        return token

    def received(self, session_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.output_dir / f"{session_id}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data

    def wait_for_ending(self, session_id: str, timeout: float = 30) -> list[dict[str, Any]]:
        """The log once it holds a success, relink success or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(session_id)
            if got and any(entry["type"] != "event" for entry in got["log"]):
                log: list[dict[str, Any]] = got["log"]
                return log
            time.sleep(0.1)
        pytest.fail(f"Python never received the end of Connect session {session_id}")

    def continue_logs(self) -> list[list[dict[str, Any]]]:
        logs = []
        for path in self.output_dir.glob("continue-*.json"):
            logs.append(json.loads(path.read_text())["log"])
        return logs


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("bank_e2e")
    output_dir = work / "received"
    output_dir.mkdir()
    sandbox_port, harness_port = free_port(), free_port()
    bank_port = free_port()
    sandbox_url = f"http://localhost:{sandbox_port}"
    harness_url = f"http://localhost:{harness_port}"
    env = {
        **os.environ,
        "MONEYKIT_CLIENT_ID": CLIENT_ID,
        "MONEYKIT_CLIENT_SECRET": CLIENT_SECRET,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HARNESS_OUTPUT_DIR": str(output_dir),
        "HARNESS_CONNECT_HOST": sandbox_url,
        "HARNESS_URL": harness_url,
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs = work / "logs"
    logs.mkdir()
    try:
        sandbox = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox",
                "--port",
                str(sandbox_port),
                "--bank-port",
                str(bank_port),
                "--demo-links",
                "40",
                "--redirect-uri",
                f"{harness_url}/",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=env,
            stdout=(logs / "sandbox.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(sandbox)
        wait_for(f"{sandbox_url}/_sandbox/health", sandbox)
        harness = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(HARNESS),
                "--server.port",
                str(harness_port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--server.fileWatcherType",
                "none",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=REPO,
            env=env,
            stdout=(logs / "harness.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(harness)
        wait_for(f"{harness_url}/_stcore/health", harness)
        token = httpx.post(
            f"{sandbox_url}/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ).json()["access_token"]
        with httpx.Client(
            base_url=sandbox_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as api:
            yield Stack(
                sandbox_url, f"http://localhost:{bank_port}", harness_url, output_dir, logs, api
            )
    except BaseException:
        _keep_logs(logs)
        raise
    finally:
        for process in reversed(processes):
            stop(process)


def _keep_logs(logs: Path) -> None:
    OUTPUT_DIR.mkdir(exist_ok=True)
    for log in logs.glob("*.log"):
        shutil.copy(log, OUTPUT_DIR / f"bank_flows_{log.name}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            OUTPUT_DIR.mkdir(exist_ok=True)
            for n, open_page in enumerate(context.pages):
                open_page.screenshot(
                    path=str(OUTPUT_DIR / f"bank_flows_{request.node.name}_{n}.png")
                )
            _keep_logs(stack.logs)
        context.close()
        httpx.post(f"{stack.sandbox_url}/_sandbox/oauth", json={"cut_opener": False})


def _open(page: Any, stack: Stack, mode: str, token: str) -> tuple[str, Any]:
    session_id = f"cs_{uuid.uuid4().hex[:12]}"
    page.goto(f"{stack.harness_url}/?mode={mode}&sid={session_id}&token={token}")
    page.locator(FRAME).wait_for()
    return session_id, page.frame_locator(FRAME)


def _events(log: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["name"] for e in log if e["type"] == "event"]


def _screens(log: list[dict[str, Any]]) -> list[str]:
    return [
        e["data"]["properties"]["current_screen_name"]
        for e in log
        if e["type"] == "event" and e["data"]["name"] == "change_screen"
    ]


def _ending(log: list[dict[str, Any]]) -> dict[str, Any]:
    endings = [e for e in log if e["type"] != "event"]
    assert len(endings) == 1, endings
    return endings[0]


def _assert_institution(institution: dict[str, Any], institution_id: str, name: str) -> None:
    assert institution["id"] == institution_id
    assert institution["name"] == name
    assert re.fullmatch(r"#[0-9a-f]{6}", institution["color"])
    assert re.fullmatch(r"#[0-9a-f]{6}", institution["color_dark"])
    for kind in ("logo", "logo_dark", "avatar", "avatar_dark"):
        assert institution[kind].endswith(f"/assets/institutions/{institution_id}/{kind}.svg")
    assert isinstance(institution["selectedAccounts"], list)
    assert isinstance(institution["trackedScreens"], list) and institution["trackedScreens"]


def _sign_in(frame: Any, username: str, password: str) -> None:
    frame.get_by_label("Username").fill(username)
    frame.get_by_label("Password").fill(password)
    frame.get_by_role("button", name="Continue", exact=True).click()


def _finish_accounts(frame: Any) -> None:
    frame.get_by_role("button", name="Link accounts").click()
    frame.get_by_role("button", name="Done").click()


def test_credentials_bank(page: Any, stack: Stack) -> None:
    session_id, frame = _open(page, stack, "link", stack.session())
    frame.get_by_role("searchbox", name="Search institutions").fill("Credentials")
    frame.get_by_role("button", name="Credentials Bank").click()
    _sign_in(frame, "user_good", "pass_good")
    _finish_accounts(frame)
    log = stack.wait_for_ending(session_id)
    success = _ending(log)
    assert success["type"] == "success"
    assert success["data"]["exchangeable_token"].startswith("ext_")
    assert success["data"]["link_id"].startswith("mk_")
    _assert_institution(success["data"]["institution"], "moneykit-creds-bank", "Credentials Bank")
    assert success["data"]["institution"]["selectedAccounts"]
    events = _events(log)
    assert events[0] == "open"
    assert events.index("select_institution") < events.index("submit_credentials")
    assert events.index("submit_credentials") < events.index("submit_accounts")
    assert events[-1] == "success"
    assert _screens(log) == ["Finder", "Credentials", "Accounts", "Success"]
    link = stack.api.get(f"/links/{success['data']['link_id']}").json()
    assert link["state"] == "awaiting_token_exchange"


def test_mfa(page: Any, stack: Stack) -> None:
    token = stack.session(institution_id="moneykit-creds-bank")
    session_id, frame = _open(page, stack, "link", token)
    _sign_in(frame, "user_mfa", "pass_good")
    frame.get_by_role("textbox", name="Verification code").fill("000000")
    frame.get_by_role("button", name="Continue", exact=True).click()
    frame.get_by_role("button", name="Try again").click()
    frame.get_by_role("textbox", name="Verification code").fill("123456")
    frame.get_by_role("button", name="Continue", exact=True).click()
    _finish_accounts(frame)
    log = stack.wait_for_ending(session_id)
    assert _ending(log)["type"] == "success"
    errors = [
        e["data"]["properties"]
        for e in log
        if e["type"] == "event" and e["data"]["name"] == "error"
    ]
    assert [e["error_id"] for e in errors] == ["user_input_incorrect"]
    assert _events(log).count("submit_mfa") == 2
    # Preselected institution: no picker.
    assert _screens(log)[:2] == ["Credentials", "MFA"]


def test_failing_credentials_exit_with_the_error(page: Any, stack: Stack) -> None:
    session_id, frame = _open(page, stack, "link", stack.session())
    frame.get_by_role("button", name="Credentials Bank").click()
    _sign_in(frame, "user_bad", "whatever")
    frame.get_by_role("button", name="Exit").click()
    log = stack.wait_for_ending(session_id)
    ending = _ending(log)
    assert ending["type"] == "exit"
    error = ending["data"]["error"]
    assert error["error_id"] == "invalid_credentials"
    assert error["displayed_message"] and error["request_id"]
    assert _events(log)[-2:] == ["change_screen", "exit"]


def _start_oauth(page: Any, stack: Stack) -> tuple[str, Any, Any]:
    session_id, frame = _open(page, stack, "link", stack.session())
    frame.get_by_role("button", name="OAuth Bank").click()
    with page.expect_popup() as popup_info:
        frame.get_by_role("button", name="Continue to OAuth Bank").click()
    popup = popup_info.value
    popup.wait_for_load_state()
    assert popup.url.startswith(f"{stack.bank_url}/oauth/authorize")
    return session_id, frame, popup


def test_oauth_via_popup(page: Any, stack: Stack) -> None:
    session_id, frame, popup = _start_oauth(page, stack)
    popup.get_by_role("button", name="Allow").click()
    # The return page resumes the opener; the Connect frame closes the popup.
    popup.wait_for_event("close")
    _finish_accounts(frame)
    log = stack.wait_for_ending(session_id)
    success = _ending(log)
    assert success["type"] == "success"
    _assert_institution(success["data"]["institution"], "moneykit-oauth-bank", "OAuth Bank")
    events = _events(log)
    assert events.index("open_oauth") < events.index("submit_accounts")
    assert "OAuth" in _screens(log)
    # The popup's own component only passed link.resume on: it received no callbacks.
    assert all(
        not [e for e in entries if e["type"] != "event"] for entries in stack.continue_logs()
    )


def test_oauth_full_page_without_opener(page: Any, stack: Stack) -> None:
    httpx.post(f"{stack.sandbox_url}/_sandbox/oauth", json={"cut_opener": True}).raise_for_status()
    before = {path.name for path in stack.output_dir.glob("continue-*.json")}
    session_id, frame, popup = _start_oauth(page, stack)
    popup.get_by_role("button", name="Allow").click()
    popup.wait_for_url(re.compile(re.escape(stack.harness_url) + r"/\?"))
    # No opener: continue() opened /continue inside the return page, which finishes in place.
    popup_frame = popup.frame_locator(FRAME)
    _finish_accounts(popup_frame)
    new = [p for p in stack.output_dir.glob("continue-*.json") if p.name not in before]
    deadline = time.monotonic() + 30
    while not new and time.monotonic() < deadline:
        time.sleep(0.1)
        new = [p for p in stack.output_dir.glob("continue-*.json") if p.name not in before]
    assert len(new) == 1
    log = stack.wait_for_ending(new[0].stem)
    success = _ending(log)
    assert success["type"] == "success"
    assert success["data"]["exchangeable_token"].startswith("ext_")
    _assert_institution(success["data"]["institution"], "moneykit-oauth-bank", "OAuth Bank")
    # The first window learns from the sandbox that the flow finished elsewhere.
    frame.get_by_text("Finished in another window", exact=False).wait_for()
    first = stack.received(session_id)
    assert first is not None and not [e for e in first["log"] if e["type"] != "event"]


def test_oauth_denied(page: Any, stack: Stack) -> None:
    session_id, frame, popup = _start_oauth(page, stack)
    popup.get_by_role("button", name="Deny").click()
    popup.wait_for_event("close")
    frame.get_by_role("button", name="Exit").click()
    log = stack.wait_for_ending(session_id)
    ending = _ending(log)
    assert ending["type"] == "exit"
    assert ending["data"]["error"]["error_id"] == "user_oauth_denied"


def test_relink(page: Any, stack: Stack) -> None:
    expired = None
    cursor = None
    while expired is None:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        body = stack.api.get("/links", params=params).json()
        for row in body["links"]:
            link = stack.api.get(f"/links/{row['link_id']}").json()
            if link["error_code"] == "auth_expired":
                expired = link
                break
        cursor = body["next_cursor"]
        if expired is None and not cursor:
            pytest.fail("the demo data holds no auth_expired link")
    token = stack.session(existing_link_id=expired["link_id"], link_tags=expired["link_tags"])
    session_id, frame = _open(page, stack, "relink", token)
    _sign_in(frame, "user_good", "pass_good")
    frame.get_by_role("button", name="Done").click()
    log = stack.wait_for_ending(session_id)
    ending = _ending(log)
    assert ending["type"] == "relink_success"
    assert ending["data"]["link_id"] == expired["link_id"]
    assert ending["data"]["institution"]["id"] == expired["institution_id"]
    assert stack.api.get(f"/links/{expired['link_id']}").json()["state"] == "connected"
