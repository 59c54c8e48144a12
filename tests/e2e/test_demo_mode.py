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
OVERVIEW_REFRESH_SECONDS = 3


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("e2e-demo"),
        name="demo-",
        demo_links=10,
        extra_env={
            "LINKDESK_DEMO_MODE": "true",
            "LINKDESK_DEMO_LINKS": str(WORLD_LINKS),
            "LINKDESK_OVERVIEW_REFRESH_SECONDS": str(OVERVIEW_REFRESH_SECONDS),
        },
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


def _needs_relink(overview: Page) -> int:
    metric = overview.get_by_test_id("stMetric").filter(has_text="Needs relink")
    return int(metric.get_by_test_id("stMetricValue").inner_text().replace(",", ""))


def _broke_today(overview: Page) -> int:
    found = re.search(r"(\d+) links? of", overview.locator(".st-key-broke-today").inner_text())
    return int(found.group(1)) if found else 0


def test_presenter_plays_credentials_rotated_and_the_links_follow(
    page: Page, demo_stack: Stack
) -> None:
    # A second tab keeps the Overview open while the incident unfolds; it is never reloaded.
    overview = page.context.new_page()
    open_signed_in(overview, demo_stack, "/", user=ADMIN, password=ADMIN_PASSWORD)
    expect(overview.locator(".st-key-broke-today")).to_be_visible()
    needs_before, broke_before = _needs_relink(overview), _broke_today(overview)
    overview.evaluate("window.stillTheSamePage = true")

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

    # The open Overview followed on its own: the totals, "Broke today" and the bank in trouble.
    broken = run["links_still_broken"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        needs, broke = _needs_relink(overview), _broke_today(overview)
        if needs >= needs_before + broken and broke >= broke_before + broken:
            break
        overview.wait_for_timeout(500)
    assert needs >= needs_before + broken, (needs_before, needs, broken)
    assert broke >= broke_before + broken, (broke_before, broke, broken)
    trouble = overview.locator(".st-key-banks-in-trouble")
    expect(trouble).to_contain_text(run["institution_name"])
    expect(trouble).to_contain_text("In trouble")
    assert overview.evaluate("window.stillTheSamePage === true")
    expect(overview.get_by_test_id("stException")).to_have_count(0)
    overview.close()
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
