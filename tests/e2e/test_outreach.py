"""Customer outreach end to end: a support agent emails every customer of a filtered Links view
their relink link, the background sender delivers to a real SMTP server (aiosmtpd, in this
process), a customer opens the emailed link in a browser of their own and relinks through the
real Connect flow, and the agent sees it finished."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FilePayload, Locator, Page, expect

from linkdesk.bootstrap import build_services
from linkdesk.health import Health
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.settings import Settings
from linkdesk.store import Store, create_engine
from tests.e2e.conftest import (
    ADMIN,
    ADMIN_PASSWORD,
    OUTPUT,
    Stack,
    open_signed_in,
    running_stack,
)
from tests.smtp_inbox import Inbox, smtp_inbox

pytestmark = pytest.mark.e2e

CONNECT_FRAME = "#moneykit-connect-frame"
SCREENSHOTS = OUTPUT / "screenshots"


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    with smtp_inbox() as running:
        yield running


@pytest.fixture(scope="module")
def outreach_stack(tmp_path_factory: pytest.TempPathFactory, inbox: Inbox) -> Iterator[Stack]:
    smtp = {
        "LINKDESK_SMTP_HOST": "127.0.0.1",
        "LINKDESK_SMTP_PORT": str(inbox.port),
        "LINKDESK_SMTP_TLS": "none",
        "LINKDESK_SMTP_SENDER": "Support <support@example.com>",
        "LINKDESK_OUTREACH_EMAILS_PER_MINUTE": "600",
    }
    with running_stack(
        tmp_path_factory.mktemp("outreach"), name="outreach-", extra_env=smtp
    ) as running:
        yield running


def customer_stages(stack: Stack, customer_id: str) -> dict[str, str]:
    """link id -> where its relink email stands, read from the stack's store."""
    services = build_services(
        Settings(database_url=stack.database_url, moneykit_base_url=stack.sandbox_url),
        migrate_schema=False,
    )
    try:
        return {t.link_id: t.stage for t in services.outreach.customer_tracking(customer_id)}
    finally:
        services.close()


def metric(page: Page, label: str) -> Locator:
    """The value of the metric labelled exactly ``label``."""
    box = page.get_by_test_id("stMetric").filter(has=page.get_by_text(label, exact=True))
    return box.get_by_test_id("stMetricValue")


def test_outreach_from_a_filtered_view_to_a_finished_relink(
    page: Page, browser: Browser, outreach_stack: Stack, inbox: Inbox, tmp_path: Path
) -> None:
    stack = outreach_stack
    store = Store(create_engine(stack.database_url))
    expired = LinkQueries(store).list_links(LinkFilters(error_code="auth_expired"), limit=500).rows
    assert expired, "the demo world has links with an expired login"
    # The bank with the most expired logins, so the campaign emails several customers.
    per_bank = Counter(row.institution_id for row in expired if row.customer_id)
    bank = per_bank.most_common(1)[0][0]
    view = [row for row in expired if row.institution_id == bank and row.customer_id]
    customers = sorted({row.customer_id for row in view if row.customer_id})

    # An admin imports the customers' addresses from a CSV file (one bad row, reported).
    admin = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        admin_page = admin.new_page()
        open_signed_in(admin_page, stack, "/outreach_admin", user=ADMIN, password=ADMIN_PASSWORD)
        csv = "customer_id,email\n" + "".join(f"{c},{c}@example.com\n" for c in customers)
        csv += "cust_bad,not-an-address\n"
        upload = FilePayload(name="addresses.csv", mimeType="text/csv", buffer=csv.encode())
        admin_page.locator("input[type=file]").set_input_files(files=[upload])
        admin_page.get_by_role("button", name="Import the addresses").click()
        expect(admin_page.get_by_text(f"{len(customers)} added, 0 updated")).to_be_visible()
        expect(admin_page.get_by_text("1 row was not imported")).to_be_visible()
    finally:
        admin.close()

    # The support agent filters Links to one bank's expired logins and starts outreach there.
    open_signed_in(page, stack, f"/links?error=auth_expired&institution={bank}")
    page.get_by_role("link", name="Email relink links to these customers").click()
    expect(page.get_by_role("heading", name="Email relink links to customers")).to_be_visible()
    expect(metric(page, "To email")).to_have_text(str(len(view)))
    expect(page.get_by_text("Subject: Please reconnect your")).to_be_visible()
    preview = page.get_by_test_id("stCode").filter(has_text="PREVIEW-NOT-A-WORKING-LINK")
    expect(preview).to_contain_text(f"{stack.dashboard_url}/repair?token=")
    page.screenshot(path=str(SCREENSHOTS / "outreach-preview-light.png"), full_page=True)
    page.get_by_text("I checked the preview").click()
    emails = f"{len(view)} relink email{'' if len(view) == 1 else 's'}"
    page.get_by_role("button", name=f"Send {emails}").click()
    expect(page.get_by_text(f"Done: {emails} sent.")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "outreach-done-light.png"), full_page=True)

    delivered = inbox.wait_for(len(view))
    assert sorted(m.envelope_to[0] for m in delivered) == sorted(
        f"{row.customer_id}@example.com" for row in view
    )
    mail = delivered[0]
    customer_id = mail.envelope_to[0].split("@", 1)[0]
    (link,) = mail.repair_links()
    assert link.startswith(f"{stack.dashboard_url}/repair?token=")
    assert link in mail.html
    assert mail.subject.startswith("Please reconnect your ")

    # The customer opens the emailed link in a browser of their own and relinks.
    customer = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        customer_page = customer.new_page()
        customer_page.goto(link)
        expect(
            customer_page.get_by_role("heading", name="Repair your bank connection")
        ).to_be_visible()
        customer_page.get_by_role("button", name="Reconnect my bank").click()
        frame = customer_page.frame_locator(CONNECT_FRAME)
        frame.get_by_label("Username").fill("user_good")
        frame.get_by_label("Password").fill("pass_good")
        frame.get_by_role("button", name="Continue").click()
        frame.get_by_role("button", name="Done").click()
        expect(customer_page.get_by_text("Your bank is connected again")).to_be_visible()
    finally:
        customer.close()

    # The agent sees it finished: in the outreach funnel and on the customer's timeline.
    open_signed_in(page, stack, "/funnel")
    expect(metric(page, "Finished the relink")).to_have_text("1")
    expect(metric(page, "Emailed")).to_have_text(str(len(view)))
    open_signed_in(page, stack, f"/customer?customer={customer_id}")
    expect(page.get_by_role("heading", name="Relink emails")).to_be_visible()
    # The table's cells are drawn on a canvas; its accessible copy carries the text.
    cells = page.locator("[role=gridcell]")
    expect(cells.filter(has_text=re.compile("^✅ Finished$"))).to_have_count(1)
    page.screenshot(path=str(SCREENSHOTS / "outreach-customer-timeline-light.png"), full_page=True)
    stages = customer_stages(stack, customer_id)
    assert "finished" in stages.values()
    relinked = next(link_id for link_id, stage in stages.items() if stage == "finished")
    detail = LinkDetailReads(store).get_link(relinked)
    assert detail is not None and detail.row.health is Health.HEALTHY
    store.dispose()
