"""The Webhooks page (admin only), on a copy of the seeded store with deliveries added."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Role
from linkdesk.store import Store
from linkdesk.store.models import AuditEntry, Link, WebhookDelivery
from tests.app.conftest import as_shown, dashboard
from tests.app.test_customer_page import open_private_store


@pytest.fixture()
def private_store(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    yield from open_private_store(app_env, tmp_path, monkeypatch)


def add_deliveries(store: Store) -> dict[str, int]:
    """One accepted delivery (with its verified payload), a duplicate and a forged one."""
    with store.read() as session:
        link = session.scalars(sa.select(Link).order_by(Link.link_id)).first()
        assert link is not None
        link_id, state = link.link_id, link.state
    at = datetime.now(UTC) - timedelta(days=2)  # older than the stored state: nothing changes
    payload = {
        "webhook_event": "link.state_changed",
        "webhook_idempotency_key": "idem-1",
        "webhook_timestamp": at.isoformat(),
        "link_id": link_id,
        "state": state,
        "error": None,
        "note": "<script>alert(1)</script>",
    }
    rows = {
        "accepted": WebhookDelivery(
            delivery_token="dt-1",
            received_at=at,
            event="link.state_changed",
            link_id=link_id,
            verdict="accepted",
            payload=payload,
            idempotency_key="idem-1",
            attempt=1,
            reason="ok",
            event_timestamp=at,
        ),
        "duplicate": WebhookDelivery(
            delivery_token="dt-1",
            received_at=at + timedelta(seconds=30),
            event="link.state_changed",
            link_id=link_id,
            verdict="duplicate",
            idempotency_key="idem-1",
            attempt=2,
            reason="duplicate",
            event_timestamp=at,
        ),
        "rejected": WebhookDelivery(
            delivery_token="dt-forged",
            received_at=at + timedelta(seconds=60),
            verdict="rejected",
            attempt=1,
            reason="bad_signature",
        ),
    }
    with store.write() as session:
        session.add_all(rows.values())
        session.flush()
        return {name: row.id for name, row in rows.items()}


def webhooks(role: Role = Role.ADMIN, **query_params: str) -> AppTest:
    app = dashboard(role=role, page="webhooks", **query_params).run()
    assert not app.exception
    return app


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.SUPPORT])
def test_only_admins_can_open_the_page(app_env: str, role: Role) -> None:
    app = dashboard(role=role).run()
    with pytest.raises(Exception, match="webhooks"):
        app.switch_page("app_pages/webhooks.py").run()


def test_deliveries_are_counted_and_filtered_by_verdict(private_store: Store) -> None:
    add_deliveries(private_store)
    app = webhooks()
    with private_store.engine.connect() as connection:
        total = connection.execute(sa.text("SELECT count(*) FROM webhook_deliveries")).scalar_one()
    assert metric(app, "Deliveries") == str(total) == "3"
    assert metric(app, "Rejected") == "1"
    assert len(app.dataframe[0].value) == 3
    app.selectbox(key="webhooks.verdict").set_value("rejected").run()
    table = app.dataframe[0].value
    assert list(table["Reason"]) == ["bad_signature"]


def test_a_verified_payload_is_shown_and_a_forged_one_is_not(private_store: Store) -> None:
    ids = add_deliveries(private_store)
    app = webhooks(delivery=str(ids["accepted"]))
    (shown,) = app.json
    assert '"idem-1"' in shown.value and "<script>" in shown.value  # shown as data, not markup
    app = webhooks(delivery=str(ids["rejected"]))
    assert not app.json
    assert any("only verified" in info.value for info in app.info)
    assert not [b for b in app.button if b.label == "Re-apply this delivery"]


def test_an_admin_re_applies_a_delivery_and_it_is_audited(private_store: Store) -> None:
    ids = add_deliveries(private_store)
    app = webhooks(delivery=str(ids["accepted"]))
    app.text_input(key=f"webhooks.reason.{ids['accepted']}").set_value("state looked stale")
    next(b for b in app.button if b.label == "Re-apply this delivery").click().run()
    assert not app.exception
    # MoneyKit is unreachable from the app tests: the link goes to the worker's queue instead.
    assert any("queued_for_worker" in as_shown(s.value) for s in app.success)
    with private_store.read() as session:
        entry = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "webhook.reapply")
        ).one()
    assert (entry.actor, entry.role, entry.outcome, entry.reason) == (
        "apptest-admin",
        "admin",
        "queued_for_worker",
        "state looked stale",
    )
