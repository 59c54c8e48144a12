"""Connect as MoneyKit runs it, in Chromium: OAuth without an opener ending in two windows, a
product refresh that failed in the link detail, and the sandbox Connect page's less common
screens, events, step timers and ``link.close_oauth``.

The first test drives the whole dashboard: the bank cuts the popup's opener, so Connect finishes
in the bank's return window and the first window learns it from the sandbox; both windows then
report success with the same exchangeable token, and Linkdesk must exchange it once and show the
same success in both, no error. The others open the sandbox's Connect page as a top-level page
(so it posts its launcher messages to itself) and record every message it sends.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect
from sqlalchemy import select

from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.models import AuditEntry, ConnectSession, Link
from tests.e2e.conftest import CLIENT_ID, CLIENT_SECRET, ROOT, Stack, open_signed_in

pytestmark = pytest.mark.e2e

CONNECT_FRAME = "#moneykit-connect-frame"
# Records every launcher message the Connect page posts (to itself, when it is the top page),
# and marks each type seen on <html> so a locator can wait for it (the page's CSP forbids the
# string evaluation wait_for_function needs).
RECORD_MESSAGES = """
window.__moneykit = [];
window.addEventListener("message", function (event) {
  if (event.data && typeof event.data === "object" && "moneykit" in event.data) {
    window.__moneykit.push(event.data);
    var seen = String(event.data.type).replace(/[^a-z_]/g, "-");
    document.documentElement.setAttribute("data-seen-" + seen, "");
  }
});
"""


def _wait_for_message(page: Page, kind: str) -> None:
    seen = re.sub(r"[^a-z_]", "-", kind)
    expect(page.locator(f"html[data-seen-{seen}]")).to_have_count(1)


def _api(stack: Stack) -> httpx.Client:
    token = httpx.post(
        f"{stack.sandbox_url}/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    ).json()["access_token"]
    return httpx.Client(
        base_url=stack.sandbox_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


@pytest.fixture
def opener_cut(stack: Stack) -> Iterator[None]:
    """OAuth Bank's page cuts the popup's opener (COOP), as some real banks do."""
    httpx.post(f"{stack.sandbox_url}/_sandbox/oauth", json={"cut_opener": True}).raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{stack.sandbox_url}/_sandbox/oauth", json={"cut_opener": False})


def test_oauth_without_an_opener_succeeds_once_in_both_windows(
    page: Page, stack: Stack, opener_cut: None
) -> None:
    customer_id = f"cust_e2e_{uuid.uuid4().hex[:8]}"
    open_signed_in(page, stack, "/connect")
    field = page.get_by_label("New customer id")
    field.fill(customer_id)
    field.press("Enter")
    page.get_by_role("button", name="Open MoneyKit Connect").click()
    frame = page.frame_locator(CONNECT_FRAME)
    frame.get_by_role("button", name="OAuth Bank").click()
    with page.expect_popup() as opened:
        frame.get_by_role("button", name="Continue to OAuth Bank").click()
    popup = opened.value
    popup.get_by_role("button", name="Allow").click()

    # No opener: the return page (signed in through the shared session cookie) finishes the
    # flow itself and exchanges the token.
    popup.wait_for_url(re.compile(re.escape(stack.dashboard_url) + r"/oauth_return\?"))
    returned = popup.frame_locator(CONNECT_FRAME)
    returned.get_by_role("button", name="Link accounts").click()
    returned.get_by_role("button", name="Done").click()
    # The return window shows the success (it may close itself right after: link.close_oauth).
    try:
        expect(popup.locator("[data-testid='stAlertContentSuccess']")).to_be_visible()
        expect(popup.locator("[data-testid='stAlertContentError']")).to_have_count(0)
    except PlaywrightError:
        assert popup.is_closed()

    # The first window learns from the sandbox that it finished elsewhere; its Done reports the
    # same token again, and Linkdesk shows the same success instead of an error.
    frame.get_by_text("Finished in another window", exact=False).wait_for()
    frame.get_by_role("button", name="Done").click()
    expect(page.locator("[data-testid='stAlertContentSuccess']")).to_contain_text("OAuth Bank")
    expect(page.locator("[data-testid='stAlertContentError']")).to_have_count(0)
    expect(page.locator("[data-testid='stException']")).to_have_count(0)

    store = Store(create_engine(stack.database_url))
    with store.read() as session:
        sessions = session.scalars(
            select(ConnectSession).where(ConnectSession.customer_id == customer_id)
        ).all()
        assert [(s.outcome, s.mode) for s in sessions] == [("success", "link")]
        link_id = sessions[0].link_id
        assert link_id
        exchanges = session.scalars(
            select(AuditEntry).where(
                AuditEntry.link_id == link_id, AuditEntry.action == "connect.exchange"
            )
        ).all()
    assert [entry.outcome for entry in exchanges] == ["success"]
    with _api(stack) as api:
        assert api.get(f"/links/{link_id}").json()["state"] == "connected"


def test_a_failed_product_refresh_shows_in_the_link_detail(page: Page, stack: Stack) -> None:
    store = Store(create_engine(stack.database_url))
    connected = LinkQueries(store).list_links(LinkFilters(state="connected"), limit=50).rows
    with _api(stack) as api:
        link_id = next(
            row.link_id
            for row in reversed(connected)
            if "transactions" in api.get(f"/links/{row.link_id}").json()["products"]
        )
        api.post(  # the sandbox's control: the next transactions refresh of this link fails
            f"/_sandbox/links/{link_id}/refresh-failure",
            json={"products": ["transactions"], "error_code": "no_permission"},
        ).raise_for_status()
        assert (
            api.post(f"/links/{link_id}/products", json={"products": ["transactions"]}).status_code
            == 202
        )
        api.post("/_sandbox/products/settle").raise_for_status()
    # Read every link as a sync does (the webhook would do the same a moment later).
    subprocess.run([sys.executable, "-m", "linkdesk", "sync"], cwd=ROOT, env=stack.env, check=True)
    with store.read() as session:
        row = session.get(Link, link_id)
        assert row is not None and (row.state, row.refresh_issue) == ("connected", "failed")

    open_signed_in(page, stack, f"/links?link={link_id}")
    expect(page.get_by_role("heading", name="Data refresh")).to_be_visible()
    expect(page.get_by_text("last refresh of transactions failed")).to_be_visible()
    expect(page.get_by_text("A data refresh failed")).to_be_visible()
    expect(page.locator("[data-testid='stException']")).to_have_count(0)


def _connect_page(page: Page, stack: Stack, path: str, **params: str) -> None:
    query = {
        "applicationName": "",
        "device": "",
        "launcherVersion": "0.3.26",
        "origin": stack.sandbox_url,
        "stepTimers": "false",
        **params,
    }
    page.add_init_script(RECORD_MESSAGES)
    page.goto(f"{stack.sandbox_url}/{path}?{urlencode(sorted(query.items()))}")


def _messages(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate("window.__moneykit")
    return found


def _events(page: Page) -> list[str]:
    return [m["data"]["name"] for m in _messages(page) if m["type"] == "link.event"]


def _screens(page: Page) -> list[str]:
    return [
        m["data"]["properties"]["current_screen_name"]
        for m in _messages(page)
        if m["type"] == "link.event" and m["data"]["name"] == "change_screen"
    ]


def test_help_reset_password_otp_and_permissions_screens_send_their_events(
    page: Page, stack: Stack
) -> None:
    with _api(stack) as api:
        token = api.post(
            "/link-session",
            json={
                "customer_user": {"id": "cust_screens"},
                "redirect_uri": f"{stack.dashboard_url}/oauth_return",
                "institution_id": "moneykit-creds-bank",
                "settings": {
                    "products": {
                        "transactions": {"required": True},
                        "identity": {"reason": "confirm who owns the account"},
                    }
                },
            },
        ).json()["link_session_token"]
        _connect_page(page, stack, "start", linkSessionToken=token, stepTimers="true")

        timer = page.get_by_role("timer", name="Step timer")
        expect(timer).to_have_text(re.compile(r"^Credentials · \d+\.\d s$"))
        page.get_by_role("button", name="Get help").click()
        page.get_by_role("button", name="Reset password").click()
        page.get_by_role("button", name="Open Credentials Bank website").click()
        expect(page.get_by_role("status")).to_contain_text("moneykit.com")
        page.get_by_role("button", name="Back to login").click()
        expect(timer).to_have_text(re.compile(r"^Credentials · "))

        page.get_by_label("Username").fill("user_otp")
        page.get_by_label("Password").fill("pass_good")
        page.get_by_role("button", name="Continue", exact=True).click()
        page.get_by_role("radio", name=re.compile("^Email")).check()
        page.get_by_role("button", name="Continue", exact=True).click()
        page.get_by_label("One-time code").fill("123456")
        page.get_by_role("button", name="Continue", exact=True).click()

        required = page.get_by_role("checkbox", name=re.compile("^Transactions"))
        expect(required).to_be_checked()
        expect(required).to_be_disabled()
        page.get_by_role("checkbox", name=re.compile("^Account owner")).uncheck()
        page.get_by_role("button", name="Allow").click()
        page.get_by_role("button", name="Link accounts").click()
        page.get_by_role("button", name="Done").click()
        _wait_for_message(page, "link.complete")

        assert _screens(page) == [
            "Credentials",
            "Help",
            "ResetPassword",
            "Credentials",
            "OTPDevice",
            "OTP",
            "Permissions",
            "Accounts",
            "Success",
        ]
        events = _events(page)
        in_order = [
            "select_help",
            "select_reset_password",
            "open_institution_website",
            "submit_credentials",
            "submit_otp_device",
            "submit_otp",
            "submit_permissions",
            "submit_accounts",
            "success",
        ]
        assert [e for e in events if e in in_order] == in_order
        complete = next(m for m in _messages(page) if m["type"] == "link.complete")
        tracked = [s["name"] for s in complete["data"]["institution"]["trackedScreens"]]
        assert tracked[:2] == ["Credentials", "Help"] and "Permissions" in tracked
        # Not a return window: nothing to close.
        assert not [m for m in _messages(page) if m["type"] == "link.close_oauth"]

        link = api.post(
            "/link-session/exchange-token",
            json={"exchangeable_token": complete["data"]["exchangeableToken"]},
        ).json()["link"]
        assert set(link["products"]) == {"accounts", "transactions"}  # identity was declined


def test_step_timers_are_off_unless_asked_for(page: Page, stack: Stack) -> None:
    with _api(stack) as api:
        token = api.post(
            "/link-session",
            json={
                "customer_user": {"id": "cust_screens"},
                "redirect_uri": f"{stack.dashboard_url}/oauth_return",
            },
        ).json()["link_session_token"]
    _connect_page(page, stack, "start", linkSessionToken=token)
    expect(page.get_by_role("heading", name="Connect Your Bank")).to_be_visible()
    expect(page.get_by_role("timer")).to_have_count(0)


def test_a_return_window_that_finished_the_flow_sends_close_oauth(page: Page, stack: Stack) -> None:
    redirect_uri = f"{stack.dashboard_url}/oauth_return"
    with _api(stack) as api:
        token = api.post(
            "/link-session",
            json={"customer_user": {"id": "cust_screens"}, "redirect_uri": redirect_uri},
        ).json()["link_session_token"]
    page_api = {"Authorization": f"Bearer {token}"}
    oauth = httpx.post(
        f"{stack.sandbox_url}/connect-api/institution",
        json={"institution_id": "moneykit-oauth-bank"},
        headers=page_api,
    ).json()["oauth"]
    bank = urlsplit(oauth["url"])
    state = dict(p.split("=", 1) for p in bank.query.split("&"))["state"]
    decision = httpx.post(
        f"{bank.scheme}://{bank.netloc}/oauth/decision",
        content=urlencode({"state": state, "decision": "allow"}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert decision.status_code == 303
    returned_to = decision.headers["location"]
    assert returned_to.startswith(redirect_uri + "?")

    # The return window without an opener: continue() opened /continue with the redirect URL.
    _connect_page(page, stack, "continue", linkSessionToken=token, redirectURL=returned_to)
    page.get_by_role("button", name="Link accounts").click()
    page.get_by_role("button", name="Done").click()
    _wait_for_message(page, "link.close_oauth")
    types = [m["type"] for m in _messages(page) if m["type"] != "link.event"]
    assert types == ["connect.started", "link.complete", "link.close_oauth"]
