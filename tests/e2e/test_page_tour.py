"""Every page in a real browser, in the light and the dark theme, with a screenshot of each.

The dashboard follows the browser's colour scheme (both palettes are in .streamlit/config.toml),
so each theme is a browser context with `prefers-color-scheme` set. A page counts as drawn when
Streamlit's "Running…" status, spinners and skeletons are gone; then its own content must be on
screen, no exception element may be shown, and a full-page screenshot is kept in
test-output/e2e/screenshots/<page>-<theme>.png (listed in index.txt there).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Locator, Page, expect

from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.models import CustomerLinkToken, RelinkLease
from tests.e2e.conftest import ADMIN, ADMIN_PASSWORD, OUTPUT, Stack, open_signed_in

pytestmark = pytest.mark.e2e

SCREENSHOTS = OUTPUT / "screenshots"
THEMES = ("light", "dark")
BUSY = (
    "[data-testid='stStatusWidget'] :text('Running'), [data-testid='stSpinner'], "
    "[data-testid='stSkeleton']"
)
# Light text on a dark background, or the other way round: the app background's luminance.
BACKGROUND_IS_DARK = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    const [r, g, b] = getComputedStyle(app).backgroundColor.match(/\\d+/g).map(Number);
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) < 128;
}"""


def settle(page: Page, *, quiet_for: float = 0.6, timeout: float = 45) -> None:
    """Wait until the page has finished drawing: nothing busy for ``quiet_for`` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        if page.locator(BUSY).count() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= quiet_for:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(100)
    raise AssertionError(f"{page.url} was still drawing after {timeout} s")


def full_page_screenshot(page: Page, path: Path) -> None:
    """Streamlit scrolls inside its main container, not the document: grow the viewport to the
    container's height first, so the screenshot holds the whole page."""
    height = page.evaluate(
        """() => {
            const main = document.querySelector('[data-testid="stMain"]');
            return main ? main.scrollHeight : document.body.scrollHeight;
        }"""
    )
    width = (page.viewport_size or {"width": 1400})["width"]
    page.set_viewport_size({"width": width, "height": max(1000, min(int(height) + 40, 12_000))})
    settle(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def heading(page: Page, name: str) -> Locator:
    return page.get_by_role("heading", name=name, exact=True)


@dataclass(frozen=True)
class Fixtures:
    """Data of the running stack the pages are opened with."""

    expired_link: str
    customer: str
    repair_url: str


@pytest.fixture(autouse=True)
def patient_expect() -> None:
    # The first page of a fresh server compiles every module; give it the suite's usual time.
    expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def tour_data(stack: Stack, browser: Browser) -> Fixtures:
    expect.set_options(timeout=30_000)
    store = Store(create_engine(stack.database_url))
    queries = LinkQueries(store)
    candidates = queries.list_links(LinkFilters(error_code="auth_expired"), limit=50).rows
    with store.read() as session:
        # A link has one live customer relink link at most; other tests on this stack make some.
        taken = set(session.scalars(sa.select(CustomerLinkToken.link_id)))
        leased = set(session.scalars(sa.select(RelinkLease.link_id)))
    link = next(
        row for row in reversed(candidates) if row.customer_id and row.link_id not in taken | leased
    )
    store.engine.dispose()
    # A customer relink link, made the way support makes one (its token is used only on press).
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        open_signed_in(page, stack, f"/links?link={link.link_id}")
        reason = page.get_by_label("Reason (kept in the audit log)")
        expander = page.get_by_test_id("stExpander").filter(
            has_text="Send the customer a relink link"
        )
        # Open it only while it is closed (its body is inert then): a click sent while the page
        # is still busy must not be undone by a second one.
        for _ in range(10):
            if expander.get_by_test_id("stExpanderDetails").get_attribute("inert") is not None:
                expander.get_by_text("Send the customer a relink link").click()
            try:
                expect(reason).to_be_visible(timeout=5_000)
                break
            except AssertionError:
                continue
        reason.fill("page tour screenshot")
        page.get_by_role("button", name="Create a relink link").click()
        code = page.get_by_test_id("stCode").filter(has_text="/repair?token=")
        expect(code).to_be_visible()
        found = re.search(r"https?://\S+/repair\?token=\S+", code.inner_text())
        assert found is not None
        repair_url = found.group(0)
    finally:
        context.close()
    assert link.customer_id is not None
    return Fixtures(expired_link=link.link_id, customer=link.customer_id, repair_url=repair_url)


@dataclass(frozen=True)
class TourStop:
    name: str
    open: Callable[[Page, Stack, Fixtures], None]
    expect_content: Callable[[Page, Fixtures], None]


def _staff(path: Callable[[Fixtures], str], *, admin: bool = False) -> Callable[..., None]:
    def open_page(page: Page, stack: Stack, data: Fixtures) -> None:
        if admin:
            open_signed_in(page, stack, path(data), user=ADMIN, password=ADMIN_PASSWORD)
        else:
            open_signed_in(page, stack, path(data))

    return open_page


def _overview(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Overview")).to_be_visible()
    expect(heading(page, "Broke today")).to_be_visible()
    expect(heading(page, "Links by health")).to_be_visible()
    expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()


def _links(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Links")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"\d+ matching links"))).to_be_visible()


def _link_detail(page: Page, data: Fixtures) -> None:
    expect(page.get_by_test_id("institution-card")).to_be_visible()
    expect(page.get_by_role("tab", name="State history")).to_be_visible()
    expect(page.get_by_role("button", name="Relink", exact=True)).to_be_visible()
    # A history tab is drawn when it is chosen (the page reruns for it).
    note = page.get_by_label("Add a note")
    expect(note).to_have_count(0)
    page.get_by_role("tab", name="Audit and notes").click()
    expect(note).to_be_visible()


def _customer(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Customer timeline")).to_be_visible()
    expect(heading(page, "Needs action")).to_be_visible()
    expect(page.get_by_text("Bank login expired").first).to_be_visible()
    expect(page.get_by_role("button", name="Start relink").first).to_be_visible()
    expect(heading(page, "Timeline")).to_be_visible()


def _funnel(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Connect funnel")).to_be_visible()
    # Sessions exist once another e2e test has opened Connect; on its own the tour sees none.
    expect(
        heading(page, "Sessions by day").or_(page.get_by_text("No Connect session in this period"))
    ).to_be_visible()


def _activity(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Activity")).to_be_visible()
    expect(page.get_by_role("tab", name="Audit log")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()  # the tour's own audit


def _webhooks(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Webhooks")).to_be_visible()
    expect(page.get_by_test_id("stMetricLabel").get_by_text("Deliveries")).to_be_visible()


def _alerts(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Alerts")).to_be_visible()
    expect(page.get_by_test_id("stMetricLabel").get_by_text("Firing", exact=True)).to_be_visible()
    expect(page.get_by_role("tab", name="Rules")).to_be_visible()


def _connect(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Connect a bank")).to_be_visible()
    expect(page.get_by_role("button", name="Open MoneyKit Connect")).to_be_visible()


def _outreach(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Email relink links to customers")).to_be_visible()
    expect(page.get_by_test_id("stMetricLabel").get_by_text("To email")).to_be_visible()


def _outreach_settings(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Outreach settings")).to_be_visible()
    expect(heading(page, "Relink email")).to_be_visible()


def _repair(page: Page, data: Fixtures) -> None:
    expect(heading(page, "Repair your bank connection")).to_be_visible()
    expect(page.get_by_role("button", name="Reconnect my bank")).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_have_count(0)


def _open_repair(page: Page, stack: Stack, data: Fixtures) -> None:
    page.goto(data.repair_url)  # a customer: no sign-in


STOPS = (
    TourStop("overview", _staff(lambda d: "/"), _overview),
    TourStop("links", _staff(lambda d: "/links"), _links),
    TourStop("link-detail", _staff(lambda d: f"/links?link={d.expired_link}"), _link_detail),
    TourStop("customer", _staff(lambda d: f"/customer?customer={d.customer}"), _customer),
    TourStop("funnel", _staff(lambda d: "/funnel"), _funnel),
    TourStop("activity", _staff(lambda d: "/activity"), _activity),
    TourStop("webhooks", _staff(lambda d: "/webhooks", admin=True), _webhooks),
    TourStop("alerts", _staff(lambda d: "/alerts"), _alerts),
    TourStop("connect", _staff(lambda d: "/connect"), _connect),
    TourStop("outreach", _staff(lambda d: "/outreach?error=auth_expired"), _outreach),
    TourStop(
        "outreach-settings", _staff(lambda d: "/outreach_admin", admin=True), _outreach_settings
    ),
    TourStop("repair", _open_repair, _repair),
)


@pytest.fixture(scope="module")
def screenshot_index() -> Iterator[dict[str, Path]]:
    taken: dict[str, Path] = {}
    yield taken
    if taken:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        index = SCREENSHOTS / "index.txt"
        earlier = index.read_text().split() if index.exists() else []
        paths = sorted({*earlier, *(str(path) for path in taken.values())})
        index.write_text("\n".join(paths) + "\n")
        print("screenshots:\n" + "\n".join(paths))


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("stop", STOPS, ids=[stop.name for stop in STOPS])
def test_every_page_draws_without_errors_in_both_themes(
    browser: Browser,
    stack: Stack,
    tour_data: Fixtures,
    screenshot_index: dict[str, Path],
    stop: TourStop,
    theme: str,
) -> None:
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000},
        color_scheme="dark" if theme == "dark" else "light",
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    path = SCREENSHOTS / f"{stop.name}-{theme}.png"
    try:
        stop.open(page, stack, tour_data)
        settle(page)
        stop.expect_content(page, tour_data)
        settle(page)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        assert page.evaluate(BACKGROUND_IS_DARK) is (theme == "dark")
    finally:
        full_page_screenshot(page, path)
        context.close()
    screenshot_index[f"{stop.name}-{theme}"] = path.relative_to(OUTPUT.parent.parent)
