"""From the Overview to a repair: the links that broke today, the customer's why, the relink.

A copy of the seeded store gets one more breakage the way a webhook brings it (the write side's
`apply_event_state`), so the shared store the other tests count stays untouched.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from linkdesk.auth import Role
from linkdesk.health import Health
from linkdesk.read.link_rows import LinkRow
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.repository import apply_event_state
from tests.app.conftest import as_shown, dashboard
from ui.wiring import get_services

CUSTOMER_PAGE_HASH = calc_hash("customer")


@pytest.fixture()
def broke_today(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LinkRow:
    """A copy of the seeded store in which one healthy link lost its bank login just now."""
    source = Path(app_env.removeprefix("sqlite:///"))
    copy = tmp_path / "broke-today.db"
    shutil.copyfile(source, copy)
    database_url = f"sqlite:///{copy}"
    store = Store(create_engine(database_url))
    healthy = LinkQueries(store).list_links(LinkFilters(health=Health.HEALTHY), limit=20).rows
    link = next(row for row in healthy if row.customer_id)
    now = datetime.now(UTC)
    with store.write() as session:
        assert apply_event_state(
            session, link.link_id, state="error", error_code="auth_expired", as_of=now, now=now
        )
    store.dispose()
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_services.clear()
    return link


def customer_links(app: AppTest) -> list[tuple[str, dict[str, list[str]]]]:
    return [
        (as_shown(link.proto.label), parse_qs(link.proto.query_string))
        for link in app.get("page_link")
        if link.proto.page_script_hash == CUSTOMER_PAGE_HASH
    ]


def texts(app: AppTest) -> str:
    return as_shown(" ".join(str(element.value) for element in app.markdown))


def test_the_landing_page_is_the_overview_and_it_lists_what_broke_today(
    broke_today: LinkRow,
) -> None:
    app = dashboard().run()  # the bare URL
    assert not app.exception
    assert [title.value for title in app.title] == ["Overview"]
    assert "Broke today" in [header.value for header in app.subheader]
    # Discovery saw every other broken link for the first time: nobody knows when those broke.
    assert customer_links(app) == [
        (broke_today.customer_id, {"customer": [str(broke_today.customer_id)]})
    ]
    assert broke_today.institution_name in texts(app)
    assert "Bank login expired" in texts(app)  # the error in plain words
    assert any("**1** link of **1** customer" in caption.value for caption in app.caption)


def test_a_quiet_day_says_so(app_env: str) -> None:
    app = dashboard().run()
    assert not app.exception
    assert not customer_links(app)
    assert any("No link broke today" in success.value for success in app.success)


def test_the_customer_timeline_says_why_and_offers_the_repair(broke_today: LinkRow) -> None:
    app = dashboard(page="customer", customer=str(broke_today.customer_id)).run()
    assert not app.exception
    assert "Needs action" in [header.value for header in app.subheader]
    why = texts(app)
    assert "from connected to **error — Login expired (auth_expired)**" in why
    assert "Bank login expired" in why  # the playbook
    assert "Your bank asks you to log in again" in " ".join(m.value for m in app.markdown)
    assert "Start relink" in [button.label for button in app.button]
    assert "**🔴 Needs relink**" in [m.value for m in app.markdown]


def test_viewers_see_the_why_but_not_the_repair(broke_today: LinkRow) -> None:
    app = dashboard(role=Role.VIEWER, page="customer", customer=str(broke_today.customer_id))
    app.run()
    assert not app.exception
    assert "Needs action" in [header.value for header in app.subheader]
    assert "Start relink" not in [button.label for button in app.button]
    assert any("support agent can relink" in caption.value for caption in app.caption)


def test_starting_the_repair_while_moneykit_is_down_explains_instead_of_crashing(
    broke_today: LinkRow,
) -> None:
    # app_env points MoneyKit at a closed port.
    app = dashboard(page="customer", customer=str(broke_today.customer_id)).run()
    next(button for button in app.button if button.label == "Start relink").click().run()
    assert not app.exception
    assert [error.value for error in app.error] == ["**MoneyKit cannot be reached**"]
    assert "Try again" in [button.label for button in app.button]


def test_a_customer_with_only_working_links_gets_a_reassurance(app_env: str) -> None:
    queries = LinkQueries(Store(create_engine(app_env)))

    def all_healthy(customer_id: str) -> bool:
        rows = queries.list_links(LinkFilters(customer=customer_id), limit=50).rows
        return all(row.health is Health.HEALTHY for row in rows if row.customer_id == customer_id)

    calm = next(
        row.customer_id for row in queries.list_customers(limit=200) if all_healthy(row.customer_id)
    )
    app = dashboard(page="customer", customer=calm).run()
    assert not app.exception
    assert any("links are working" in success.value for success in app.success)
    assert "Needs action" not in [header.value for header in app.subheader]
