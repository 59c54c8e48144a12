"""The Connect funnel page, on a copy of the seeded store with Connect sessions added."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Role
from linkdesk.store import Store
from tests.app.conftest import dashboard
from tests.app.test_customer_page import open_private_store
from tests.connect_sessions import store_session


@pytest.fixture()
def private_store(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    yield from open_private_store(app_env, tmp_path, monkeypatch)


CREDS = ("moneykit-creds-bank", "Credentials Bank")
INSTANT = ("moneykit-instant-bank", "Instant Bank")


def screen(name: str) -> tuple[str, dict[str, Any]]:
    return "change_screen", {"current_screen_name": name}


def pick(bank: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    return "select_institution", {"institution_id": bank[0], "institution_name": bank[1]}


def add_session(
    store: Store,
    session_id: str,
    *,
    outcome: str,
    events: list[tuple[str, dict[str, Any]]],
    started: datetime,
    exit_error: str | None = None,
    terminal: str | None = None,
) -> None:
    entries = [
        ("event", name, properties, started + timedelta(seconds=10 * seq))
        for seq, (name, properties) in enumerate(events, start=1)
    ]
    if terminal:
        at = started + timedelta(seconds=10 * len(events) + 25)
        entries.append((terminal, terminal, {}, at))
    store_session(
        store,
        session_id,
        outcome=outcome,
        started_at=started,
        finished_at=started + timedelta(minutes=5) if outcome != "pending" else None,
        customer_id="cust_funnel",
        exit_error_id=exit_error,
        events=entries,
    )


def add_sessions(store: Store) -> None:
    now = datetime.now(UTC)
    add_session(
        store,
        "ok-creds",
        outcome="success",
        events=[screen("Finder"), pick(CREDS), screen("Credentials"), screen("Success")],
        started=now - timedelta(hours=2),
        terminal="success",
    )
    add_session(
        store,
        "exit-creds",
        outcome="exit",
        events=[screen("Finder"), pick(CREDS), screen("Credentials")],
        started=now - timedelta(hours=2),
        exit_error="invalid_credentials",
        terminal="exit",
    )
    add_session(
        store,
        "ok-instant",
        outcome="success",
        events=[screen("Finder"), pick(INSTANT), screen("Accounts")],
        started=now - timedelta(hours=1),
        terminal="success",
    )
    add_session(
        store,
        "left-on-finder",
        outcome="pending",
        events=[screen("Finder")],
        started=now - timedelta(hours=1),
    )
    add_session(  # still in progress: not abandoned yet
        store,
        "just-opened",
        outcome="pending",
        events=[screen("Finder")],
        started=now - timedelta(minutes=5),
    )


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def funnel() -> AppTest:
    app = dashboard(role=Role.VIEWER, page="funnel").run()
    assert not app.exception
    return app


def scalar(store: Store, statement: str) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sa.text(statement)).scalar_one())


def test_an_empty_funnel_says_so(private_store: Store) -> None:
    app = funnel()
    assert any("No Connect session" in info.value for info in app.info)


def test_started_completed_and_abandoned_match_the_store(private_store: Store) -> None:
    add_sessions(private_store)
    app = funnel()
    assert metric(app, "Started") == str(
        scalar(private_store, "SELECT count(*) FROM connect_sessions")
    )
    completed = scalar(
        private_store, "SELECT count(*) FROM connect_sessions WHERE outcome = 'success'"
    )
    assert metric(app, "Completed") == str(completed) == "2"
    assert metric(app, "Abandoned") == "1"

    screens = app.dataframe[0].value.set_index("Screen")
    assert screens.loc["Finder", "Reached"] == 5
    assert screens.loc["Finder", "Ended here"] == 2  # the abandoned one and the one just opened
    assert screens.loc["Credentials", "Ended here"] == 1  # the wrong password
    assert screens.loc["Success", "Ended here"] == 0
    # Finder is followed by the bank pick 10 s later in every session that moved on.
    assert screens.loc["Finder", "Average seconds"] == 10.0

    exits = app.dataframe[1].value
    assert exits.to_dict("records") == [
        {"Bank": "Credentials Bank", "Error": "invalid_credentials", "Sessions": 1}
    ]


def test_the_bank_filter_narrows_every_number(private_store: Store) -> None:
    add_sessions(private_store)
    app = funnel()
    app.selectbox(key="funnel.institution").set_value(CREDS[0]).run()
    assert not app.exception
    assert metric(app, "Started") == "2"
    assert metric(app, "Completed") == "1"
    screens = app.dataframe[0].value.set_index("Screen")
    assert "Accounts" not in screens.index  # only Instant Bank's session shows that screen
