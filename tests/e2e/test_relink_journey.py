"""The support relink journey at 1440x900, in both themes, through the real Connect flow.

A support agent relinks from a filtered list, leaves a Connect session half-way, comes back to
it, and an admin takes one over; the Links table is read at the size staff use; the totals and
the customer timeline follow each action at once; "Sync now" asks first and never queues twice.
Screenshots of each screen go to test-output/e2e/screenshots (listed in index.txt).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from playwright.sync_api import Browser, FrameLocator, Locator, Page, ViewportSize, expect
from sqlalchemy import func, select

from linkdesk.health import Health
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.models import AuditEntry, ConnectSession, Link, RelinkLease, WebhookEvent
from tests.e2e.conftest import (
    ADMIN,
    ADMIN_PASSWORD,
    AGENT,
    Stack,
    open_signed_in,
)
from tests.e2e.test_link_and_relink import CONNECT_FRAME, sign_in
from tests.e2e.test_repair_journey import keep_screenshot, link_health, sandbox_post
from ui.links_table import CELL_PADDING, COLUMN_WIDTHS, ROW_HEIGHT, VISIBLE_ROWS
from ui.render import ERROR_LABELS, HEALTH_LABELS

pytestmark = pytest.mark.e2e

WIDE = ViewportSize(width=1440, height=900)


@pytest.fixture()
def store(stack: Stack) -> Iterator[Store]:
    store = Store(create_engine(stack.database_url))
    yield store
    store.engine.dispose()


def new_page(browser: Browser, theme: str = "light") -> Page:
    context = browser.new_context(
        viewport=WIDE, color_scheme="dark" if theme == "dark" else "light"
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)
    return page


@pytest.fixture()
def pages(browser: Browser) -> Iterator[list[Page]]:
    """Pages opened by a test (each in its own browser context), closed afterwards."""
    opened: list[Page] = []
    yield opened
    for page in opened:
        page.context.close()


def open_page(pages: list[Page], browser: Browser, theme: str = "light") -> Page:
    page = new_page(browser, theme)
    pages.append(page)
    return page


def shot(page: Page, name: str, theme: str) -> None:
    keep_screenshot(page, f"relink-{name}-{theme}")


def select_first_row(page: Page) -> str:
    """Tick the first row of the Links table (the grid is drawn on a canvas: click its row
    selection box) and return the link id the page then shows."""
    grid = page.get_by_test_id("stDataFrame").first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 16, box["y"] + ROW_HEIGHT * 1.5)
    page.wait_for_url(re.compile(r"[?&]link=mk_"))
    match = re.search(r"[?&]link=([^&]+)", page.url)
    assert match is not None
    return match.group(1)


def connect_frame(page: Page) -> FrameLocator:
    expect(page.locator(CONNECT_FRAME)).to_be_visible()
    return page.frame_locator(CONNECT_FRAME)


def finish_relink(page: Page) -> None:
    """Credentials Bank user_good/pass_good, then Done (whichever screens this bank shows)."""
    frame = connect_frame(page)
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


def health_metric(page: Page) -> Locator:
    return page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text("Health", exact=True)
    )


def expired_banner_count(page: Page) -> int:
    banner = page.get_by_test_id("stAlertContentError").filter(has_text="expired login")
    expect(banner).to_be_visible()
    match = re.search(r"(\d+) links have an expired login", banner.inner_text())
    assert match is not None
    return int(match.group(1))


def settled_expired_count(page: Page, store: Store) -> int:
    """The expired-login count once the banner agrees with the store.

    A test before this one relinked a link, and MoneyKit's webhook about it is applied by the
    worker a moment later; the shared totals follow at their next count (every 10 s). This
    test's own action must be counted on the next run, so it starts from settled totals: no
    webhook of an earlier test still queued, and the banner equal to the store.
    """
    deadline = time.monotonic() + 60
    while True:
        with store.read() as session:
            truth = session.scalar(
                select(func.count())
                .select_from(Link)
                .where(Link.state == "error", Link.error_code == "auth_expired")
            )
            queued = session.scalar(
                select(func.count())
                .select_from(WebhookEvent)
                .where(WebhookEvent.status == "pending")
            )
        shown = expired_banner_count(page)
        if (shown == truth and not queued) or time.monotonic() > deadline:
            return shown
        page.wait_for_timeout(2000)
        page.reload()


def relink_sessions(store: Store, link_id: str) -> list[tuple[str, str]]:
    with store.read() as session:
        rows = session.execute(
            select(ConnectSession.started_by, ConnectSession.outcome)
            .where(ConnectSession.link_id == link_id, ConnectSession.mode == "relink")
            .order_by(ConnectSession.started_at)
        ).all()
    return [(row[0], row[1]) for row in rows]


def audit_of(store: Store, link_id: str, action: str) -> list[AuditEntry]:
    with store.read() as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.link_id == link_id, AuditEntry.action == action)
        ).all()
        session.expunge_all()
    return list(entries)


def lease_of(store: Store, link_id: str) -> RelinkLease | None:
    with store.read() as session:
        lease = session.get(RelinkLease, link_id)
        if lease is not None:
            session.expunge(lease)
        return lease


def choose(page: Page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_relink_from_a_filtered_list_shows_the_relinked_link_and_finishes_everything(
    browser: Browser, pages: list[Page], stack: Stack, store: Store, theme: str
) -> None:
    page = open_page(pages, browser, theme)
    open_signed_in(page, stack, "/links")
    expired = settled_expired_count(page, store)
    assert expired >= 2, "the demo world must hold expired logins"
    if theme == "light":
        # From the banner.
        page.get_by_role("button", name="Show them").click()
    else:
        # From a list filtered by error and sorted by bank name.
        choose(page, "Error", "Login expired (auth_expired)")
        choose(page, "Sort by", "Bank name")
    expect(page.get_by_text(f"{expired} matching links")).to_be_visible()
    sort = LinkSort.UPDATED_DESC if theme == "light" else LinkSort.INSTITUTION
    first = LinkQueries(store).list_links(LinkFilters(error_code="auth_expired"), sort=sort).rows
    # The list on screen is the one asked for (its first row's link id cell).
    expect(page.locator("[role=gridcell]").nth(5)).to_have_text(first[0].link_id)
    link_id = select_first_row(page)
    assert link_id == first[0].link_id
    customer = first[0].customer_id or "—"

    page.get_by_role("button", name="Relink", exact=True).click()
    connect_frame(page)
    shot(page, "1-connect-open", theme)
    finish_relink(page)

    # The page shows the link that was relinked, its new health and the outcome.
    success = page.get_by_test_id("stAlertContentSuccess")
    expect(success).to_contain_text(f"is connected again (link {link_id})")
    expect(health_metric(page)).to_contain_text("Healthy")
    assert f"link={link_id}" in page.url
    value = page.get_by_test_id("link-customer").locator("[data-role=value]")
    expect(value).to_have_text(customer)
    # The customer id is whole: its box is as wide as its text.
    assert value.evaluate("e => e.scrollWidth <= e.clientWidth")
    # The totals the relink changed are right on this same run.
    expect(page.get_by_text(f"{expired - 1} matching links")).to_be_visible()
    assert expired_banner_count(page) == expired - 1
    expect(page.locator(CONNECT_FRAME)).to_have_count(0)
    shot(page, "2-done", theme)

    # Session final, audit written, lease released.
    assert relink_sessions(store, link_id)[-1] == (AGENT, "success")
    relinks = audit_of(store, link_id, "connect.relink")
    assert [(entry.actor, entry.outcome) for entry in relinks] == [(AGENT, "success")]
    assert lease_of(store, link_id) is None
    detail = LinkDetailReads(store).get_link(link_id)
    assert detail is not None and detail.row.health is Health.HEALTHY


def test_abandon_resume_release_and_an_admin_take_over(
    browser: Browser, pages: list[Page], stack: Stack, store: Store
) -> None:
    rows = LinkQueries(store).list_links(LinkFilters(error_code="auth_expired")).rows
    assert rows, "the demo world must hold expired logins"
    link_id = rows[-1].link_id
    agent = open_page(pages, browser)
    open_signed_in(agent, stack, f"/links?link={link_id}")
    relink = agent.get_by_role("button", name="Relink", exact=True)

    # Abandon is reachable while the overlay covers the page, and ends everything at once.
    relink.click()
    connect_frame(agent)
    shot(agent, "3-abandon-above-the-overlay", "light")
    agent.get_by_test_id("moneykit-connect-abandon").click()
    expect(agent.locator(CONNECT_FRAME)).to_have_count(0)
    expect(agent.get_by_test_id("stAlertContentWarning")).to_contain_text("closed Connect")
    expect(relink).to_be_visible()
    assert relink_sessions(store, link_id) == [(AGENT, "exit")]
    assert lease_of(store, link_id) is None

    # The holder who lost the page gets Release…
    relink.click()
    connect_frame(agent)
    open_signed_in(agent, stack, f"/links?link={link_id}")
    expect(agent.get_by_text("You started a relink of this link")).to_be_visible()
    shot(agent, "4-holder-resume-release", "light")
    agent.get_by_role("button", name="Release", exact=True).click()
    expect(relink).to_be_visible()
    assert lease_of(store, link_id) is None
    assert relink_sessions(store, link_id) == [(AGENT, "exit"), (AGENT, "exit")]
    assert len(audit_of(store, link_id, "connect.relink_release")) == 1

    # …and Resume, which opens Connect again under the same reservation.
    relink.click()
    connect_frame(agent)
    open_signed_in(agent, stack, f"/links?link={link_id}")
    agent.get_by_role("button", name="Resume", exact=True).click()
    connect_frame(agent)
    lease = lease_of(store, link_id)
    assert lease is not None and lease.holder == AGENT
    assert relink_sessions(store, link_id)[-2:] == [(AGENT, "exit"), (AGENT, "pending")]
    assert len(audit_of(store, link_id, "connect.relink_resume")) == 1

    # An admin takes it over, saying why, and finishes the relink.
    admin = open_page(pages, browser, "dark")
    open_signed_in(admin, stack, f"/links?link={link_id}", user=ADMIN, password=ADMIN_PASSWORD)
    expect(admin.get_by_text(f"Relink in progress by {AGENT}")).to_be_visible()
    admin.get_by_label(re.compile("Why take this relink over")).fill("agent left for the day")
    shot(admin, "5-admin-take-over", "dark")
    admin.get_by_role("button", name="Take over").click()
    connect_frame(admin)
    taken = audit_of(store, link_id, "connect.relink_take_over")
    assert [(e.actor, e.reason) for e in taken] == [(ADMIN, "agent left for the day")]
    assert taken[0].detail is not None and AGENT in taken[0].detail
    lease = lease_of(store, link_id)
    assert lease is not None and lease.holder == ADMIN
    finish_relink(admin)
    expect(admin.get_by_test_id("stAlertContentSuccess")).to_contain_text(link_id)
    shot(admin, "6-admin-done", "dark")
    assert relink_sessions(store, link_id)[-2:] == [(AGENT, "exit"), (ADMIN, "success")]
    assert lease_of(store, link_id) is None


def test_totals_count_a_new_link_on_the_next_run(
    browser: Browser, pages: list[Page], stack: Stack, store: Store
) -> None:
    page = open_page(pages, browser)
    open_signed_in(page, stack, "/links")
    caption = page.get_by_text(re.compile(r"^\d+ matching links"))
    expect(caption).to_be_visible()
    before = int(caption.inner_text().split()[0])

    page.get_by_test_id("stSidebar").get_by_role("link", name="Connect a bank").click()
    field = page.get_by_label("New customer id")
    field.fill(f"cust_totals_{before}")
    field.press("Enter")
    page.get_by_role("button", name="Open MoneyKit Connect").click()
    frame = connect_frame(page)
    frame.get_by_role("button", name=re.compile("Credentials Bank")).click()
    sign_in(frame, "user_good", "pass_good")
    frame.get_by_role("button", name="Link accounts").click()
    frame.get_by_role("button", name="Done").click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_be_visible()

    page.get_by_test_id("stSidebar").get_by_role("link", name="Links").click()
    expect(page.get_by_text(f"{before + 1} matching links")).to_be_visible()
    all_links = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text("All links", exact=True)
    )
    expect(all_links.get_by_test_id("stMetricValue")).to_have_text(str(before + 1))
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Link)) == before + 1


def _text_widths(page: Page, texts: list[str]) -> dict[str, float]:
    widths = page.evaluate(
        """(texts) => {
            const family = getComputedStyle(document.body).fontFamily;
            const context = document.createElement('canvas').getContext('2d');
            context.font = '14px ' + family;
            return texts.map((text) => context.measureText(text).width);
        }""",
        texts,
    )
    return dict(zip(texts, widths, strict=True))


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_links_table_at_1440_shows_what_matters(
    browser: Browser, pages: list[Page], stack: Stack, store: Store, theme: str
) -> None:
    page = open_page(pages, browser, theme)
    open_signed_in(page, stack, "/links")
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    headers = page.locator("[role=columnheader]")
    # The grid draws on a canvas; its (hidden) accessible table carries the text.
    expect(headers).to_have_count(7)
    names = headers.all_inner_texts()
    assert names == ["Logo", "Institution", "Health", "Error", "Customer", "Link ID", "Last update"]
    grid.scroll_into_view_if_needed()
    shot(page, "7-links-table", theme)

    # Every column fits: no horizontal scroll, and each width holds its longest value.
    scroller = grid.locator(".dvn-scroller").first
    assert scroller.evaluate("e => e.scrollWidth <= e.clientWidth")
    rows = LinkQueries(store).list_links(LinkFilters(), limit=50).rows
    widths = _text_widths(
        page,
        [
            *HEALTH_LABELS.values(),
            *ERROR_LABELS.values(),
            *(row.link_id for row in rows),
            *(row.institution_name for row in rows),
        ],
    )
    for column, texts in {
        "Health": list(HEALTH_LABELS.values()),
        "Error": list(ERROR_LABELS.values()),
        "Link ID": [row.link_id for row in rows],
        "Institution": [row.institution_name for row in rows],
    }.items():
        widest = max(texts, key=lambda text: widths[text])
        assert widths[widest] + CELL_PADDING <= COLUMN_WIDTHS[column], (column, widest)

    # More rows in view than the grid's default ten.
    box = grid.bounding_box()
    assert box is not None and box["height"] >= ROW_HEIGHT * (VISIBLE_ROWS + 1)

    # "Last update" is the time "Recently changed first" sorts by.
    cells = page.locator("[role=gridcell]")
    expect(cells.first).to_be_attached()
    texts = cells.all_inner_texts()
    shown = [
        datetime.fromisoformat(texts[i])
        for i in range(names.index("Last update"), len(texts), len(names))
    ]
    assert len(shown) >= 10
    assert shown == sorted(shown, reverse=True)
    assert shown == [row.updated_at.replace(microsecond=0) for row in rows[: len(shown)]]


def _customer_with_every_link_healthy(store: Store) -> str:
    queries = LinkQueries(store)
    healthy = queries.list_links(LinkFilters(health=Health.HEALTHY), limit=200).rows
    for row in healthy:
        if row.customer_id is None:
            continue
        theirs = queries.list_links(LinkFilters(customer=row.customer_id), limit=50).rows
        if all(
            link.health is Health.HEALTHY and link.customer_id == row.customer_id for link in theirs
        ):
            return row.customer_id
    raise AssertionError("no customer whose links are all healthy")


def test_needs_action_heading_goes_once_the_link_is_healthy(
    browser: Browser, pages: list[Page], stack: Stack, store: Store
) -> None:
    customer = _customer_with_every_link_healthy(store)
    queries = LinkQueries(store)
    rows = queries.list_links(LinkFilters(customer=customer)).rows
    link = rows[0]
    sandbox_post(stack, f"/links/{link.link_id}/reset")
    # The sandbox's webhook reaches the dashboard, whose worker applies it within seconds.
    deadline = time.monotonic() + 60
    while link_health(store, link.link_id) is not Health.NEEDS_RELINK:
        assert time.monotonic() < deadline, "the webhook of the reset never arrived"
        time.sleep(0.5)
    page = open_page(pages, browser)
    open_signed_in(page, stack, f"/customer?customer={customer}")
    needs_action = page.get_by_role("heading", name="Needs action")
    expect(needs_action).to_be_visible()
    repair = page.locator(f".st-key-repair-{link.link_id}")
    repair.get_by_role("button", name="Start relink").click()
    finish_relink(page)
    expect(repair.get_by_test_id("stAlertContentSuccess")).to_be_visible()
    expect(needs_action).to_have_count(0)
    expect(page.get_by_role("heading", name="Repaired just now")).to_be_visible()
    shot(page, "8-customer-repaired", "light")


def test_sync_now_asks_with_the_count_and_never_queues_twice(
    browser: Browser, pages: list[Page], stack: Stack, store: Store
) -> None:
    page = open_page(pages, browser)
    open_signed_in(page, stack, "/links", user=ADMIN, password=ADMIN_PASSWORD)
    # The worker is paused so that the first request is still queued at the second.
    page.get_by_text("Sync worker and webhooks").click()
    page.get_by_role("button", name="Pause the sync worker").click()
    expect(page.get_by_role("button", name="Resume the sync worker")).to_be_visible()
    with store.read() as session:
        active = session.scalar(
            select(func.count()).select_from(Link).where(Link.state != "deleted")
        )
    try:
        for expected_toast in (
            f"{active} links queued for the sync worker",
            "Every link was already queued; nothing was added.",
        ):
            page.get_by_role("button", name="Sync now").click()
            dialog = page.get_by_role("dialog")
            expect(dialog).to_contain_text(f"This queues {active:,} links")
            shot(page, "9-sync-now-confirm", "light")
            dialog.get_by_role("button", name="Queue them").click()
            expect(page.get_by_test_id("stToast").filter(has_text=expected_toast)).to_be_visible()
            expect(dialog).to_have_count(0)
    finally:
        page.get_by_role("button", name="Resume the sync worker").click()
    with store.read() as session:
        details = session.scalars(
            select(AuditEntry.detail)
            .where(AuditEntry.action == "sync.trigger", AuditEntry.link_id.is_(None))
            .order_by(AuditEntry.at)
        ).all()
    assert details[-2:] == [f"{active} link(s) due now", "0 link(s) due now"]
