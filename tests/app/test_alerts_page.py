"""The Alerts page: everyone sees what fires; support acknowledges and silences; admins edit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from linkdesk.alerts.rules import DEFAULT_RULES
from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import build_services
from linkdesk.settings import Settings
from linkdesk.store import Store
from linkdesk.store.models import Alert, AlertEvent, AuditEntry
from tests.app.conftest import dashboard
from tests.app.test_customer_page import open_private_store

ADMIN = Actor("root", Role.ADMIN)


@pytest.fixture()
def firing(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A store where 'Links needing relink' fires (threshold 0 over the seeded expired links)."""
    for _store in open_private_store(app_env, tmp_path, monkeypatch):
        services = build_services(Settings())  # the private copy, from DATABASE_URL
        try:
            rule = next(r for r in services.alerts.rules() if r.id == "needs_relink")
            services.alerts.update_rule(
                ADMIN,
                rule.id,
                enabled=True,
                params={"max_links": 0, "growth_per_hour": rule.params["growth_per_hour"]},
                channels=[],
                renotify_minutes=60,
            )
            assert services.alerts.evaluate().fired == 1
            [alert] = services.alerts.alerts(status="firing")
        finally:
            services.close()
        yield alert.id


def alerts_page(role: Role, **query_params: str) -> AppTest:
    app = dashboard(role=role, page="alerts", **query_params).run()
    assert not app.exception
    return app


def test_everyone_sees_what_fires_but_viewers_cannot_act(firing: int) -> None:
    app = alerts_page(Role.VIEWER, alert=str(firing))
    assert [t.label for t in app.tabs] == [
        "Firing",
        "Acknowledged",
        "Resolved",
        "History",
        "Deliveries",
        "Rules",
    ]
    assert next(m.value for m in app.metric if m.label == "Firing") == "1"
    table = app.dataframe[0].value
    assert list(table["Rule"]) == ["needs_relink"]
    assert "links need relink" in table["Alert"][0]
    assert not [b for b in app.button if b.label == "Acknowledge"]
    assert all(b.disabled for b in app.button if b.label == "Save rule")


def test_support_acknowledges_and_it_is_recorded(firing: int, app_env: str) -> None:
    app = alerts_page(Role.SUPPORT, alert=str(firing))
    next(b for b in app.button if b.label == "Acknowledge").click().run()
    assert not app.exception
    assert next(m.value for m in app.metric if m.label == "Acknowledged") == "1"
    store = _current_store()
    with store.read() as session:
        alert = session.get(Alert, firing)
        assert alert is not None and alert.acknowledged_by == "apptest-support"
        actions = set(session.scalars(sa.select(AlertEvent.action)))
    assert "acknowledged" in actions


def test_a_silence_needs_a_reason(firing: int) -> None:
    app = alerts_page(Role.SUPPORT, alert=str(firing))
    silence = next(b for b in app.button if b.label == "Silence")
    silence.click().run()
    assert [w.value for w in app.warning] == ["Say why the alert is silenced."]
    reason = next(t for t in app.text_input if t.label == "Why (required)")
    reason.set_value("bank maintenance until noon")
    next(b for b in app.button if b.label == "Silence").click().run()
    assert any("Silenced until" in s.value for s in app.success)


def test_admins_edit_a_rule_and_the_change_is_audited(firing: int) -> None:
    app = alerts_page(Role.ADMIN)
    # "More than this many links": needs_relink's form comes before stuck_links' (by id).
    form_inputs = [n for n in app.number_input if n.label == "More than this many links"]
    form_inputs[0].set_value(5000)
    next(t for t in app.text_input if t.label == "Reason (kept in the audit log)").set_value(
        "quiet"
    )
    # One form per rule, in the order of their ids.
    saves = [b for b in app.button if b.label == "Save rule"]
    ids = sorted(rule.id for rule in DEFAULT_RULES)
    saves[ids.index("needs_relink")].click().run()
    assert not app.exception
    assert any(s.value == "Saved." for s in app.success)
    with _current_store().read() as session:
        entry = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "alert.rule")
        ).all()[-1]
    assert entry.actor == "apptest-admin" and '"max_links": 5000' in (entry.detail or "")


def _current_store() -> Store:
    from ui.wiring import get_services

    return get_services().store
