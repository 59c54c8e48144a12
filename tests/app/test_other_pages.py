"""The Connect and Activity pages, drawn headless."""

from __future__ import annotations

import hashlib
import json

import pytest

from linkdesk.auth import Actor, Role
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from tests.app.conftest import dashboard
from ui.auth import ACTOR_KEY
from ui.wiring import get_services


def test_connect_page_offers_existing_customers_and_a_new_one(app_env: str) -> None:
    app = dashboard(page="connect").run()
    assert not app.exception
    choices = app.selectbox(key="connect.customer_choice").options
    assert choices[0].startswith("➕")
    assert any(choice.startswith("cust_") for choice in choices[1:])
    open_button = next(b for b in app.button if b.label == "Open MoneyKit Connect")
    assert open_button.disabled  # nothing to open until a customer id is typed


def test_connect_page_rejects_a_too_short_customer_id_with_a_clear_error(app_env: str) -> None:
    app = dashboard(page="connect").run()
    app.text_input(key="connect.new_customer").set_value("ab").run()
    next(b for b in app.button if b.label == "Open MoneyKit Connect").click().run()
    assert not app.exception
    assert any("customer id" in error.value.lower() for error in app.error)


def test_activity_page_renders_sessions_and_audit(app_env: str) -> None:
    app = dashboard(page="activity").run()
    assert not app.exception
    assert [tab.label for tab in app.tabs] == [
        "Audit log",
        "Connect sessions",
        "Webhooks",
        "Sync attempts",
    ]


def test_signed_out_people_see_only_the_sign_in_page(app_env: str) -> None:
    app = dashboard(role=None).run()
    assert not app.exception
    assert [title.value for title in app.title] == ["Sign in to Linkdesk"]
    assert not app.dataframe  # no link data before signing in


def test_a_wrong_password_is_refused_with_a_clear_message(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hashlib.sha256(b"right-password").hexdigest()
    users = {"dana": {"role": "viewer", "password_sha256": digest}}
    monkeypatch.setenv("LINKDESK_USERS", json.dumps(users))
    get_services.clear()
    app = dashboard(role=None).run()
    app.text_input[0].set_value("dana")
    app.text_input[1].set_value("wrong-password")
    app.button[0].click().run()
    assert [error.value for error in app.error] == ["Unknown user or wrong password."]
    assert ACTOR_KEY not in app.session_state

    app.text_input[1].set_value("right-password")
    app.button[0].click().run()
    assert app.session_state[ACTOR_KEY] == Actor("dana", Role.VIEWER)


def test_viewers_get_no_connect_page_and_no_relink_button(app_env: str) -> None:
    expired = (
        LinkQueries(Store(create_engine(app_env)))
        .list_links(LinkFilters(error_code="auth_expired"), limit=1)
        .rows[0]
    )
    app = dashboard(role=Role.VIEWER, page="links", link=expired.link_id).run()
    assert not app.exception
    assert "Relink" not in [button.label for button in app.button]
    assert any("support agent can relink" in caption.value for caption in app.caption)
    with pytest.raises(Exception, match="connect"):
        app.switch_page("app_pages/connect.py").run()


def test_customer_relink_page_refuses_a_tampered_link(app_env: str) -> None:
    app = dashboard(role=None, token="not-a-real-token").run()
    app.switch_page("app_pages/customer_relink.py").run()
    assert not app.exception
    # Said at once, with no button to press first.
    assert not app.button
    assert [error.value for error in app.error] == ["This relink link is not valid\\."]
    assert not app.dataframe  # nothing of Linkdesk is shown to the customer
