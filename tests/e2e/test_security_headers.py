"""The running dashboard process answers with security headers, cannot be framed by another
origin, keeps Streamlit's metrics to itself, and its CSP still lets every page and Connect run."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import Stack, open_signed_in
from tests.security.canary import Answer, running_canary

pytestmark = pytest.mark.e2e

EXPECTED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/links?link=x"),
        ("GET", "/repair?token=abc"),
        ("GET", "/_stcore/health"),
        ("GET", "/healthz"),
        ("GET", "/favicon.png"),
        ("GET", "/no/such/page.js"),
        ("POST", "/webhooks/moneykit"),
    ],
)
def test_every_response_carries_the_security_headers(stack: Stack, method: str, path: str) -> None:
    response = httpx.request(method, stack.dashboard_url + path, content=b"{}")
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.headers)
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert f"frame-src 'self' {stack.sandbox_url}" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]


@pytest.mark.parametrize(
    "path",
    ["/_stcore/metrics", "/_stcore/metrics/", "//_stcore/metrics", "/_stcore//metrics"],
)
def test_streamlit_metrics_answer_nobody(stack: Stack, path: str) -> None:
    for accept in ("text/plain", "application/x-protobuf"):
        response = httpx.get(stack.dashboard_url + path, headers={"Accept": accept})
        assert response.status_code in (403, 404), response.text[:200]
        assert "session" not in response.text.lower()


def test_another_origin_cannot_frame_the_sign_in_page(browser: Browser, stack: Stack) -> None:
    with running_canary() as attacker:
        attacker.routes["/frame.html"] = Answer(
            headers={"Content-Type": "text/html"},
            body=(
                f'<html><body><iframe id="victim" src="{stack.dashboard_url}/" '
                'width="800" height="600" onload="document.title=\'loaded\'"></iframe>'
                "</body></html>"
            ).encode(),
        )
        context = browser.new_context()
        try:
            page = context.new_page()
            refusals: list[str] = []
            page.on(
                "console",
                lambda message: (
                    refusals.append(message.text) if "frame" in message.text.lower() else None
                ),
            )
            page.goto(attacker.url("/frame.html"))
            expect(page).to_have_title("loaded")
            frame = page.frame_locator("#victim")
            # The frame holds the browser's error page, never the dashboard.
            victim = next(f for f in page.frames if f.parent_frame is not None)
            assert not victim.url.startswith(stack.dashboard_url), victim.url
            expect(frame.get_by_label("Username")).to_have_count(0)
            assert any("frame-ancestors" in text or "X-Frame-Options" in text for text in refusals)
        finally:
            context.close()


def test_the_policy_lets_every_page_run_without_a_single_violation(
    page: Page, stack: Stack
) -> None:
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    for path, ready in [
        ("/", "stVegaLiteChart"),
        ("/links", "stDataFrame"),
        ("/activity", "stDataFrame"),
    ]:
        # Each page opened afresh, as a deep link: sign-in, then the page and its charts.
        open_signed_in(page, stack, path)
        expect(page.get_by_test_id(ready).first).to_be_visible()
    # Connect's own iframe (the hosted UI on MONEYKIT_CONNECT_HOST) loads under the policy.
    open_signed_in(page, stack, "/connect")
    page.get_by_label("New customer id").fill("cust_csp_check")
    page.get_by_label("New customer id").press("Enter")
    page.get_by_role("button", name="Open MoneyKit Connect").click()
    frame = page.frame_locator("#moneykit-connect-frame")
    expect(frame.get_by_text("Credentials Bank").first).to_be_visible()
    assert violations == []
