"""Connect sessions stored for reads' tests, through the writers the services use
(``store.connect_repository``), so the funnel's rollup moves with them as it would in use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from linkdesk.store import Store
from linkdesk.store import connect_repository as repo
from linkdesk.store.models import ConnectSession, ConnectSessionDay

# (type, name, properties, at) of one logged Connect entry.
LoggedEntry = tuple[str, str, dict[str, Any], datetime]


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
        for seq, (kind, name, properties, at) in enumerate(events, start=1):
            repo.insert_event(
                session,
                {
                    "session_id": session_id,
                    "seq": seq,
                    "type": kind,
                    "name": name,
                    "payload": {"name": name, "properties": properties},
                    "at": at,
                    "recorded_at": at,
                },
            )
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


def rollup_differences(store: Store) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Buckets where the funnel's rollup disagrees with a count of the stored sessions:
    (rollup, sessions) per (day, mode, bank, outcome, exit error). Empty when they agree."""
    day = sa.func.date(ConnectSession.started_at)
    bank = sa.func.coalesce(ConnectSession.institution_id, "")
    error = sa.func.coalesce(ConnectSession.exit_error_id, "")
    counted = sa.select(
        day, ConnectSession.mode, bank, ConnectSession.outcome, error, sa.func.count()
    ).group_by(day, ConnectSession.mode, bank, ConnectSession.outcome, error)
    kept = sa.select(
        ConnectSessionDay.day,
        ConnectSessionDay.mode,
        ConnectSessionDay.institution_id,
        ConnectSessionDay.outcome,
        ConnectSessionDay.exit_error_id,
        sa.func.sum(ConnectSessionDay.sessions),
    ).group_by(
        ConnectSessionDay.day,
        ConnectSessionDay.mode,
        ConnectSessionDay.institution_id,
        ConnectSessionDay.outcome,
        ConnectSessionDay.exit_error_id,
    )
    with store.read() as session:
        sessions = {(str(r[0]), *r[1:5]): int(r[5]) for r in session.execute(counted)}
        rollup = {(str(r[0]), *r[1:5]): int(r[5]) for r in session.execute(kept)}
    return {
        key: (rollup.get(key, 0), sessions.get(key, 0))
        for key in sessions.keys() | rollup.keys()
        if rollup.get(key, 0) != sessions.get(key, 0)
    }
