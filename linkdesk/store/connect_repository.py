"""Every write to Connect's tables: sessions, their events, and relink leases.

Each function runs inside the caller's ``Store.write()`` unit of work and never commits. Races
are decided by the database, never by a read beforehand: an event is stored once per
``(session_id, seq)`` by its unique constraint; a session's end is claimed by one conditional
``UPDATE`` (only the caller that flips ``completion_claimed_at`` from NULL finishes it); a lease
is taken by an ``INSERT`` that skips a held link, then an ``UPDATE`` that only takes an expired
lease or the holder's own, and moved or released by statements conditional on its session.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.store.funnel_rollup import (
    PICKED_BANK_EVENT,
    SessionCounts,
    add_counts,
    logged_step,
    logged_steps,
    moved,
)
from linkdesk.store.models import ConnectEvent, ConnectSession, Institution, Link, RelinkLease
from linkdesk.store.repository import insert_if_absent

__all__ = [
    "claim_completion",
    "close_unfinished",
    "current_lease",
    "fail_interrupted",
    "finish_session",
    "insert_event",
    "institution_name",
    "move_lease",
    "record_session_start",
    "release_lease",
    "stored_seqs",
    "take_lease",
]


# -- leases ----------------------------------------------------------------------------------


def take_lease(
    session: Session, values: Mapping[str, Any], now: datetime
) -> tuple[str, datetime] | None:
    """Reserve ``values["link_id"]`` for ``values["holder"]``: None when won, else the holder
    and expiry of the lease that stands in the way."""
    if insert_if_absent(session, RelinkLease, dict(values), ["link_id"]):
        return None
    link_id = values["link_id"]
    won = session.execute(
        sa.update(RelinkLease)
        .where(
            RelinkLease.link_id == link_id,
            sa.or_(RelinkLease.expires_at <= now, RelinkLease.holder == values["holder"]),
        )
        .values(**{k: v for k, v in values.items() if k != "link_id"})
    )
    if won.rowcount == 1:  # type: ignore[attr-defined]
        return None
    lease = session.get(RelinkLease, link_id)
    if lease is None:  # pragma: no cover - released between the two statements
        return "someone else", values["expires_at"]
    return lease.holder, lease.expires_at


def current_lease(session: Session, link_id: str, now: datetime) -> RelinkLease | None:
    lease = session.get(RelinkLease, link_id)
    return lease if lease is not None and lease.expires_at > now else None


def release_lease(session: Session, link_id: str, session_id: str) -> bool:
    """Delete the lease of ``link_id`` if it still belongs to ``session_id``."""
    gone = session.execute(
        sa.delete(RelinkLease).where(
            RelinkLease.link_id == link_id, RelinkLease.session_id == session_id
        )
    )
    return bool(gone.rowcount)  # type: ignore[attr-defined]


def move_lease(
    session: Session, link_id: str, from_session: str, values: Mapping[str, Any]
) -> bool:
    """Give the lease to a new holder, only if it still belongs to ``from_session``."""
    won = session.execute(
        sa.update(RelinkLease)
        .where(RelinkLease.link_id == link_id, RelinkLease.session_id == from_session)
        .values(**values)
    )
    return bool(won.rowcount)  # type: ignore[attr-defined]


# -- the funnel's rollups ---------------------------------------------------------------------


def _locked(session: Session, session_id: str) -> ConnectSession | None:
    """The session's row as stored now, locked until the transaction ends (PostgreSQL; SQLite's
    writers run one at a time), so its bucket cannot move under this writer."""
    session.flush()  # what this transaction changed is kept by the reload
    return session.get(ConnectSession, session_id, with_for_update=True, populate_existing=True)


def _link_bank(session: Session, link_id: str | None) -> str | None:
    if link_id is None:
        return None
    return session.scalar(sa.select(Link.institution_id).where(Link.link_id == link_id))


# -- sessions ----------------------------------------------------------------------------------


def record_session_start(
    session: Session,
    *,
    session_id: str,
    mode: str,
    customer_id: str | None,
    link_id: str | None,
    started_by: str,
    now: datetime,
    failure_message: str | None,
    token_sha256: str | None,
) -> None:
    """A session as it starts: pending, or failed at once when MoneyKit refused to open it
    (``failure_message``). Only a hash of its link-session token is kept."""
    failed = failure_message is not None
    row = ConnectSession(
        id=session_id,
        mode=mode,
        customer_id=customer_id,
        link_id=link_id,
        started_by=started_by,
        started_at=now,
        outcome="failed" if failed else "pending",
        failure_message=failure_message,
        finished_at=now if failed else None,
        token_sha256=token_sha256,
        institution_id=_link_bank(session, link_id),
    )
    session.add(row)
    add_counts(session, added=[SessionCounts.of(row, [])])


# What a session's row says after a conditional UPDATE that ended it: its bucket then.
_BUCKET_COLUMNS = (
    ConnectSession.started_at,
    ConnectSession.mode,
    ConnectSession.institution_id,
    ConnectSession.outcome,
    ConnectSession.exit_error_id,
)


def _ended_pending(session: Session, session_id: str, ended: Any) -> bool:
    """Move the counts of the session an UPDATE … RETURNING ended (if it did) from pending."""
    row = ended.first()
    if row is None:
        return False
    steps = logged_steps(session, session_id)
    after = SessionCounts.of(row, steps)
    pending = SimpleNamespace(**{**row._asdict(), "outcome": "pending", "exit_error_id": None})
    before = SessionCounts.of(pending, steps)
    moved(session, before, after)
    return True


def close_unfinished(session: Session, session_id: str, *, now: datetime, message: str) -> bool:
    """End a session nobody is finishing as 'exit' with ``message``. A session whose end is
    already claimed is left to its finisher."""
    closed = session.execute(
        sa.update(ConnectSession)
        .where(
            ConnectSession.id == session_id,
            ConnectSession.outcome == "pending",
            ConnectSession.completion_claimed_at.is_(None),
        )
        .values(outcome="exit", finished_at=now, exit_message=message)
        .returning(*_BUCKET_COLUMNS)
    )
    return _ended_pending(session, session_id, closed)


def claim_completion(session: Session, session_id: str, now: datetime) -> ConnectSession | None:
    """Win the right to finish the session; None if someone else already has."""
    won = session.execute(
        sa.update(ConnectSession)
        .where(
            ConnectSession.id == session_id,
            ConnectSession.outcome == "pending",
            ConnectSession.completion_claimed_at.is_(None),
        )
        .values(completion_claimed_at=now)
    )
    if not won.rowcount:  # type: ignore[attr-defined]
        return None
    return session.get(ConnectSession, session_id)


def fail_interrupted(
    session: Session, session_id: str, *, now: datetime, claimed_before: datetime, message: str
) -> ConnectSession | None:
    """Fail a session whose end was claimed before ``claimed_before`` and never finished;
    returns it when this call failed it."""
    stopped = session.execute(
        sa.update(ConnectSession)
        .where(
            ConnectSession.id == session_id,
            ConnectSession.outcome == "pending",
            ConnectSession.completion_claimed_at < claimed_before,
        )
        .values(outcome="failed", finished_at=now, failure_message=message)
        .returning(*_BUCKET_COLUMNS)
    )
    if not _ended_pending(session, session_id, stopped):
        return None
    return session.get(ConnectSession, session_id)


def finish_session(
    session: Session,
    row: ConnectSession,
    *,
    outcome: str,
    now: datetime,
    link_id: str | None = None,
    exchanged: bool = False,
    failure_message: str | None = None,
    exit_fields: tuple[str | None, str | None, str | None] | None = None,
) -> None:
    """Record the end of a session this caller claimed; a relink's lease goes with it."""
    session.flush()  # what this transaction changed is kept by the reload that locks the row
    session.refresh(row, with_for_update=True)
    steps = logged_steps(session, row.id)
    before = SessionCounts.of(row, steps)
    row.outcome = outcome
    row.finished_at = now
    if link_id is not None:
        row.link_id = link_id
        row.institution_id = _link_bank(session, link_id) or row.institution_id
    if exchanged:
        row.exchanged_at = now
    if failure_message is not None:
        row.failure_message = failure_message
    if exit_fields is not None:
        row.exit_error_id, row.exit_message, row.exit_request_id = exit_fields
    moved(session, before, SessionCounts.of(row, steps))
    if row.mode == "relink" and row.link_id:
        release_lease(session, row.link_id, row.id)


