"""A person links a bank, relinks an expired link and gives up half-way, in a real browser.

The real `@moneykit/connect` launcher runs inside the dashboard and opens the sandbox's hosted
Connect UI; nothing on the way is stubbed.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import httpx
import pytest
from playwright.sync_api import FrameLocator, Page, expect
from sqlalchemy import select

from linkdesk.health import Health
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.models import AuditEntry, ConnectSession
from tests.e2e.conftest import AGENT, CLIENT_ID, CLIENT_SECRET, OUTPUT, Stack, open_signed_in

pytestmark = pytest.mark.e2e

CONNECT_FRAME = "#moneykit-connect-frame"


def store_for(stack: Stack) -> Store:
    return Store(create_engine(stack.database_url))


def sandbox_get(stack: Stack, path: str) -> dict[str, object]:
    with httpx.Client(base_url=stack.sandbox_url) as client:
        token = client.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        ).json()["access_token"]
        response = client.get(path, headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        return dict(response.json())


def open_connect_for_new_customer(page: Page, stack: Stack, customer_id: str) -> FrameLocator:
    open_signed_in(page, stack, "/connect")
    field = page.get_by_label("New customer id")
    field.fill(customer_id)
    field.press("Enter")
    button = page.get_by_role("button", name="Open MoneyKit Connect")
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator(CONNECT_FRAME)).to_be_visible()
    return page.frame_locator(CONNECT_FRAME)


def sign_in(frame: FrameLocator, username: str, password: str) -> None:
    frame.get_by_label("Username").fill(username)
    frame.get_by_label("Password").fill(password)
    frame.get_by_role("button", name=re.compile("^(Continue|Submit)$")).click()


def record_timing(name: str, milliseconds: float) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[name] = round(milliseconds)
    path.write_text(json.dumps(timings, indent=2))
    print(f"{name}: {milliseconds:.0f} ms")


def test_link_credentials_bank_shows_the_new_row_with_logo_and_colour(
    page: Page, stack: Stack
) -> None:
    customer_id = f"cust_e2e_{uuid.uuid4().hex[:8]}"
    frame = open_connect_for_new_customer(page, stack, customer_id)

    frame.get_by_role("button", name=re.compile("Credentials Bank")).click()
    sign_in(frame, "user_good", "pass_good")
    frame.get_by_role("button", name="Link accounts").click()
    done = frame.get_by_role("button", name="Done")
    expect(done).to_be_visible()
    clicked_at = time.monotonic()
    done.click()

    success = page.locator("[data-testid='stAlertContentSuccess']", has_text="Credentials Bank")
    expect(success).to_be_visible()
    record_timing("link_success_to_row_ms", (time.monotonic() - clicked_at) * 1000)
    expect(page.locator(CONNECT_FRAME)).to_have_count(0)

    # Exactly one link for this customer, exchanged exactly once.
    store = store_for(stack)
    rows = LinkQueries(store).list_links(LinkFilters(customer=customer_id)).rows
    assert len(rows) == 1
    link = rows[0]
    assert link.institution_id == "moneykit-creds-bank"
    assert link.state == "connected"
    with store.read() as session:
        sessions = session.scalars(
            select(ConnectSession).where(ConnectSession.link_id == link.link_id)
        ).all()
        exchanges = session.scalars(
            select(AuditEntry).where(
                AuditEntry.link_id == link.link_id, AuditEntry.action == "connect.exchange"
            )
        ).all()
    assert [s.outcome for s in sessions] == ["success"]
    assert len(exchanges) == 1

    # The row is on the Links page, and its detail shows the logo and the brand colour.
    page.get_by_role("link", name="Open the new link on the Links page").click()
    card = page.get_by_test_id("institution-card")
    expect(card).to_be_visible()
    institution = sandbox_get(stack, "/institutions/moneykit-creds-bank")
    expect(card).to_have_attribute("data-colour", str(institution["color"]).lower())
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"^data:image/svg\+xml"))
    expect(card).to_contain_text("Credentials Bank")

    open_signed_in(page, stack, f"/links?customer={customer_id}")
    expect(page.get_by_text("1 matching links")).to_be_visible()
    # The grid draws on a canvas; its accessible cells carry the text.
    cells = page.locator("[role=gridcell]")
    expect(cells.filter(has_text=re.compile(f"^{customer_id}$"))).to_have_count(1)
    expect(cells.filter(has_text=re.compile("^Credentials Bank$"))).to_have_count(1)


def test_relink_an_expired_link_makes_it_healthy(page: Page, stack: Stack) -> None:
    store = store_for(stack)
    expired = LinkQueries(store).list_links(LinkFilters(error_code="auth_expired"), limit=1).rows
    assert expired, "the demo data must hold auth_expired links"
    link_id = expired[0].link_id

    open_signed_in(page, stack, f"/links?link={link_id}")
    expect(page.get_by_text("Login expired (auth_expired)").first).to_be_visible()
    page.get_by_role("button", name="Relink").click()
    expect(page.locator(CONNECT_FRAME)).to_be_visible()
    frame = page.frame_locator(CONNECT_FRAME)
    sign_in(frame, "user_good", "pass_good")
    links_accounts = frame.get_by_role("button", name="Link accounts")
    done = frame.get_by_role("button", name="Done")
    expect(links_accounts.or_(done)).to_be_visible()
    if links_accounts.is_visible():
        links_accounts.click()
    done.click()

    expect(page.locator("[data-testid='stAlertContentSuccess']")).to_be_visible()
    health = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text("Health", exact=True)
    )
    expect(health).to_contain_text("Healthy")

    row = LinkDetailReads(store).get_link(link_id)
    assert row is not None
    assert row.row.state == "connected"
    assert row.row.health is Health.HEALTHY
    assert sandbox_get(stack, f"/links/{link_id}")["state"] == "connected"
    with store.read() as session:
        relinks = session.scalars(
            select(AuditEntry).where(
                AuditEntry.link_id == link_id, AuditEntry.action == "connect.relink"
            )
        ).all()
    assert [(entry.actor, entry.outcome) for entry in relinks] == [(AGENT, "success")]


def test_closing_connect_or_failing_sign_in_tells_the_user_and_is_recorded(
    page: Page, stack: Stack
) -> None:
    customer_id = f"cust_e2e_{uuid.uuid4().hex[:8]}"
    frame = open_connect_for_new_customer(page, stack, customer_id)
    frame.get_by_role("button", name="Close").first.click()
    expect(page.locator("[data-testid='stAlertContentWarning']")).to_contain_text("closed Connect")

    page.get_by_role("button", name="Open MoneyKit Connect").click()
    frame = page.frame_locator(CONNECT_FRAME)
    frame.get_by_role("button", name=re.compile("Credentials Bank")).click()
    sign_in(frame, "user_good", "wrong-password")
    frame.get_by_role("button", name=re.compile("^(Close|Exit)$")).first.click()
    warning = page.locator("[data-testid='stAlertContentWarning']")
    expect(warning).to_contain_text("invalid_credentials")

    with store_for(stack).read() as session:
        outcomes = session.execute(
            select(ConnectSession.outcome, ConnectSession.exit_error_id)
            .where(ConnectSession.customer_id == customer_id)
            .order_by(ConnectSession.started_at)
        ).all()
    assert [tuple(row) for row in outcomes] == [("exit", None), ("exit", "invalid_credentials")]
