"""OIDC sign-in through st.login against a real provider (npm oidc-provider) on a loopback port."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import OUTPUT, ROOT, Stack, free_port, running_stack, stop, wait_for

PROVIDER_DIR = ROOT / "tests" / "e2e" / "oidc"
CLIENT_ID = "linkdesk-e2e"
CLIENT_SECRET = "linkdesk-e2e-secret"
GROUPS = {"ada": ["linkdesk-admins"], "sam": ["linkdesk-support", "other-team"]}


@pytest.fixture(scope="module")
def oidc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the test OIDC provider is not installed: run `make test` (npm ci in tests)")
    node = shutil.which("node")
    assert node, "node is needed for the test OIDC provider"
    work = tmp_path_factory.mktemp("oidc")
    provider_port, dashboard_port = free_port(), free_port()
    issuer = f"http://localhost:{provider_port}"
    dashboard_url = f"http://localhost:{dashboard_port}"
    secrets_file = work / "secrets.toml"
    secrets_file.write_text(
        f"""
[auth]
redirect_uri = "{dashboard_url}/oauth2callback"
cookie_secret = "{secrets.token_hex(32)}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
server_metadata_url = "{issuer}/.well-known/openid-configuration"
client_kwargs = {{ scope = "openid email profile groups", prompt = "login" }}

[linkdesk.oidc]
role_claim = "groups"
role_map = {{ "linkdesk-admins" = "admin", "linkdesk-support" = "support" }}
"""
    )
    logs = OUTPUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    provider = subprocess.Popen(
        [
            node,
            "provider.mjs",
            str(provider_port),
            CLIENT_ID,
            CLIENT_SECRET,
            f"{dashboard_url}/oauth2callback",
            # st.logout asks the provider to send the browser back to the callback.
            f"{dashboard_url}/oauth2callback",
        ],
        cwd=PROVIDER_DIR,
        env={"PATH": str(Path(node).parent), "GROUPS": json.dumps(GROUPS)},
        stdout=(logs / "oidc-provider.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(f"{issuer}/.well-known/openid-configuration", provider)
        with running_stack(
            work,
            name="oidc-",
            dashboard_port=dashboard_port,
            extra_env={"STREAMLIT_SECRETS_FILES": str(secrets_file)},
        ) as stack:
            yield stack
    finally:
        stop(provider)


def _sign_in_with_provider(page: Page, stack: Stack, user: str) -> None:
    page.goto(stack.dashboard_url + "/")
    page.get_by_role("button", name="Sign in with your company account").click()
    # The provider's own pages: sign-in (any name in development mode), then consent.
    page.locator("input[name=login]").fill(user)
    page.locator("input[name=password]").fill("any password")
    page.locator("button[type=submit]").click()
    consent = page.locator("button[type=submit]")
    expect(consent.or_(page.get_by_test_id("stSidebar"))).to_be_visible()
    if consent.is_visible():
        consent.click()
    expect(page.get_by_test_id("stSidebar")).to_be_visible()


@pytest.mark.parametrize(
    ("user", "role"), [("ada", "admin"), ("sam", "support"), ("zed", "viewer")]
)
def test_oidc_sign_in_takes_the_role_from_the_groups_claim(
    browser: Browser, oidc_stack: Stack, user: str, role: str
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        _sign_in_with_provider(page, oidc_stack, user)
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar.get_by_text(f"{user} · {role}")).to_be_visible()
        webhooks = sidebar.get_by_role("link", name="Webhooks")
        expect(webhooks).to_have_count(1 if role == "admin" else 0)
        page.reload()
        expect(sidebar.get_by_text(f"{user} · {role}")).to_be_visible()
        sidebar.get_by_role("link", name="Sign out").click()
        # The provider ends its own session too, after asking.
        page.get_by_role("button", name="Yes, sign me out").click()
        sign_in = page.get_by_role("button", name="Sign in with your company account")
        expect(sign_in).to_be_visible()
        page.reload()
        expect(sign_in).to_be_visible()
    finally:
        context.close()
