"""Text from outside shown as text: hostile Markdown in customer ids, link states, error codes,
institution names, `?link=` values and webhook fields never becomes a link, an image or HTML in
the staff browser.

The hostile values point at a loopback canary server. Every page that shows them is opened in
Chromium; the canary must not have been asked for anything, and the page must hold no element
that links to it or loads from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect

from linkdesk.store import Store, create_engine
from linkdesk.store.models import (
    Customer,
    Institution,
    Link,
    LinkStateChange,
    WebhookDelivery,
)
from linkdesk.store.repository import link_moved
from tests.e2e.conftest import ADMIN, ADMIN_PASSWORD, Stack, open_signed_in, running_stack
from tests.security.canary import Canary, running_canary

pytestmark = pytest.mark.e2e

ZWSP = "\u200b"


def hostile(canary: Canary, tag: str) -> str:
    """One value that tries every way Markdown has to make a request or a link."""
    base = canary.url(f"/{tag}")
    return (
        f"![x]({base}-img) [click]({base}-link) <img src={base}-html> <{base}-auto> "
        f'<a href="{base}-a">a</a> **bold** :red[red] $x$'
    )


class World:
    def __init__(self, stack: Stack, canary: Canary) -> None:
        self.stack = stack
        self.canary = canary
        self.customer = hostile(canary, "customer")[:150]
        self.link_id = "mk_hostile_markup"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with (
        running_canary() as canary,
        running_stack(
            Path(tmp_path_factory.mktemp("hostile")),
            name="hostile-",
            demo_links=10,
            # Nothing rewrites the seeded rows while the pages are open.
            extra_env={"LINKDESK_RUN_WORKER": "false"},
        ) as stack,
    ):
        world = World(stack, canary)
        seed(world)
        yield world


def seed(world: World) -> None:
    store = Store(create_engine(world.stack.database_url))
    now = datetime.now(UTC)
    with store.write() as session:
        session.add(
            Institution(
                institution_id="ins_hostile",
                name=hostile(world.canary, "bank")[:300],
                color="#123456",
                updated_at=now,
            )
        )
        session.add(Customer(customer_id=world.customer, first_seen_at=now, updated_at=now))
        session.flush()
        session.add(
            Link(
                link_id=world.link_id,
                customer_id=world.customer,
                institution_id="ins_hostile",
                state="error",
                error_code=hostile(world.canary, "code")[:60],
                tags=[],
                created_at=now - timedelta(days=3),
                updated_at=now,
                discovered_at=now - timedelta(days=3),
            )
        )
        link_moved(session, None, ("error", hostile(world.canary, "code")[:60], "ins_hostile"))
        session.flush()
        session.add(
            LinkStateChange(
                link_id=world.link_id,
                at=now - timedelta(minutes=5),
                from_state="connected",
                to_state="error",
                to_error=hostile(world.canary, "change")[:60],
                source=hostile(world.canary, "src")[:20],
            )
        )
        session.add(
            WebhookDelivery(
                received_at=now,
                event=hostile(world.canary, "event")[:60],
                link_id=hostile(world.canary, "whlink")[:200],
                verdict="rejected",
                reason=hostile(world.canary, "why")[:40],
            )
        )
    store.dispose()


def shown(page: Page, text: str) -> None:
    """``text`` is on the page character for character (invisible zero-width spaces aside)."""
    expect(page.get_by_test_id("stMain")).to_contain_text(text.replace(ZWSP, ""))
    content = page.get_by_test_id("stMain").inner_text().replace(ZWSP, "")
    assert text in content


def assert_nothing_reached_the_canary(page: Page, world: World) -> None:
    origin = world.canary.origin
    # Everything the page asked for has been asked for once the network is idle.
    page.wait_for_load_state("networkidle")
    assert world.canary.hits == []
    # Links of the dashboard's own pages may carry the value in their query string; a link or
    # an image that goes to the canary may not exist at all (nor a mailto: one).
    links = page.locator(f"a[href^='{origin}'], a[href^='mailto:'], a[href^='//']")
    images = page.locator(f"img[src^='{origin}'], img[src^='//']")
    assert links.count() == 0, links.evaluate_all("els => els.map(e => e.outerHTML)")
    assert images.count() == 0, images.evaluate_all("els => els.map(e => e.outerHTML)")


@pytest.fixture()
def admin_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def open_as_admin(page: Page, world: World, path: str) -> None:
    open_signed_in(page, world.stack, path, user=ADMIN, password=ADMIN_PASSWORD)


def test_overview_shows_hostile_customer_bank_and_error_as_text(
    admin_page: Page, world: World
) -> None:
    open_as_admin(admin_page, world, "/")
    expect(admin_page.locator(".st-key-broke-today")).to_be_visible()
    # The customer id is the label of the link to their timeline, character for character.
    shown(admin_page, world.customer)
    shown(admin_page, hostile(world.canary, "bank"))
    assert_nothing_reached_the_canary(admin_page, world)


def test_link_detail_shows_hostile_state_customer_and_error_as_text(
    admin_page: Page, world: World
) -> None:
    open_as_admin(admin_page, world, f"/links?link={world.link_id}")
    expect(admin_page.get_by_test_id("link-customer")).to_be_visible()
    shown(admin_page, world.customer)
    shown(admin_page, "Error: Error (![x](")
    assert_nothing_reached_the_canary(admin_page, world)


def test_an_unknown_hostile_link_parameter_is_shown_as_text(admin_page: Page, world: World) -> None:
    value = hostile(world.canary, "param")
    open_as_admin(admin_page, world, f"/links?link={quote(value)}")
    expect(admin_page.get_by_test_id("stAlertContentWarning")).to_be_visible()
    shown(admin_page, f"No link with id {value} is in the store")
    assert_nothing_reached_the_canary(admin_page, world)


def test_customer_timeline_shows_a_hostile_customer_id_as_text(
    admin_page: Page, world: World
) -> None:
    open_as_admin(admin_page, world, f"/customer?customer={quote(world.customer)}")
    shown(admin_page, f"Links of {world.customer}")
    assert_nothing_reached_the_canary(admin_page, world)


def test_webhook_delivery_fields_are_shown_as_text(admin_page: Page, world: World) -> None:
    store = Store(create_engine(world.stack.database_url))
    with store.read() as session:
        delivery = session.query(WebhookDelivery).filter_by(verdict="rejected").one()
    store.dispose()
    open_as_admin(admin_page, world, f"/webhooks?delivery={delivery.id}")
    expect(admin_page.get_by_role("heading", name=f"Delivery {delivery.id}")).to_be_visible()
    shown(admin_page, "rejected · ![x](")
    assert_nothing_reached_the_canary(admin_page, world)
