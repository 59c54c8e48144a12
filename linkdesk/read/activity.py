"""What happened around links: Connect sessions, the audit log, sync attempts, who is relinking a
link now, and the relink links sent to customers. The Activity screen lists them across links;
the link detail and the services read one link's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from linkdesk.read.link_order import prefix_range
from linkdesk.store.aggregates import bounded
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    AuditEntry,
    ConnectEvent,
    ConnectSession,
    CustomerLinkToken,
    RelinkLease,
    SyncAttempt,
)

__all__ = [
    "ActivityReads",
    "AuditRow",
    "CustomerLinkRow",
    "RelinkInProgress",
    "SessionRow",
    "SyncAttemptRow",
    "audit_row",
    "session_row",
]


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    mode: str
    customer_id: str | None
    link_id: str | None
    started_by: str
    started_at: datetime
    outcome: str
    exit_error_id: str | None
    exit_message: str | None
    exit_request_id: str | None
    failure_message: str | None
    exchanged_at: datetime | None
    finished_at: datetime | None
    event_count: int


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    link_id: str | None
    customer_id: str | None
    outcome: str
    detail: str | None
    role: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RelinkInProgress:
    """Someone (a staff member, or a customer through a relink link) is relinking this link."""

    link_id: str
    holder: str
    since: datetime
    expires_at: datetime
    session_id: str


@dataclass(frozen=True, slots=True)
class SyncAttemptRow:
    at: datetime
    link_id: str | None
    kind: str
    outcome: str
    error: str | None
    duration_ms: int
    worker: str | None


@dataclass(frozen=True, slots=True)
class CustomerLinkRow:
    id: str
    link_id: str
    customer_id: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    reason: str | None


def session_row(s: ConnectSession, event_count: int = 0) -> SessionRow:
    return SessionRow(
        session_id=s.id,
        mode=s.mode,
        customer_id=s.customer_id,
        link_id=s.link_id,
        started_by=s.started_by,
        started_at=s.started_at,
        outcome=s.outcome,
        exit_error_id=s.exit_error_id,
        exit_message=s.exit_message,
        exit_request_id=s.exit_request_id,
        failure_message=s.failure_message,
        exchanged_at=s.exchanged_at,
        finished_at=s.finished_at,
        event_count=event_count,
    )


def audit_row(a: AuditEntry) -> AuditRow:
    return AuditRow(
        id=a.id,
        at=a.at,
        actor=a.actor,
        action=a.action,
        link_id=a.link_id,
        customer_id=a.customer_id,
        outcome=a.outcome,
        detail=a.detail,
        role=a.role,
        reason=a.reason,
    )


class ActivityReads:
    """Newest first, at most :data:`linkdesk.store.aggregates.MAX_LIMIT` rows a read."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] | None = None) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def recent_sessions(self, limit: int = 20, *, link_id: str | None = None) -> list[SessionRow]:
        limit = bounded(limit)
        events = (
            sa.select(sa.func.count())
            .where(ConnectEvent.session_id == ConnectSession.id)
            .correlate(ConnectSession)
            .scalar_subquery()
        )
        stmt = sa.select(ConnectSession, events)
        if link_id is not None:
            stmt = stmt.where(ConnectSession.link_id == link_id)
        stmt = stmt.order_by(ConnectSession.started_at.desc(), ConnectSession.id.desc()).limit(
            limit
        )
        with self._store.read() as session:
            return [session_row(s, int(n)) for s, n in session.execute(stmt).all()]

    def audit_entries(
        self,
        limit: int = 50,
        *,
        link_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditRow]:
        """Newest first. ``action`` ending in ``.`` or ``*`` matches a prefix (``connect.``)."""
        limit = bounded(limit)
        stmt = sa.select(AuditEntry)
        if link_id is not None:
            stmt = stmt.where(AuditEntry.link_id == link_id)
        if actor is not None:
            stmt = stmt.where(AuditEntry.actor == actor)
        if action:
            if action.endswith(("*", ".")):
                stmt = stmt.where(prefix_range(AuditEntry.action, action.rstrip("*")))
            else:
                stmt = stmt.where(AuditEntry.action == action)
        if customer_id is not None:
            stmt = stmt.where(AuditEntry.customer_id == customer_id)
        if since is not None:
            stmt = stmt.where(AuditEntry.at >= since)
        if until is not None:
            stmt = stmt.where(AuditEntry.at < until)
        stmt = stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
        with self._store.read() as session:
            return [audit_row(a) for a in session.scalars(stmt).all()]

    def relink_in_progress(self, link_id: str) -> RelinkInProgress | None:
        """Who is relinking ``link_id`` right now (an expired lease counts as nobody)."""
        now = self._clock()
        with self._store.read() as session:
            lease = session.get(RelinkLease, link_id)
            if lease is None or lease.expires_at <= now:
                return None
            return RelinkInProgress(
                link_id=lease.link_id,
                holder=lease.holder,
                since=lease.acquired_at,
                expires_at=lease.expires_at,
                session_id=lease.session_id,
            )

    def sync_attempts(self, limit: int = 50, *, link_id: str | None = None) -> list[SyncAttemptRow]:
        limit = bounded(limit)
        stmt = sa.select(SyncAttempt)
        if link_id is not None:
            stmt = stmt.where(SyncAttempt.link_id == link_id)
        stmt = stmt.order_by(SyncAttempt.at.desc(), SyncAttempt.id.desc()).limit(limit)
        with self._store.read() as session:
            return [
                SyncAttemptRow(
                    at=a.at,
                    link_id=a.link_id,
                    kind=a.kind,
                    outcome=a.outcome,
                    error=a.error,
                    duration_ms=a.duration_ms,
                    worker=a.worker,
                )
                for a in session.scalars(stmt).all()
            ]

    def customer_links(self, link_id: str, limit: int = 20) -> list[CustomerLinkRow]:
        limit = bounded(limit)
        stmt = (
            sa.select(CustomerLinkToken)
            .where(CustomerLinkToken.link_id == link_id)
            .order_by(CustomerLinkToken.created_at.desc())
            .limit(limit)
        )
        with self._store.read() as session:
            return [
                CustomerLinkRow(
                    id=t.id,
                    link_id=t.link_id,
                    customer_id=t.customer_id,
                    created_by=t.created_by,
                    created_at=t.created_at,
                    expires_at=t.expires_at,
                    used_at=t.used_at,
                    finished_at=t.finished_at,
                    outcome=t.outcome,
                    reason=t.reason,
                )
                for t in session.scalars(stmt).all()
            ]
