"""The Connect and Activity pages, drawn headless."""

from __future__ import annotations

from tests.app.conftest import dashboard


def test_connect_page_offers_existing_customers_and_a_new_one(app_env: str) -> None:
    app = dashboard().run()
    app.switch_page("app_pages/connect.py").run()
    assert not app.exception
    choices = app.selectbox(key="connect.customer_choice").options
    assert choices[0].startswith("➕")
    assert any(choice.startswith("cust_") for choice in choices[1:])
    open_button = next(b for b in app.button if b.label == "Open MoneyKit Connect")
    assert open_button.disabled  # nothing to open until a customer id is typed


def test_connect_page_rejects_a_too_short_customer_id_with_a_clear_error(app_env: str) -> None:
    app = dashboard().run()
    app.switch_page("app_pages/connect.py").run()
    app.text_input(key="connect.new_customer").set_value("ab").run()
    next(b for b in app.button if b.label == "Open MoneyKit Connect").click().run()
    assert not app.exception
    assert any("customer id" in error.value.lower() for error in app.error)


def test_activity_page_renders_sessions_and_audit(app_env: str) -> None:
    app = dashboard().run()
    app.switch_page("app_pages/activity.py").run()
    assert not app.exception
    assert [tab.label for tab in app.tabs] == ["Connect sessions", "Audit log"]
