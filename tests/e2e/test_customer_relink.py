"""Support sends a customer a relink link; the customer repairs the link in another browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from linkdesk.health import Health
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.models import AuditEntry
from tests.e2e.conftest import AGENT, Stack, open_signed_in

pytestmark = pytest.mark.e2e

CONNECT_FRAME = "#moneykit-connect-frame"


def test_customer_relink_link_repairs_the_link_once_and_is_audited(
    page: Page, browser: Browser, stack: Stack
) -> None:
    store = Store(create_engine(stack.database_url))
    expired = LinkQueries(store).list_links(LinkFilters(error_code="auth_expired"), limit=5).rows
    link = expired[-1]  # not the one the agent relinks in the other test

    # The agent creates the link for the customer.
    open_signed_in(page, stack, f"/links?link={link.link_id}")
    page.get_by_test_id("stExpander").get_by_text("Send the customer a relink link").click()
    page.get_by_label("Reason (kept in the audit log)").fill("customer asked by phone")
    page.get_by_role("button", name="Create a relink link").click()
    code = page.get_by_test_id("stCode").filter(has_text="/repair?token=")
    expect(code).to_be_visible()
    url = re.search(r"https?://\S+/repair\?token=\S+", code.inner_text())
    assert url is not None
    customer_url = url.group(0)

    # The customer opens it in a browser of their own: no sign-in, no staff pages.
    customer = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        customer_page = customer.new_page()
        customer_page.goto(customer_url)
        expect(
            customer_page.get_by_role("heading", name="Repair your bank connection")
        ).to_be_visible()
        expect(customer_page.get_by_test_id("stSidebar")).to_have_count(0)
        customer_page.get_by_role("button", name="Reconnect my bank").click()
        frame = customer_page.frame_locator(CONNECT_FRAME)
        frame.get_by_label("Username").fill("user_good")
        frame.get_by_label("Password").fill("pass_good")
        frame.get_by_role("button", name="Continue").click()
        frame.get_by_role("button", name="Done").click()
        expect(customer_page.get_by_text("Your bank is connected again")).to_be_visible()

        # The same URL does not work twice, and says so as soon as it opens.
        customer_page.goto(customer_url)
        expect(customer_page.get_by_test_id("stAlertContentError")).to_contain_text(
            "already been used"
        )
        expect(customer_page.get_by_role("button", name="Reconnect my bank")).to_have_count(0)
    finally:
        customer.close()

    detail = LinkDetailReads(store).get_link(link.link_id)
    assert detail is not None and detail.row.health is Health.HEALTHY
    with store.read() as session:
        audit = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.outcome, AuditEntry.reason)
            .where(AuditEntry.link_id == link.link_id)
            .order_by(AuditEntry.id)
        ).all()
    actions = [(row.action, row.outcome) for row in audit]
    assert ("customer_link.create", "created") in actions
    assert ("customer_link.redeem", "started") in actions
    assert ("customer_link.finish", "success") in actions
    creation = next(row for row in audit if row.action == "customer_link.create")
    assert (creation.actor, creation.reason) == (AGENT, "customer asked by phone")
