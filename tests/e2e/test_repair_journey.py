"""Someone who has never seen the dashboard: from the Overview to the repair of a link that broke.

A healthy demo link loses its bank login at MoneyKit (the sandbox's reset, which also sends the
webhook); the dashboard learns it through the webhook. The person then opens the Overview, finds
the customer under "Broke today", opens the customer's timeline, reads why, and starts the
relink; Connect opens in relink mode. The walk is timed (printed and kept in
test-output/e2e/timings.json, never asserted), and the relink is then finished so the link is
left healthy for the other tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import pytest
from playwright.sync_api import Page, expect

from linkdesk.health import Health
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.link_rows import LinkRow
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from tests.e2e.conftest import CLIENT_ID, CLIENT_SECRET, OUTPUT, ROOT, Stack, open_signed_in
from tests.e2e.test_link_and_relink import CONNECT_FRAME, record_timing, sign_in

pytestmark = pytest.mark.e2e


def sandbox_post(stack: Stack, path: str) -> None:
    with httpx.Client(base_url=stack.sandbox_url) as client:
        token = client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ).json()["access_token"]
        client.post(path, headers={"Authorization": f"Bearer {token}"}).raise_for_status()


def link_health(store: Store, link_id: str) -> Health | None:
    detail = LinkDetailReads(store).get_link(link_id)
    return detail.row.health if detail else None


def break_a_healthy_link(stack: Stack, store: Store) -> LinkRow:
    healthy = LinkQueries(store).list_links(LinkFilters(health=Health.HEALTHY), limit=50).rows
    link = next(row for row in reversed(healthy) if row.customer_id)
    sandbox_post(stack, f"/links/{link.link_id}/reset")
    # The webhook reaches the dashboard's receiver and its worker applies it within seconds.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if link_health(store, link.link_id) is Health.NEEDS_RELINK:
            return link
        time.sleep(0.5)
    # Should the webhook be lost, a sync reads the new state the way the worker would.
    subprocess.run([sys.executable, "-m", "linkdesk", "sync"], cwd=ROOT, env=stack.env, check=True)
    assert link_health(store, link.link_id) is Health.NEEDS_RELINK
    return link


def keep_screenshot(page: Page, name: str) -> None:
    """A viewport screenshot of a step, listed with the page tour's in screenshots/index.txt."""
    folder = OUTPUT / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    index = folder / "index.txt"
    listed = set(index.read_text().split()) if index.exists() else set()
    listed.add(str(path.relative_to(ROOT)))
    index.write_text("\n".join(sorted(listed)) + "\n")


def test_from_the_overview_to_a_started_relink(page: Page, stack: Stack) -> None:
    store = Store(create_engine(stack.database_url))
    link = break_a_healthy_link(stack, store)
    customer = str(link.customer_id)

    open_signed_in(page, stack, "/")
    started = time.monotonic()

    def step(name: str) -> None:
        record_timing(f"journey_{name}_ms", (time.monotonic() - started) * 1000)

    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    broke_today = page.locator(".st-key-broke-today")
    expect(broke_today.get_by_role("heading", name="Broke today")).to_be_visible()
    customer_link = broke_today.get_by_role("link", name=customer, exact=True)
    expect(customer_link).to_be_visible()
    step("overview_shows_the_customer")
    keep_screenshot(page, "journey-1-overview-broke-today")
    customer_link.click()

    expect(page.get_by_role("heading", name="Customer timeline", exact=True)).to_be_visible()
    assert f"customer={customer}" in page.url
    repair = page.locator(f".st-key-repair-{link.link_id}")
    expect(repair).to_contain_text("Login expired (auth_expired)")  # the state change: why
    expect(repair).to_contain_text("Bank login expired")  # the playbook
    expect(repair).to_contain_text("Your bank asks you to log in again")
    step("customer_shows_why")
    repair.get_by_role("button", name="Start relink").click()

    expect(page.locator(CONNECT_FRAME)).to_be_visible()
    expect(repair).to_contain_text("MoneyKit Connect is open to relink a bank")
    step("overview_to_relink_started")
    keep_screenshot(page, "journey-2-customer-relink-started")

    # Finish the repair (the relink itself is tested in test_link_and_relink). Which screens
    # Connect shows depends on the bank: credentials, an account choice, or straight to done.
    frame = page.frame_locator(CONNECT_FRAME)
    username = frame.get_by_label("Username")
    link_accounts = frame.get_by_role("button", name="Link accounts")
    done = frame.get_by_role("button", name="Done")
    expect(username.or_(link_accounts).or_(done)).to_be_visible()
    if username.is_visible():
        sign_in(frame, "user_good", "pass_good")
        expect(link_accounts.or_(done)).to_be_visible()
    if link_accounts.is_visible():
        link_accounts.click()
    done.click()
    expect(repair.get_by_test_id("stAlertContentSuccess")).to_be_visible()
    step("overview_to_repaired")
    assert link_health(store, link.link_id) is Health.HEALTHY
    store.engine.dispose()


def test_a_number_on_the_overview_opens_the_list_behind_it(page: Page, stack: Stack) -> None:
    store = Store(create_engine(stack.database_url))
    expired = LinkQueries(store).count_links(LinkFilters(error_code="auth_expired"))
    store.engine.dispose()
    assert expired > 0
    # Visit the unfiltered Links page first: a filter chosen by a link must still apply after.
    open_signed_in(page, stack, "/links")
    expect(page.get_by_text(re.compile(r"^\d+ matching links"))).to_be_visible()
    page.get_by_test_id("stSidebar").get_by_role("link", name="Overview").click()
    # "Show them" under Login expired (the error-code list below links to the same view).
    login_expired = page.get_by_test_id("stMetric").filter(has_text="Login expired")
    expect(login_expired).to_be_visible()
    page.locator(".st-key-overview-live").get_by_role("link", name="Show them").click()
    expect(page.get_by_role("heading", name="Links", exact=True)).to_be_visible()
    assert "error=auth_expired" in page.url
    expect(page.get_by_text(f"{expired} matching links")).to_be_visible()
