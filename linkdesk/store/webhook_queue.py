"""Every write to the webhook tables: deliveries, the durable event queue and refusal counters.

The receiver (``linkdesk.webhooks``) records and queues; the applier (``linkdesk.services``)
claims and closes. Both reach these tables only through here, and the ``links`` row only through
:mod:`linkdesk.store.repository`. The database decides races: unique constraints decide what is
a duplicate, a conditional ``UPDATE … RETURNING`` decides who holds a claim.

The receive path runs thousands of times a minute in a burst: plain Core statements, built once
(SQLAlchemy caches their compiled form), instead of ORM objects and a flush per delivery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from linkdesk.store.engine import Store
from linkdesk.store.models import Base, Link, WebhookDelivery, WebhookEvent, WorkerState
from linkdesk.store.repository import put_named_state, touch_link_webhook

__all__ = [
    "REFUSALS_STATE",
    "PendingEvent",
    "claim_events",
    "close_events",
    "pending_event",
    "prune_webhook_rows",
    "queue_delivery",
    "stored_refusal_counts",
    "write_refusals",
]

# Named worker state holding the refusal counters: {"counts": {reason: n}, "since", "last_at"}.
REFUSALS_STATE = "webhook_refusals"

_EVENTS = Base.metadata.tables[WebhookEvent.__tablename__]
_DELIVERIES = Base.metadata.tables[WebhookDelivery.__tablename__]
_INSERT_DELIVERY = _DELIVERIES.insert()
_QUEUE_EVENT = {
    # No conflict target: a clash on either unique column (idempotency key or delivery token)
    # means the event is queued already.
    "sqlite": sqlite.insert(_EVENTS).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(_EVENTS).on_conflict_do_nothing(),
}
_CLOSE_EVENT = (
    sa.update(_EVENTS)
    .where(_EVENTS.c.id == sa.bindparam("event_id"), _EVENTS.c.status == "pending")
    .values(
        status=sa.bindparam("outcome"),
        applied_at=sa.bindparam("done_at"),
        claimed_until=None,
        detail=sa.bindparam("note"),
    )
)


def _queue_once(connection: sa.Connection, values: dict[str, Any]) -> bool:
    """Insert the event unless a unique constraint says it is queued already."""
    statement = _QUEUE_EVENT.get(connection.dialect.name)
    if statement is not None:
        return connection.execute(statement, values).rowcount == 1
    # Other backends: a savepoint turns the constraint violation into "already queued".
    try:
        with connection.begin_nested():
            connection.execute(_EVENTS.insert(), values)
    except sa.exc.IntegrityError:
        return False
    return True


def queue_delivery(
    store: Store,
    queued: dict[str, Any],
    *,
    accepted_row: dict[str, Any],
    duplicate_row: dict[str, Any],
) -> bool:
    """Queue an event and record its delivery in one transaction; False: queued already.

    On PostgreSQL an insert that meets an uncommitted row with the same key waits for that
    transaction and then skips (or inserts, if it rolled back); SQLite's writers take turns. No
    query before the insert is needed. An accepted event also stamps its link's
    ``last_webhook_at``; a duplicate's row carries no payload (the accepted one holds it).
    """
    with store.write() as session:
        connection = session.connection()
        accepted = _queue_once(connection, queued)
        connection.execute(_INSERT_DELIVERY, accepted_row if accepted else duplicate_row)
        if accepted:
            touch_link_webhook(connection, queued["link_id"], queued["received_at"])
    return accepted


def write_refusals(
    store: Store,
    counts: Counter[str],
    rows: list[dict[str, Any]],
    *,
    last_at: datetime,
    now: datetime,
    keep: int,
) -> None:
    """Add ``counts`` to the stored per-reason counters, store the sample ``rows``, and keep only
    the newest ``keep`` refused rows."""
    with store.write() as session:
        # Locked: the counters are a read-modify-write shared by every process.
        stored = session.get(WorkerState, REFUSALS_STATE, with_for_update=True)
        value = dict(stored.value or {}) if stored is not None else {}
        merged = Counter({k: int(v) for k, v in dict(value.get("counts") or {}).items()})
        merged.update(counts)
        put_named_state(
            session,
            REFUSALS_STATE,
            {
                "counts": dict(sorted(merged.items())),
                "since": value.get("since") or now.isoformat(),
                "last_at": last_at.isoformat(),
            },
            now,
        )
        connection = session.connection()
        if rows:
            connection.execute(_INSERT_DELIVERY, rows)
        # The sample: the newest refused rows; older ones only live on in the counters.
        cutoff = connection.scalar(
            sa.select(_DELIVERIES.c.id)
            .where(_DELIVERIES.c.verdict == "rejected")
            .order_by(_DELIVERIES.c.id.desc())
            .offset(keep)
            .limit(1)
        )
        if cutoff is not None:
            connection.execute(
                sa.delete(_DELIVERIES).where(
                    _DELIVERIES.c.verdict == "rejected", _DELIVERIES.c.id <= cutoff
                )
            )


def stored_refusal_counts(store: Store) -> Counter[str]:
    with store.read() as session:
        stored = session.get(WorkerState, REFUSALS_STATE)
        value = dict(stored.value or {}) if stored is not None else {}
    return Counter({k: int(v) for k, v in dict(value.get("counts") or {}).items()})


def prune_webhook_rows(store: Store, cutoff: datetime) -> None:
    """Delete deliveries, and events no longer pending, received before ``cutoff``."""
    with store.write() as session:
        connection = session.connection()
        connection.execute(sa.delete(_DELIVERIES).where(_DELIVERIES.c.received_at < cutoff))
        connection.execute(
            sa.delete(_EVENTS).where(_EVENTS.c.status != "pending", _EVENTS.c.received_at < cutoff)
        )


def claim_events(
    store: Store, token: str, *, limit: int, now: datetime, ttl: timedelta
) -> list[int]:
    """Claim up to ``limit`` pending events, oldest event time first, for ``ttl``."""
    free = sa.or_(WebhookEvent.claimed_until.is_(None), WebhookEvent.claimed_until < now)
    candidates = (
        sa.select(WebhookEvent.id)
        .where(WebhookEvent.status == "pending", free)
        .order_by(WebhookEvent.webhook_timestamp.asc(), WebhookEvent.id.asc())
        .limit(limit)
    )
    if store.dialect == "postgresql":
        # Other appliers skip these rows instead of waiting for this transaction.
        candidates = candidates.with_for_update(skip_locked=True)
    with store.write() as session:
        ids = list(session.scalars(candidates).all())
        if not ids:
            return []
        # Still conditional: only rows nobody else holds are taken; RETURNING says which.
        won = set(
            session.scalars(
                sa.update(WebhookEvent)
                .where(WebhookEvent.id.in_(ids), WebhookEvent.status == "pending", free)
                .values(claimed_by=token, claimed_until=now + ttl)
                .returning(WebhookEvent.id)
                .execution_options(synchronize_session=False)
            ).all()
        )
    return [event_id for event_id in ids if event_id in won]


def close_events(store: Store, outcomes: Sequence[dict[str, Any]]) -> None:
    """Record the outcome (``event_id``, ``outcome``, ``done_at``, ``note``) of claimed events,
    in one transaction; an event closed meanwhile is left as it is."""
    if not outcomes:
        return
    with store.write() as session:
        session.connection().execute(_CLOSE_EVENT, list(outcomes))


@dataclass(frozen=True, slots=True)
class PendingEvent:
    link_id: str
    event: str
    timestamp: datetime
    payload: dict[str, Any]
    link_state_as_of: datetime | None  # of the stored link, if any


def pending_event(store: Store, event_id: int) -> PendingEvent | None:
    """A claimed event still pending, with the time of its link's stored state."""
    with store.read() as session:
        row = session.get(WebhookEvent, event_id)
        if row is None or row.status != "pending":
            return None
        stored = session.get(Link, row.link_id)
        return PendingEvent(
            link_id=row.link_id,
            event=row.event,
            timestamp=row.webhook_timestamp,
            payload=dict(row.payload or {}),
            link_state_as_of=stored.state_as_of if stored is not None else None,
        )
