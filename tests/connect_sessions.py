"""Connect sessions stored for reads' tests, through the writers the services use
(``store.connect_repository``), so the funnel's rollup moves with them as it would in use."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.store import Store
from linkdesk.store import connect_repository as repo
from linkdesk.store.models import ConnectEvent, ConnectScreenDay, ConnectSession, ConnectSessionDay

# (type, name, properties, at) of one logged Connect entry.
LoggedEntry = tuple[str, str, dict[str, Any], datetime]


def entry_values(session_id: str, seq: int, entry: LoggedEntry) -> dict[str, Any]:
    """A ``connect_events`` row's values for one logged entry, as the log's apply writes them."""
    kind, name, properties, at = entry
    return {
        "session_id": session_id,
        "seq": seq,
        "type": kind,
        "name": name,
        "payload": {"name": name, "properties": properties},
        "at": at,
        "recorded_at": at,
    }


def store_session(
    store: Store,
    session_id: str,
    *,
    started_at: datetime,
    mode: str = "link",
    outcome: str = "pending",
    finished_at: datetime | None = None,
    link_id: str | None = None,
    customer_id: str | None = None,
    exit_error_id: str | None = None,
    started_by: str = "dana",
    events: Sequence[LoggedEntry] = (),
) -> None:
    """A session started (a relink with its link), its entries logged, then ended as
    ``outcome`` (a link session's success with ``link_id``)."""
    with store.write() as session:
        repo.record_session_start(
            session,
            session_id=session_id,
            mode=mode,
            customer_id=customer_id,
            link_id=link_id if mode == "relink" else None,
            started_by=started_by,
            now=started_at,
            failure_message=None,
            token_sha256=None,
        )
        session.flush()
        for seq, entry in enumerate(events, start=1):
            repo.insert_event(session, entry_values(session_id, seq, entry))
        if outcome != "pending":
            row = session.get(ConnectSession, session_id)
            assert row is not None
            repo.finish_session(
                session,
                row,
                outcome=outcome,
                now=finished_at or started_at,
                link_id=link_id if mode == "link" else None,
                exit_fields=(exit_error_id, None, None) if exit_error_id else None,
            )


def rollup_differences(store: Store) -> dict[tuple[Any, ...], tuple[Any, Any]]:
    """Where the funnel's rollups disagree with the stored sessions and their entries:
    (rollup, counted afresh) per ("sessions", day, mode, bank, outcome, exit error, whether an
    end is logged) and per ("screen", day, mode, bank, screen). Empty when they agree."""
    day = sa.func.date(ConnectSession.started_at)
    bank = sa.func.coalesce(ConnectSession.institution_id, "")
    error = sa.func.coalesce(ConnectSession.exit_error_id, "")
    ended = (
        sa.select(ConnectEvent.id)
        .where(
            ConnectEvent.session_id == ConnectSession.id,
            ConnectEvent.type.in_(["success", "relink_success", "exit"]),
        )
        .exists()
    )
    where = (day, ConnectSession.mode, bank, ConnectSession.outcome, error, ended)
    sessions_counted = sa.select(*where, sa.func.count()).group_by(*where)
    kept_where = (
        ConnectSessionDay.day,
        ConnectSessionDay.mode,
        ConnectSessionDay.institution_id,
        ConnectSessionDay.outcome,
        ConnectSessionDay.exit_error_id,
        ConnectSessionDay.end_logged,
    )
    sessions_kept = sa.select(*kept_where, sa.func.sum(ConnectSessionDay.sessions)).group_by(
        *kept_where
    )
    screens_kept = sa.select(
        ConnectScreenDay.day,
        ConnectScreenDay.mode,
        ConnectScreenDay.institution_id,
        ConnectScreenDay.screen,
        sa.func.sum(ConnectScreenDay.reached),
        sa.func.sum(ConnectScreenDay.dropped),
        sa.func.sum(ConnectScreenDay.milliseconds),
        sa.func.sum(ConnectScreenDay.samples),
    ).group_by(
        ConnectScreenDay.day,
        ConnectScreenDay.mode,
        ConnectScreenDay.institution_id,
        ConnectScreenDay.screen,
    )
    with store.read() as session:
        fresh: dict[tuple[Any, ...], Any] = {
            ("sessions", str(r[0]), *r[1:5], bool(r[5])): int(r[6])
            for r in session.execute(sessions_counted)
        }
        fresh.update(_screens_counted_afresh(session))
        kept: dict[tuple[Any, ...], Any] = {
            ("sessions", str(r[0]), *r[1:5], bool(r[5])): int(r[6])
            for r in session.execute(sessions_kept)
        }
        kept.update(
            {
                ("screen", str(r[0]), *r[1:4]): tuple(int(n) for n in r[4:])
                for r in session.execute(screens_kept)
            }
        )
    zero = {"sessions": 0, "screen": (0, 0, 0, 0)}
    return {
        key: (kept.get(key, zero[key[0]]), fresh.get(key, zero[key[0]]))
        for key in kept.keys() | fresh.keys()
        if kept.get(key, zero[key[0]]) != fresh.get(key, zero[key[0]])
    }


def _screens_counted_afresh(session: Session) -> dict[tuple[Any, ...], tuple[int, int, int, int]]:
    """Per (day, mode, bank, screen): sessions that showed it, whose last screen shown it was
    without success, the milliseconds from each showing to the next entry, and those timed."""
    rows = session.execute(
        sa.select(
            ConnectSession.id,
            ConnectSession.started_at,
            ConnectSession.mode,
            ConnectSession.institution_id,
            ConnectSession.outcome,
            ConnectEvent.seq,
            ConnectEvent.name,
            ConnectEvent.payload,
            ConnectEvent.at,
        )
        .join(ConnectEvent, ConnectEvent.session_id == ConnectSession.id)
        .order_by(ConnectSession.id, ConnectEvent.seq)
    ).all()
    totals: dict[tuple[Any, ...], list[int]] = {}
    for _, entries in itertools.groupby(rows, key=lambda row: row.id):
        logged = list(entries)
        first = logged[0]
        where = ("screen", str(first.started_at.date()), first.mode, first.institution_id or "")
        shown = [
            (index, row.payload["properties"]["current_screen_name"])
            for index, row in enumerate(logged)
            if row.name == "change_screen"
            and (row.payload.get("properties") or {}).get("current_screen_name")
        ]
        for screen in {screen for _, screen in shown}:
            totals.setdefault((*where, screen), [0, 0, 0, 0])[0] += 1
        for index, screen in shown:
            counted = totals[(*where, screen)]
            if index + 1 < len(logged) and logged[index].at and logged[index + 1].at:
                spent = logged[index + 1].at - logged[index].at
                counted[2] += spent // timedelta(milliseconds=1)
                counted[3] += 1
        if shown and first.outcome != "success":
            totals[(*where, shown[-1][1])][1] += 1
    return {key: (a, b, c, d) for key, (a, b, c, d) in totals.items()}
