"""The funnel's rollup (``connect_session_days``) and each session's bank, kept by the writers of
Connect sessions: equal to a count of the sessions after every kind of write, alone or at once,
and filled from what is stored by the migration that adds them."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from linkdesk.store import Store, create_engine, migrate
from linkdesk.store import connect_repository as repo
from linkdesk.store.models import (
    ConnectScreenDay,
    ConnectSession,
    ConnectSessionDay,
    Link,
    LinkCount,
)
from tests.connect_sessions import entry_values, rollup_differences, store_session
from tests.unit.test_overview_history import add_bank, add_link

T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)


def pick(session_id: str, seq: int, bank: str) -> dict[str, Any]:
    entry = ("event", "select_institution", {"institution_id": bank}, T0)
    return entry_values(session_id, seq, entry)


def shown(session_id: str, seq: int, screen: str, seconds: int) -> dict[str, Any]:
    at = T0 + timedelta(seconds=seconds)
    return entry_values(
        session_id, seq, ("event", "change_screen", {"current_screen_name": screen}, at)
    )


def start(store: Store, session_id: str, *, mode: str = "link", link_id: str | None = None) -> None:
    store_session(store, session_id, started_at=T0, mode=mode, link_id=link_id)


def bank_of(store: Store, session_id: str) -> str | None:
    with store.read() as session:
        row = session.get(ConnectSession, session_id)
        assert row is not None
        return row.institution_id


def test_every_writer_moves_the_session_in_the_rollup(store: Store) -> None:
    for bank in ("bank-a", "bank-b", "bank-c", "bank-d"):
        add_bank(store, bank, bank.title())
    add_link(store, "link-d", institution_id="bank-d")

    start(store, "linking")
    assert rollup_differences(store) == {}
    with store.write() as session:  # picks logged out of order: the last one counts
        repo.insert_event(session, pick("linking", 1, "bank-a"))
        repo.insert_event(session, pick("linking", 3, "bank-b"))
    with store.write() as session:
        repo.insert_event(session, pick("linking", 2, "bank-c"))
    assert bank_of(store, "linking") == "bank-b"
    assert rollup_differences(store) == {}
    with store.write() as session:  # screens, the later one first: timed once both are in
        repo.insert_event(session, shown("linking", 6, "Accounts", 50))
        repo.insert_event(session, shown("linking", 4, "Finder", 5))
    assert rollup_differences(store) == {}
    with store.write() as session:
        repo.insert_event(session, shown("linking", 5, "Credentials", 20))
        repo.insert_event(session, shown("linking", 5, "Credentials", 20))  # sent twice
    assert rollup_differences(store) == {}
    with store.write() as session:  # the link made is at another bank: the link's bank counts
        row = repo.claim_completion(session, "linking", T0)
        assert row is not None
        repo.finish_session(session, row, outcome="success", now=T0, link_id="link-d")
    assert bank_of(store, "linking") == "bank-d"
    assert rollup_differences(store) == {}

    start(store, "relinking", mode="relink", link_id="link-d")
    assert bank_of(store, "relinking") == "bank-d"
    with store.write() as session:  # a relink keeps its link's bank whatever is picked
        repo.insert_event(session, pick("relinking", 1, "bank-a"))
        assert repo.close_unfinished(session, "relinking", now=T0, message="abandoned")
        assert not repo.close_unfinished(session, "relinking", now=T0, message="again")
    assert bank_of(store, "relinking") == "bank-d"
    assert rollup_differences(store) == {}

    start(store, "interrupted")
    with store.write() as session:
        assert repo.claim_completion(session, "interrupted", T0) is not None
        failed = repo.fail_interrupted(
            session,
            "interrupted",
            now=T0,
            claimed_before=T0 + timedelta(minutes=5),
            message="interrupted",
        )
        assert failed is not None and failed.outcome == "failed"
    store_session(store, "refused-at-bank", started_at=T0, outcome="exit", exit_error_id="oops")
    with store.write() as session:
        repo.record_session_start(
            session,
            session_id="not-opened",
            mode="link",
            customer_id=None,
            link_id=None,
            started_by="dana",
            now=T0 + timedelta(days=1),
            failure_message="MoneyKit refused",
            token_sha256=None,
        )
    assert rollup_differences(store) == {}

    with store.read() as session:
        counted = session.execute(
            sa.select(
                ConnectSessionDay.institution_id,
                ConnectSessionDay.outcome,
                ConnectSessionDay.exit_error_id,
                sa.func.sum(ConnectSessionDay.sessions),
            )
            .group_by(
                ConnectSessionDay.institution_id,
                ConnectSessionDay.outcome,
                ConnectSessionDay.exit_error_id,
            )
            .having(sa.func.sum(ConnectSessionDay.sessions) != 0)
        ).all()
    assert sorted(tuple(row) for row in counted) == [
        ("", "exit", "oops", 1),
        ("", "failed", "", 2),
        ("bank-d", "exit", "", 1),
        ("bank-d", "success", "", 1),
    ]
    with store.read() as session:
        screens = session.execute(
            sa.select(
                ConnectScreenDay.institution_id,
                ConnectScreenDay.screen,
                sa.func.sum(ConnectScreenDay.reached),
                sa.func.sum(ConnectScreenDay.dropped),
                sa.func.sum(ConnectScreenDay.milliseconds),
                sa.func.sum(ConnectScreenDay.samples),
            )
            .group_by(ConnectScreenDay.institution_id, ConnectScreenDay.screen)
            .having(sa.func.sum(ConnectScreenDay.reached) != 0)
        ).all()
    # The linked session's screens moved to the link's bank with it; it succeeded: no drop.
    assert sorted(tuple(row) for row in screens) == [
        ("bank-d", "Accounts", 1, 0, 0, 0),
        ("bank-d", "Credentials", 1, 0, 30_000, 1),
        ("bank-d", "Finder", 1, 0, 15_000, 1),
    ]


def test_sessions_written_at_once_are_all_counted(database_url: str) -> None:
    """Writers at once on the same buckets: none waits for ever on another (their rows are
    written in one order) and no count is lost."""
    migrate(database_url)
    store = Store(create_engine(database_url))
    try:
        add_bank(store, "bank-a", "Alpha")
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            try:
                barrier.wait()
                for n in range(8):
                    session_id = f"w{worker}-{n}"
                    start(store, session_id)
                    with store.write() as session:
                        repo.insert_event(session, pick(session_id, 1, "bank-a"))
                        row = session.get(ConnectSession, session_id)
                        assert row is not None
                        outcome = "success" if n % 2 else "exit"
                        repo.finish_session(session, row, outcome=outcome, now=T0)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert rollup_differences(store) == {}
        with store.read() as session:
            total = session.scalar(sa.select(sa.func.sum(ConnectSessionDay.sessions)))
        assert total == 32
    finally:
        store.dispose()


def test_the_migration_fills_the_link_counts_each_sessions_bank_and_the_funnel_rollups(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    migrate(url, "0011")
    engine = create_engine(url)
    store = Store(engine)
    try:
        # Banks and links are the same at 0011 (without their counts, which 0011 does not
        # have); sessions and events are written as 0011 has them.
        add_bank(store, "bank-l", "L")
        with store.write() as session:
            for link_id, state, error_code in (
                ("with-link", "connected", None),
                ("expired", "error", "auth_expired"),
                ("expired-too", "error", "auth_expired"),
            ):
                session.add(
                    Link(
                        link_id=link_id,
                        institution_id="bank-l",
                        state=state,
                        error_code=error_code,
                        tags=[],
                    )
                )
        with engine.begin() as conn:
            for session_id, session_link, outcome, error in (
                ("relinked", "with-link", "success", None),
                ("picked-twice", None, "exit", "invalid_credentials"),
                ("never-picked", None, "pending", None),
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO connect_sessions (id, mode, link_id, started_by, "
                        "started_at, outcome, exit_error_id) VALUES (:id, 'link', :link, 'dana', "
                        "'2025-03-10 09:00:00', :outcome, :error)"
                    ),
                    {"id": session_id, "link": session_link, "outcome": outcome, "error": error},
                )
            for session_id, seq, name, properties, at in (
                ("picked-twice", 1, "change_screen", {"current_screen_name": "Finder"}, "00"),
                # Microseconds count (SQLite's date functions would round them to the second).
                (
                    "picked-twice",
                    2,
                    "select_institution",
                    {"institution_id": "bank-x"},
                    "04.999999",
                ),
                ("picked-twice", 3, "select_institution", {"institution_id": "bank-y"}, "09"),
                ("picked-twice", 4, "change_screen", {"current_screen_name": "Login"}, "12"),
                ("relinked", 1, "change_screen", {"current_screen_name": "Login"}, "00"),
                ("relinked", 2, "success", {}, "30"),
            ):
                conn.execute(
                    sa.text(
                        "INSERT INTO connect_events (session_id, seq, type, name, payload, at, "
                        "recorded_at) VALUES (:session, :seq, 'event', :name, :payload, :at, :at)"
                    ),
                    {
                        "session": session_id,
                        "seq": seq,
                        "name": name,
                        "payload": json.dumps({"name": name, "properties": properties}),
                        "at": f"2025-03-10 09:00:{at}",
                    },
                )
        migrate(url)
        with store.read() as session:
            counted = session.execute(
                sa.select(LinkCount.state, LinkCount.error_code, LinkCount.links).order_by(
                    LinkCount.state
                )
            ).all()
        assert [tuple(row) for row in counted] == [
            ("connected", "", 1),
            ("error", "auth_expired", 2),
        ]
        assert bank_of(store, "relinked") == "bank-l"
        assert bank_of(store, "picked-twice") == "bank-y"
        assert bank_of(store, "never-picked") is None
        assert rollup_differences(store) == {}
        with store.read() as session:
            assert session.scalar(sa.select(sa.func.sum(ConnectSessionDay.sessions))) == 3
            login = session.execute(
                sa.select(
                    ConnectScreenDay.institution_id,
                    ConnectScreenDay.reached,
                    ConnectScreenDay.dropped,
                    ConnectScreenDay.milliseconds,
                    ConnectScreenDay.samples,
                )
                .where(ConnectScreenDay.screen.in_(["Login", "Finder"]))
                .order_by(ConnectScreenDay.screen, ConnectScreenDay.institution_id)
            ).all()
        assert [tuple(row) for row in login] == [
            ("bank-y", 1, 0, 4_999, 1),
            ("bank-l", 1, 0, 30_000, 1),
            ("bank-y", 1, 1, 0, 0),
        ]
    finally:
        engine.dispose()
