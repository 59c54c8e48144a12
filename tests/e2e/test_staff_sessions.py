"""Staff stay signed in across reloads and tabs; sign-out and an admin's revocation end it."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from linkdesk.store import Store, create_engine
from linkdesk.store.models import StaffSession
from tests.e2e.conftest import ADMIN, ADMIN_PASSWORD, AGENT, Stack, open_signed_in


def _a_link_id(stack: Stack) -> str:
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            link_id = conn.execute(sa.text("SELECT link_id FROM links LIMIT 1")).scalar_one()
    finally:
        engine.dispose()
    return str(link_id)


def _signed_in(page: Page) -> None:
    expect(page.get_by_test_id("stSidebar")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_have_count(0)


def _signed_out(page: Page) -> None:
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_have_count(0)


def _click_in_menu(page: Page, label: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=label).click()


def test_reload_and_new_tab_stay_signed_in_and_sign_out_reaches_every_tab(
    browser: Browser, stack: Stack
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        first = context.new_page()
        link_id = _a_link_id(stack)
        # A deep link opens after the sign-in form, on the page that was asked for.
        open_signed_in(first, stack, f"/links?link={link_id}")
        expect(first).to_have_url(f"{stack.dashboard_url}/links?link={link_id}")
        cookies = {c["name"]: c for c in context.cookies()}
        session_cookie = cookies["linkdesk_session"]
        assert session_cookie["httpOnly"] and session_cookie["sameSite"] == "Lax"
        # The link's detail is open, as the deep link asked.
        expect(first.get_by_role("tab", name="State history")).to_be_visible()

        first.reload()
        _signed_in(first)

        second = context.new_page()
        second.goto(f"{stack.dashboard_url}/activity")
        _signed_in(second)

        _click_in_menu(first, "Sign out")
        _signed_out(first)
        # The other tab is signed out on its next run.
        _click_in_menu(second, "Links")
        _signed_out(second)
        second.reload()
        _signed_out(second)
    finally:
        context.close()


def _end_sessions_of(stack: Stack, name: str) -> None:
    """End what earlier tests on this shared stack left signed in as ``name`` (their browsers are
    closed), so the page lists only the session this test opens."""
    store = Store(create_engine(stack.database_url))
    try:
        with store.write() as session:
            session.execute(
                sa.update(StaffSession)
                .where(StaffSession.name == name, StaffSession.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC), revoked_by="e2e setup")
            )
    finally:
        store.engine.dispose()


def test_an_admin_ending_a_session_signs_that_browser_out(browser: Browser, stack: Stack) -> None:
    _end_sessions_of(stack, AGENT)
    agent_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    admin_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        agent = agent_context.new_page()
        open_signed_in(agent, stack, "/activity")
        _signed_in(agent)

        admin = admin_context.new_page()
        open_signed_in(admin, stack, "/staff_sessions", user=ADMIN, password=ADMIN_PASSWORD)
        rows = admin.locator("[class*='st-key-staff-session-']").filter(
            has_text=f"{AGENT} · support"
        )
        expect(rows).to_have_count(1)  # the agent's browser, and only it
        # A click that lands while the page is still busy with its previous run can be dropped
        # by the browser side: clicked again while the row is still listed (ending is idempotent).
        for _ in range(5):
            if rows.count() == 0:
                break
            rows.first.get_by_role("button", name="End session").click()
            try:
                expect(rows).to_have_count(0, timeout=8_000)
                break
            except AssertionError:
                continue
        expect(rows).to_have_count(0)

        _click_in_menu(agent, "Links")
        _signed_out(agent)
        agent.reload()
        _signed_out(agent)
    finally:
        agent_context.close()
        admin_context.close()
