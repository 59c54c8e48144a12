"""The Customer timeline page, on a copy of the seeded store with a customer's history added."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Actor, Role
from linkdesk.services.audit import AuditLog
from linkdesk.store import Store, create_engine
from linkdesk.store.models import (
    ConnectEvent,
    ConnectSession,
    Link,
    LinkStateChange,
    SyncAttempt,
    WebhookDelivery,
)
from tests.app.conftest import as_shown, dashboard
from ui.wiring import get_services


def copy_database(source_url: str, target: Path) -> str:
    """A private copy of the session's seeded store, so a test may add rows to it."""
    source = sqlite3.connect(source_url.removeprefix("sqlite:///"))
    copy = sqlite3.connect(target)
    with copy:
        source.backup(copy)
    source.close()
    copy.close()
    return f"sqlite:///{target}"


def open_private_store(
    seeded_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    url = copy_database(seeded_url, folder / "private.db")
    monkeypatch.setenv("DATABASE_URL", url)
    get_services.clear()
    store = Store(create_engine(url))
    yield store
    store.dispose()
    get_services.clear()


@pytest.fixture()
def private_store(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    yield from open_private_store(app_env, tmp_path, monkeypatch)


@dataclass
class History:
    customer_id: str
    link_id: str
    institution_name: str


def add_history(store: Store, *, events: int = 3) -> History:
    """A relink of one of a customer's links, as the services would have recorded it."""
    with store.read() as session:
        link = session.scalars(
            sa.select(Link).where(Link.error_code == "auth_expired").order_by(Link.link_id)
        ).first()
        assert link is not None and link.customer_id
        customer_id, link_id = link.customer_id, link.link_id
        institution_name = session.execute(
            sa.text("SELECT name FROM institutions WHERE institution_id = :i"),
            {"i": link.institution_id},
        ).scalar_one()
    start = datetime.now(UTC) - timedelta(hours=3)
    with store.write() as session:
        session.add(
            ConnectSession(
                id="sess-relink-1",
                mode="relink",
                customer_id=customer_id,
                link_id=link_id,
                started_by="dana",
                started_at=start,
                outcome="success",
                finished_at=start + timedelta(minutes=2),
            )
        )
        session.flush()
        for seq in range(1, events + 1):
            session.add(
                ConnectEvent(
                    session_id="sess-relink-1",
                    seq=seq,
                    type="event",
                    name="change_screen",
                    payload={
                        "name": "change_screen",
                        "properties": {"current_screen_name": f"S{seq}"},
                    },
                    at=start + timedelta(seconds=seq),
                )
            )
        session.add(
            LinkStateChange(
                link_id=link_id,
                at=start + timedelta(minutes=2),
                from_state="error",
                from_error="auth_expired",
                to_state="connected",
                to_error=None,
                source="relink",
            )
        )
        session.add(
            WebhookDelivery(
                received_at=start + timedelta(minutes=3),
                event="link.state_changed",
                link_id=link_id,
                verdict="accepted",
                reason="ok",
                payload={"link_id": link_id, "state": "connected"},
            )
        )
        session.add(
            SyncAttempt(
                link_id=link_id,
                kind="link",
                at=start + timedelta(minutes=4),
                outcome="ok",
                worker="w1",
            )
        )
    AuditLog(store).record(
        actor=Actor("dana", Role.SUPPORT),
        action="link.note",
        outcome="success",
        link_id=link_id,
        customer_id=customer_id,
        detail="Customer called about missing transactions",
    )
    return History(customer_id, link_id, institution_name)


def expected_entries(store: Store, customer_id: str) -> int:
    """The timeline's size, counted table by table with plain SQL."""
    theirs = "(SELECT link_id FROM links WHERE customer_id = :c)"
    queries = [
        f"SELECT count(*) FROM connect_sessions WHERE customer_id = :c OR link_id IN {theirs}",
        "SELECT count(*) FROM connect_sessions WHERE finished_at IS NOT NULL "
        f"AND (customer_id = :c OR link_id IN {theirs})",
        "SELECT count(*) FROM connect_events e JOIN connect_sessions s ON s.id = e.session_id "
        f"WHERE s.customer_id = :c OR s.link_id IN {theirs}",
        f"SELECT count(*) FROM link_state_changes WHERE link_id IN {theirs}",
        f"SELECT count(*) FROM webhook_deliveries WHERE link_id IN {theirs}",
        f"SELECT count(*) FROM sync_attempts WHERE link_id IN {theirs}",
        f"SELECT count(*) FROM audit_log WHERE customer_id = :c OR link_id IN {theirs}",
    ]
    with store.engine.connect() as connection:
        return sum(
            int(connection.execute(sa.text(q), {"c": customer_id}).scalar_one()) for q in queries
        )


def timeline(customer_id: str, role: Role = Role.SUPPORT) -> AppTest:
    app = dashboard(role=role, page="customer", customer=customer_id).run()
    assert not app.exception
    return app


def test_deep_link_shows_everything_that_happened_to_the_customer(private_store: Store) -> None:
    history = add_history(private_store)
    app = timeline(history.customer_id)
    table = app.dataframe[0].value
    assert len(table) == expected_entries(private_store, history.customer_id)
    assert set(table["Kind"]) >= {
        "🪟 Connect sessions",
        "👆 Connect screens and events",
        "🔗 Links and relinks",
        "🔀 State changes",
        "📨 Webhooks",
        "🔄 Sync results",
        "🧑‍💼 Staff actions",
    }
    assert list(table["When"]) == sorted(table["When"], reverse=True)  # newest first
    assert (table.loc[table["Link"] == history.link_id, "Bank"] == history.institution_name).all()
    relinked = table[table["Kind"] == "🔗 Links and relinks"]
    assert list(relinked["What happened"]) == ["Relinked: the link works again"]
    assert list(relinked["Who"]) == ["dana"]
    links = [
        (as_shown(p.proto.label), parse_qs(p.proto.query_string)) for p in app.get("page_link")
    ]
    assert (f"Links of {history.customer_id}", {"customer": [history.customer_id]}) in links


def test_the_kind_filter_changes_the_rows(private_store: Store) -> None:
    history = add_history(private_store)
    app = timeline(history.customer_id, role=Role.VIEWER)
    app.button_group(key="customer.kinds").set_value(["webhook", "staff"]).run()
    assert not app.exception
    table = app.dataframe[0].value
    assert sorted(table["Kind"]) == ["📨 Webhooks", "🧑‍💼 Staff actions"]
    assert "Customer called" in " ".join(table["What happened"])


def test_a_long_history_is_paged_without_overlap(private_store: Store) -> None:
    history = add_history(private_store, events=70)
    total = expected_entries(private_store, history.customer_id)
    app = timeline(history.customer_id)
    first = app.dataframe[0].value
    assert len(first) == 50
    next(b for b in app.button if b.label == "Older →").click().run()
    second = app.dataframe[0].value
    assert len(second) == total - 50
    assert max(second["When"]) <= min(first["When"])


def test_picking_a_customer_puts_it_in_the_url(app_env: str) -> None:
    app = dashboard(page="customer").run()
    assert not app.exception
    assert not app.dataframe
    box = app.selectbox(key="customer.pick.")
    choice = box.options[0].split(" · ")[0]
    box.set_value(choice).run()
    assert not app.exception
    assert app.query_params["customer"] == [choice] or app.query_params["customer"] == choice
    assert app.dataframe  # the seeded store has at least the discovery state changes
