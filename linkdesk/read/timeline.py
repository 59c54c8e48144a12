"""The customer timeline screen: everything that happened to one customer's links, newest
first and paged by a cursor, and the links of theirs that need a look."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from linkdesk.health import Health, HealthThresholds, health_case
from linkdesk.store.aggregates import as_aware, bounded, event_property
from linkdesk.store.cursor import InvalidCursor, decode_cursor, encode_cursor
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    AuditEntry,
    ConnectEvent,
    ConnectSession,
    Institution,
    Link,
    LinkStateChange,
    SyncAttempt,
    UTCDateTime,
    WebhookDelivery,
)

TIMELINE_KINDS = ("session", "event", "exchange", "state", "webhook", "sync", "staff")


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    at: datetime
    kind: str
    ref: str
    link_id: str | None
    institution_name: str | None
    what: str
    who: str


@dataclass(frozen=True, slots=True)
class TimelinePage:
    entries: list[TimelineEntry]
    next_cursor: str | None


def _decode_timeline_cursor(cursor: str, size: int) -> list[str] | None:
    try:
        values = decode_cursor(cursor)
    except InvalidCursor:
        return None
    if not isinstance(values, list) or len(values) != size:
        return None
    if not all(isinstance(v, str) for v in values):
        return None
    return values


class TimelineReads:
    """One customer's history and open problems."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        thresholds: HealthThresholds | None = None,
    ) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._thresholds = thresholds or HealthThresholds()

    def customer_links_to_act_on(self, customer_id: str, limit: int = 10) -> list[str]:
        """Ids of one customer's links whose verdict asks for a look, most recently changed first.

        Everything but healthy, still linking and deleted links: the customer timeline shows why
        each of these is broken and what to do about it.
        """
        verdict = health_case(self._clock(), self._thresholds)
        fine = [Health.HEALTHY.value, Health.PENDING.value, Health.DELETED.value]
        stmt = (
            sa.select(Link.link_id)
            .where(Link.customer_id == customer_id, verdict.notin_(fine))
            .order_by(Link.updated_at.desc(), Link.link_id)
            .limit(bounded(limit))
        )
        with self._store.read() as session:
            return [str(link_id) for link_id in session.scalars(stmt).all()]

    def customer_timeline(
        self,
        customer_id: str,
        *,
        kinds: Collection[str] | None = None,
        limit: int = 50,
        after: str | None = None,
    ) -> TimelinePage:
        """Everything that happened to one customer's links, newest first, one page at a time."""
        wanted = [
            k for k in (kinds if kinds is not None else TIMELINE_KINDS) if k in TIMELINE_KINDS
        ]
        if not wanted:
            return TimelinePage(entries=[], next_cursor=None)
        limit = bounded(limit)
        # Their link ids, read first (a customer has a handful): "their sessions, or sessions of
        # their links" is then two index ranges on both databases, where PostgreSQL turns an OR
        # over a sub-select into a scan of every Connect session (0.5 s at a million).
        with self._store.read() as session:
            their_links = list(
                session.scalars(sa.select(Link.link_id).where(Link.customer_id == customer_id))
            )
        theirs = sa.or_(
            ConnectSession.customer_id == customer_id, ConnectSession.link_id.in_(their_links)
        )
        text = sa.String()

        # Every branch of the UNION yields the same eight columns; casting to text keeps
        # PostgreSQL from refusing a UNION of ids, enums and strings.
        def columns(
            at: Any, kind: Any, ref: Any, link_id: Any, a: Any, b: Any, c: Any, who: Any
        ) -> list[Any]:
            return [
                at.label("at"),
                sa.cast(kind, text).label("kind"),
                sa.cast(ref, text).label("ref"),
                sa.cast(link_id, text).label("link_id"),
                sa.cast(a, text).label("a"),
                sa.cast(b, text).label("b"),
                sa.cast(c, text).label("c"),
                sa.cast(who, text).label("who"),
            ]

        null = sa.null()
        branches: list[Any] = []
        if "session" in wanted:
            branches.append(
                sa.select(
                    *columns(
                        ConnectSession.started_at,
                        sa.literal("session"),
                        ConnectSession.id,
                        ConnectSession.link_id,
                        sa.literal("started"),
                        ConnectSession.mode,
                        null,
                        ConnectSession.started_by,
                    )
                ).where(theirs)
            )
        ended = sa.and_(theirs, ConnectSession.finished_at.is_not(None))
        for kind, condition in (
            ("session", ConnectSession.outcome != "success"),
            ("exchange", ConnectSession.outcome == "success"),
        ):
            if kind in wanted:
                branches.append(
                    sa.select(
                        *columns(
                            ConnectSession.finished_at,
                            sa.literal(kind),
                            ConnectSession.id + ":end",
                            ConnectSession.link_id,
                            ConnectSession.outcome,
                            ConnectSession.mode,
                            sa.func.coalesce(
                                ConnectSession.exit_error_id, ConnectSession.failure_message
                            ),
                            ConnectSession.started_by,
                        )
                    ).where(ended, condition)
                )
        if "event" in wanted:
            detail = sa.func.coalesce(
                event_property("current_screen_name"),
                event_property("institution_name"),
                event_property("error_id"),
                event_property("search_term"),
            )
            branches.append(
                sa.select(
                    *columns(
                        sa.func.coalesce(ConnectEvent.at, ConnectEvent.recorded_at),
                        sa.literal("event"),
                        ConnectEvent.id,
                        ConnectSession.link_id,
                        ConnectEvent.name,
                        detail,
                        ConnectEvent.seq,
                        ConnectSession.started_by,
                    )
                )
                .join(ConnectSession, ConnectSession.id == ConnectEvent.session_id)
                .where(theirs)
            )
        if "state" in wanted:
            branches.append(
                sa.select(
                    *columns(
                        LinkStateChange.at,
                        sa.literal("state"),
                        LinkStateChange.id,
                        LinkStateChange.link_id,
                        LinkStateChange.from_state
                        + "/"
                        + sa.func.coalesce(LinkStateChange.from_error, ""),
                        LinkStateChange.to_state,
                        LinkStateChange.to_error,
                        LinkStateChange.source,
                    )
                ).where(LinkStateChange.link_id.in_(their_links))
            )
        if "webhook" in wanted:
            branches.append(
                sa.select(
                    *columns(
                        WebhookDelivery.received_at,
                        sa.literal("webhook"),
                        WebhookDelivery.id,
                        WebhookDelivery.link_id,
                        WebhookDelivery.event,
                        WebhookDelivery.verdict,
                        WebhookDelivery.reason,
                        sa.literal("MoneyKit"),
                    )
                ).where(WebhookDelivery.link_id.in_(their_links))
            )
        if "sync" in wanted:
            branches.append(
                sa.select(
                    *columns(
                        SyncAttempt.at,
                        sa.literal("sync"),
                        SyncAttempt.id,
                        SyncAttempt.link_id,
                        SyncAttempt.outcome,
                        SyncAttempt.kind,
                        SyncAttempt.error,
                        sa.func.coalesce(SyncAttempt.worker, "worker"),
                    )
                ).where(SyncAttempt.link_id.in_(their_links))
            )
        if "staff" in wanted:
            branches.append(
                sa.select(
                    *columns(
                        AuditEntry.at,
                        sa.literal("staff"),
                        AuditEntry.id,
                        AuditEntry.link_id,
                        AuditEntry.action,
                        AuditEntry.outcome,
                        sa.func.coalesce(AuditEntry.reason, AuditEntry.detail),
                        AuditEntry.actor,
                    )
                ).where(
                    sa.or_(
                        AuditEntry.customer_id == customer_id, AuditEntry.link_id.in_(their_links)
                    )
                )
            )
        if not branches:
            return TimelinePage(entries=[], next_cursor=None)
        rows = sa.union_all(*branches).subquery("timeline")
        at_column = rows.c.at
        stmt = (
            sa.select(rows, Institution.name)
            .select_from(rows)
            .outerjoin(Link, Link.link_id == rows.c.link_id)
            .outerjoin(Institution, Institution.institution_id == Link.institution_id)
        )
        if after:
            values = _decode_timeline_cursor(after, 3)
            try:
                at_value = datetime.fromisoformat(values[0]) if values else None
            except ValueError:
                at_value = None  # a mangled cursor starts again at the newest entry
            if values is not None and at_value is not None:
                # Ids are compared as text: not numeric order, but a total order, which is all
                # the cursor needs as long as the ORDER BY uses the same expressions.
                at_param = sa.literal(at_value, UTCDateTime())
                stmt = stmt.where(
                    sa.or_(
                        at_column < at_param,
                        sa.and_(at_column == at_param, rows.c.kind < values[1]),
                        sa.and_(
                            at_column == at_param, rows.c.kind == values[1], rows.c.ref < values[2]
                        ),
                    )
                )
        stmt = stmt.order_by(at_column.desc(), rows.c.kind.desc(), rows.c.ref.desc()).limit(
            limit + 1
        )
        with self._store.read() as session:
            found = session.execute(stmt).all()
        entries = []
        for at, kind, ref, link_id, a, b, c, who, institution in found[:limit]:
            moment = as_aware(at)
            if moment is None:
                continue
            entries.append(
                TimelineEntry(
                    at=moment,
                    kind=kind,
                    ref=ref,
                    link_id=link_id,
                    institution_name=institution,
                    what=_describe(kind, a, b, c),
                    who=who or "",
                )
            )
        next_cursor = None
        if len(found) > limit and entries:
            last = entries[-1]
            next_cursor = encode_cursor([last.at.isoformat(), last.kind, last.ref])
        return TimelinePage(entries=entries, next_cursor=next_cursor)


def _describe(kind: str, a: str | None, b: str | None, c: str | None) -> str:
    if kind == "session":
        if a == "started":
            return f"{b or 'Connect'} session started"
        return f"{b or 'Connect'} session ended: {a}" + (f" ({c})" if c else "")
    if kind == "exchange":
        return (
            "Relinked: the link works again" if b == "relink" else "Bank linked (token exchanged)"
        )
    if kind == "event":
        return f"Connect: {a}" + (f" — {b}" if b else "")
    if kind == "state":
        before = (a or "").rstrip("/") or "new"
        return f"State {before} → {b}" + (f"/{c}" if c else "")
    if kind == "webhook":
        return f"Webhook {a or '(unreadable)'}: {b}" + (f" ({c})" if c and c != "ok" else "")
    if kind == "sync":
        return f"Sync ({b}): {a}" + (f" — {c}" if c else "")
    if kind == "staff":
        return f"{a}: {b}" + (f" — {c}" if c else "")
    return " ".join(part for part in (a, b, c) if part)