# -- events ------------------------------------------------------------------------------------


def stored_seqs(session: Session, session_id: str) -> set[int]:
    return set(
        session.scalars(
            sa.select(ConnectEvent.seq).where(ConnectEvent.session_id == session_id)
        ).all()
    )


def insert_event(session: Session, values: Mapping[str, Any]) -> int:
    """Store one log entry unless its ``(session_id, seq)`` is stored; 1 when inserted. A bank
    picked in Connect becomes the session's bank, unless a later pick is stored or the session
    has its link (whose bank it keeps)."""
    session_id, seq = values["session_id"], values["seq"]
    row = _locked(session, session_id)
    steps = logged_steps(session, session_id) if row is not None else []
    if not insert_if_absent(session, ConnectEvent, dict(values), ["session_id", "seq"]):
        return 0
    if row is None:
        return 1
    before = SessionCounts.of(row, steps)
    name, payload = values.get("name"), values.get("payload")
    steps.append(logged_step(seq, values["type"], name, payload, values.get("at")))
    if name == PICKED_BANK_EVENT and row.link_id is None and isinstance(payload, dict):
        properties = payload.get("properties")
        picked = properties.get("institution_id") if isinstance(properties, dict) else None
        if (
            isinstance(picked, str)
            and picked
            and not any(later[1] == PICKED_BANK_EVENT and later[0] > seq for later in steps)
        ):
            row.institution_id = picked[:200]
    moved(session, before, SessionCounts.of(row, steps))
    return 1


def institution_name(session: Session, link_id: str | None) -> str | None:
    if link_id is None:
        return None
    return session.scalar(
        sa.select(Institution.name)
        .join(Link, Link.institution_id == Institution.institution_id)
        .where(Link.link_id == link_id)
    )
