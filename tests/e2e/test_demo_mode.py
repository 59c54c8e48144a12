"""Demo mode in the browser: a presenter plays a scenario and watches Linkdesk follow it.

Its own stack, set up as `make run` sets up the embedded default: demo mode on, the demo world
built by `python -m linkdesk demo-reset` (discovery through the API and its history), and the
sandbox sending its webhooks to the dashboard's receiver. Nothing is written to the store by the
test: the scenario runs in the sandbox and reaches Linkdesk through webhooks and the worker.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import ADMIN, ADMIN_PASSWORD, OUTPUT, Stack, open_signed_in, running_stack
from tests.e2e.test_page_tour import SCREENSHOTS, full_page_screenshot, settle

WORLD_LINKS = 300


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("e2e-demo"),
        name="demo-",
        demo_links=10,
        extra_env={"LINKDESK_DEMO_MODE": "true", "LINKDESK_DEMO_LINKS": str(WORLD_LINKS)},
        setup=(("migrate",), ("demo-reset",)),
    ) as stack:
        yield stack


def _record(name: str, path: Path) -> None:
    index = SCREENSHOTS / "index.txt"
    earlier = index.read_text().split() if index.exists() else []
    shown = str(path.relative_to(OUTPUT.parent.parent))
    index.write_text("\n".join(sorted({*earlier, shown})) + "\n")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_demo_page_in_both_themes(browser: Browser, demo_stack: Stack, theme: str) -> None:
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000},
        color_scheme="dark" if theme == "dark" else "light",
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)
    path = SCREENSHOTS / f"demo-{theme}.png"
    try:
        open_signed_in(page, demo_stack, "/demo", user=ADMIN, password=ADMIN_PASSWORD)
        settle(page)
        expect(page.get_by_role("heading", name="Demo", exact=True)).to_be_visible()
        expect(page.get_by_text(f"{WORLD_LINKS:,} links", exact=True)).to_be_visible()
        expect(page.get_by_text("A large bank's OAuth outage")).to_be_visible()
        expect(page.get_by_text("Credentials rotated", exact=True)).to_be_visible()
        expect(page.get_by_test_id("stException")).to_have_count(0)
    finally:
        full_page_screenshot(page, path)
        context.close()
    _record(f"demo-{theme}", path)


def _choose(page: Page, label_index: int, option: str) -> None:
    page.get_by_test_id("stSelectbox").nth(label_index).click()
    page.get_by_role("option", name=option).click()


def test_presenter_plays_credentials_rotated_and_the_links_follow(
    page: Page, demo_stack: Stack
) -> None:
    open_signed_in(page, demo_stack, "/demo", user=ADMIN, password=ADMIN_PASSWORD)
    expect(page.get_by_text("Demo mode", exact=False).first).to_be_visible()
    expect(page.get_by_text("Credentials rotated", exact=True)).to_be_visible()
    _choose(page, 1, "5× faster")  # the second scenario's pace
    page.get_by_role("button", name="Start").nth(1).click()
    expect(page.get_by_text(re.compile(r"playing · Credentials rotated"))).to_be_visible()

    runs = httpx.get(f"{demo_stack.sandbox_url}/_sandbox/scenarios", timeout=10).json()["runs"]
    assert [(run["name"], run["speed"]) for run in runs] == [("credentials_rotated", 5.0)]
    bank = runs[0]["institution_id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        run = httpx.get(f"{demo_stack.sandbox_url}/_sandbox/scenarios", timeout=10).json()["runs"][
            0
        ]
        if run["status"] == "finished":
            break
        time.sleep(0.5)
    assert run["status"] == "finished" and run["links_still_broken"] > 0
    # The live panel says so without a page reload (it refreshes itself every 2 s).
    expect(page.get_by_text(re.compile(r"finished · Credentials rotated"))).to_be_visible()

    # What is left for support is on the Links page, filtered by bank and error, as webhooks
    # and the worker put it in the store.
    matching = 0
    deadline = time.monotonic() + 30
    while matching < run["links_still_broken"] and time.monotonic() < deadline:
        open_signed_in(page, demo_stack, f"/links?institution={bank}&error=auth_expired")
        caption = page.get_by_text(re.compile(r"\d+ matching links"))
        expect(caption).to_be_visible()
        found = re.search(r"(\d+) matching links", caption.inner_text())
        assert found is not None
        matching = int(found.group(1))
    assert matching >= run["links_still_broken"]
    expect(page.get_by_test_id("stException")).to_have_count(0)
    path = SCREENSHOTS / "demo-after-credentials-rotated.png"
    full_page_screenshot(page, path)
    _record("demo-after", path)
