"""Aggregates for the operations, support and demo pages: counted in SQL, returned small.

Every method here answers one screen's question with a bounded result: GROUP BY for counts, a
LIMIT for lists (keyset cursors where a list is paged), so no page ever pulls a table into memory
to count it. Time comes from the injected clock, so tests can pin "now".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from linkdesk.health import (
    RELINK_ERRORS,
    STUCK_STATES,
    Health,
    HealthThresholds,
    health_case,
    health_condition_at,
)
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
    WebhookEvent,
)
from linkdesk.store.queries import LinkFilters, LinkQueries, LinkSort
from linkdesk.validation import safe_hex_color

__all__ = [
    "ABANDONED_AFTER",
    "TIMELINE_KINDS",
    "Analytics",
    "BrokeToday",
    "BrokenLink",
    "DayCount",
    "DeliveryDetail",
    "FunnelFilters",
    "FunnelSummary",
    "InstitutionErrors",
    "LinksExport",
    "RelinkStats",
    "ScreenStat",
    "TimelineEntry",
    "TimelinePage",
    "TrendPoint",
    "links_csv",
]

# A Connect session with no success or exit after this long was left by the person.
ABANDONED_AFTER = timedelta(minutes=30)
MAX_LIMIT = 1000
EXPORT_CAP = 50_000
TIMELINE_KINDS = ("session", "event", "exchange", "state", "webhook", "sync", "staff")
_TERMINAL_TYPES = ("success", "relink_success", "exit")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def _as_date(value: Any) -> date:
    # SQLite's date() gives 'YYYY-MM-DD' text, PostgreSQL's gives a date.
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _as_aware(value: Any) -> datetime | None:
    # Values computed inside SQL (MIN, LEAD…) come back without the column type's processing.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return None


# -- result rows -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """How many links were in each condition at the end of ``day`` (UTC)."""

    day: date
    auth_expired: int
    needs_relink: int


@dataclass(frozen=True, slots=True)
class InstitutionErrors:
    institution_id: str
    name: str
    color: str | None
    errors: int
    links: int


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """A link that moved into a verdict staff must act on, and when it did."""

    link_id: str
    customer_id: str | None
    institution_id: str
    institution_name: str
    health: Health  # needs_relink, attention or stuck
    reason: str  # the playbook key: the error code, or stuck_<state>
    state: str
    error_code: str | None
    broke_at: datetime


@dataclass(frozen=True, slots=True)
class BrokeToday:
    links: list[BrokenLink]  # most recent first, at most the limit asked for
    total: int  # every link that broke since ``since``
    customers: int  # distinct customers among them
    since: datetime


@dataclass(frozen=True, slots=True)
class RelinkStats:
    started: int
    succeeded: int
    exited: int
    failed: int
    pending: int
    median_repair: timedelta | None  # from the link breaking to the relink that repaired it
    repaired: int  # successful relinks whose breaking change is known

    @property
    def success_rate(self) -> float | None:
        finished = self.succeeded + self.exited + self.failed
        return self.succeeded / finished if finished else None


@dataclass(frozen=True, slots=True)
class FunnelFilters:
    since: datetime
    until: datetime
    institution_id: str | None = None
    mode: str | None = None  # link | relink


@dataclass(frozen=True, slots=True)
class FunnelSummary:
    started: int
    completed: int
    exited: int
    failed: int
    pending: int
    abandoned: int

    @property
    def completion_rate(self) -> float | None:
        return self.completed / self.started if self.started else None


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    started: int
    completed: int


@dataclass(frozen=True, slots=True)
class ScreenStat:
    screen: str
    reached: int  # sessions that showed this screen
    dropped: int  # sessions whose last screen this was, without success
    avg_seconds: float | None  # time until the next event, averaged
    samples: int


@dataclass(frozen=True, slots=True)
class ExitErrorRow:
    institution_id: str | None
    institution_name: str
    error_id: str
    sessions: int


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


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    id: int
    received_at: datetime
    verdict: str
    reason: str | None
    event: str | None
    link_id: str | None
    attempt: int | None
    delivery_token: str | None
    event_timestamp: datetime | None
    payload: dict[str, Any] | None  # only for verified (accepted) deliveries


@dataclass(frozen=True, slots=True)
class LinksExport:
    text: str
    rows: int
    capped: bool


# -- SQL helpers -------------------------------------------------------------------------------


def _seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return sa.func.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


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


def _event_property(name: str) -> ColumnElement[Any]:
    return ConnectEvent.payload[("properties", name)].as_string()


class Analytics:
    """Read-only aggregates over the store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        thresholds: HealthThresholds | None = None,
    ) -> None:
        self._store = store
        self._clock = clock or _utcnow
        self._thresholds = thresholds or HealthThresholds()

    # -- overview ----------------------------------------------------------------------------

    def health_trend(self, days: int = 30) -> list[TrendPoint]:
        """Links in ``auth_expired`` / needing a relink at the end of each of the last days.

        Each state change opens an interval that lasts until the link's next change; a day counts
        the intervals open at its end. The window function and the join run in the database.
        """
        days = max(1, min(int(days), 366))
        today = self._clock().date()
        first = today - timedelta(days=days - 1)
        now = self._clock()
        boundaries = [
            (
                first + timedelta(days=i),
                datetime.combine(first + timedelta(days=i + 1), time.min, UTC),
            )
            for i in range(days)
        ]
        day_rows = sa.union_all(
            *(
                sa.select(
                    sa.literal(i).label("i"),
                    sa.literal(min(end, now), UTCDateTime()).label("day_end"),
                )
                for i, (_, end) in enumerate(boundaries)
            )
        ).subquery("days")
        changes = sa.select(
            LinkStateChange.at,
            LinkStateChange.to_state,
            LinkStateChange.to_error,
            sa.func.lead(LinkStateChange.at)
            .over(
                partition_by=LinkStateChange.link_id,
                order_by=(LinkStateChange.at, LinkStateChange.id),
            )
            .label("next_at"),
        ).subquery("changes")
        open_at_end = sa.and_(
            changes.c.at <= day_rows.c.day_end,
            sa.or_(changes.c.next_at.is_(None), changes.c.next_at > day_rows.c.day_end),
        )
        in_error = changes.c.to_state == "error"
        stmt = (
            sa.select(
                day_rows.c.i,
                _count_if(sa.and_(in_error, changes.c.to_error == "auth_expired")),
                _count_if(sa.and_(in_error, changes.c.to_error.in_(sorted(RELINK_ERRORS)))),
            )
            .select_from(day_rows.outerjoin(changes, open_at_end))
            .group_by(day_rows.c.i)
            .order_by(day_rows.c.i)
        )
        with self._store.read() as session:
            found = {int(i): (int(a), int(r)) for i, a, r in session.execute(stmt).all()}
        return [
            TrendPoint(
                day=day, auth_expired=found.get(i, (0, 0))[0], needs_relink=found.get(i, (0, 0))[1]
            )
            for i, (day, _) in enumerate(boundaries)
        ]

    def broke_today(self, limit: int = 20, *, since: datetime | None = None) -> BrokeToday:
        """Links that broke since the start of the day (UTC): newest first, with the why.

        A link broke when its latest recorded state change, made since ``since``, put it in a
        verdict staff must act on (needs relink or needs attention) coming from somewhere else:
        a link first seen already broken (no previous state) does not count, since nobody knows
        when it broke, and neither does a move from one relink error to another. A link that
        sits in Connect becomes stuck once the stuck threshold passes; it counts when that
        moment falls in the window. Candidates are found through the links' ``updated_at``
        index (a state change always touches it) and only ``limit`` rows are read back.
        """
        now = self._clock()
        start = since or datetime.combine(now.date(), time.min, UTC)
        limit = _bounded(limit)
        stuck_after = self._thresholds.stuck_after
        change = sa.orm.aliased(LinkStateChange, name="change")
        newer = sa.orm.aliased(LinkStateChange, name="newer")
        is_latest = ~(
            sa.select(newer.id)
            .where(
                newer.link_id == change.link_id,
                sa.or_(newer.at > change.at, sa.and_(newer.at == change.at, newer.id > change.id)),
            )
            .exists()
        )
        relink_errors = sorted(RELINK_ERRORS)
        # COALESCE: a NULL error would make the whole test NULL, and NOT NULL drops the row.
        still_broken_before = sa.and_(
            sa.func.coalesce(change.from_state, "") == "error",
            sa.func.coalesce(change.from_error, "").in_(relink_errors),
            sa.func.coalesce(change.to_error, "").in_(relink_errors),
        )
        unhealthy = sa.or_(
            health_condition_at(Health.NEEDS_RELINK, now, self._thresholds),
            health_condition_at(Health.ATTENTION, now, self._thresholds),
        )
        errored = sa.and_(
            Link.updated_at >= start,
            unhealthy,
            change.link_id == Link.link_id,
            change.at >= start,
            change.from_state.is_not(None),
            change.to_state == Link.state,
            ~still_broken_before,
            is_latest,
        )
        stuck_since = sa.func.coalesce(Link.created_at, Link.discovered_at)
        stuck = sa.and_(
            Link.state.in_(sorted(STUCK_STATES)),
            stuck_since >= start - stuck_after,
            stuck_since < now - stuck_after,
        )
        columns = (
            Link.link_id,
            Link.customer_id,
            Link.institution_id,
            Institution.name,
            Link.state,
            Link.error_code,
        )
        errored_rows = (
            sa.select(*columns, change.at)
            .join(Institution, Institution.institution_id == Link.institution_id)
            .join(change, change.link_id == Link.link_id)
            .where(errored)
            .order_by(change.at.desc(), Link.link_id)
            .limit(limit)
        )
        stuck_rows = (
            sa.select(*columns, stuck_since)
            .join(Institution, Institution.institution_id == Link.institution_id)
            .where(stuck)
            .order_by(stuck_since.desc(), Link.link_id)
            .limit(limit)
        )
        errored_ids = (
            sa.select(Link.link_id, Link.customer_id)
            .join(change, change.link_id == Link.link_id)
            .where(errored)
        )
        stuck_ids = sa.select(Link.link_id, Link.customer_id).where(stuck)
        every = sa.union_all(errored_ids, stuck_ids).subquery("broken")
        totals = sa.select(sa.func.count(), sa.func.count(sa.distinct(every.c.customer_id)))
        found: list[BrokenLink] = []
        with self._store.read() as session:
            for link_id, customer, iid, name, state, error, at in session.execute(errored_rows):
                moment = _as_aware(at)
                assert moment is not None
                found.append(
                    BrokenLink(
                        link_id=link_id,
                        customer_id=customer,
                        institution_id=iid,
                        institution_name=name,
                        health=Health.NEEDS_RELINK
                        if state == "error" and error in RELINK_ERRORS
                        else Health.ATTENTION,
                        reason=error or ("error_without_code" if state == "error" else state),
                        state=state,
                        error_code=error,
                        broke_at=moment,
                    )
                )
            for link_id, customer, iid, name, state, error, since_at in session.execute(stuck_rows):
                moment = _as_aware(since_at)
                assert moment is not None
                found.append(
                    BrokenLink(
                        link_id=link_id,
                        customer_id=customer,
                        institution_id=iid,
                        institution_name=name,
                        health=Health.STUCK,
                        reason=f"stuck_{state}",
                        state=state,
                        error_code=error,
                        broke_at=moment + stuck_after,
                    )
                )
            total, customers = session.execute(totals.select_from(every)).one()
        # Newest first, ties by link id, as each query ordered its own rows (sorts are stable).
        found.sort(key=lambda row: row.link_id)
        found.sort(key=lambda row: row.broke_at, reverse=True)
        return BrokeToday(
            links=found[:limit], total=int(total), customers=int(customers), since=start
        )

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
            .limit(_bounded(limit))
        )
        with self._store.read() as session:
            return [str(link_id) for link_id in session.scalars(stmt).all()]

    def errors_by_institution(self, limit: int = 10) -> list[InstitutionErrors]:
        """The banks with most links in state ``error`` now, worst first."""
        errors = _count_if(Link.state == "error").label("errors")
        stmt = (
            sa.select(
                Link.institution_id,
                Institution.name,
                Institution.color,
                errors,
                sa.func.count().label("links"),
            )
            .join(Institution, Institution.institution_id == Link.institution_id)
            .group_by(Link.institution_id, Institution.name, Institution.color)
            .having(errors > 0)
            .order_by(errors.desc(), Institution.name)
            .limit(_bounded(limit))
        )
        with self._store.read() as session:
            return [
                InstitutionErrors(
                    institution_id=iid,
                    name=name,
                    color=safe_hex_color(color),
                    errors=int(n_errors),
                    links=int(n_links),
                )
                for iid, name, color, n_errors, n_links in session.execute(stmt).all()
            ]

    def relink_stats(self, days: int = 30) -> RelinkStats:
        """Relink sessions of the last ``days``: outcomes, and the median time to repair."""
        since = self._clock() - timedelta(days=max(1, int(days)))
        in_window = sa.and_(ConnectSession.mode == "relink", ConnectSession.started_at >= since)
        outcome = ConnectSession.outcome
        counts = sa.select(
            sa.func.count(),
            _count_if(outcome == "success"),
            _count_if(outcome == "exit"),
            _count_if(outcome == "failed"),
            _count_if(outcome == "pending"),
        ).where(in_window)
        broke_at = (
            sa.select(sa.func.max(LinkStateChange.at))
            .where(
                LinkStateChange.link_id == ConnectSession.link_id,
                LinkStateChange.to_state == "error",
                LinkStateChange.to_error.in_(sorted(RELINK_ERRORS)),
                LinkStateChange.at <= ConnectSession.finished_at,
            )
            .correlate(ConnectSession)
            .scalar_subquery()
        )
        repairs = (
            sa.select(
                _seconds_between(self._store.dialect, ConnectSession.finished_at, broke_at).label(
                    "seconds"
                )
            )
            .where(in_window, outcome == "success", ConnectSession.finished_at.is_not(None))
            .subquery()
        )
        known = repairs.c.seconds.is_not(None)
        with self._store.read() as session:
            started, succeeded, exited, failed, pending = session.execute(counts).one()
            repaired = int(session.scalar(sa.select(sa.func.count()).where(known)) or 0)
            median: timedelta | None = None
            if repaired:
                # The middle one or two durations, picked by the database.
                middle = session.scalars(
                    sa.select(repairs.c.seconds)
                    .where(known)
                    .order_by(repairs.c.seconds)
                    .offset((repaired - 1) // 2)
                    .limit(2 if repaired % 2 == 0 else 1)
                ).all()
                values = [float(v) for v in middle]
                median = timedelta(seconds=sum(values) / len(values))
        return RelinkStats(
            started=int(started),
            succeeded=int(succeeded),
            exited=int(exited),
            failed=int(failed),
            pending=int(pending),
            median_repair=median,
            repaired=repaired,
        )

    def webhook_lag(self) -> timedelta:
        """How long the oldest verified webhook has waited to be applied (zero when none)."""
        with self._store.read() as session:
            oldest = _as_aware(
                session.scalar(
                    sa.select(sa.func.min(WebhookEvent.received_at)).where(
                        WebhookEvent.status == "pending"
                    )
                )
            )
        if oldest is None:
            return timedelta(0)
        return max(self._clock() - oldest, timedelta(0))

    # -- Connect funnel ----------------------------------------------------------------------

    def _scoped_sessions(self, filters: FunnelFilters) -> Any:
        """Sessions in the window with their institution: the link's, else the one picked."""
        last_pick = (
            sa.select(ConnectEvent.session_id, sa.func.max(ConnectEvent.seq).label("seq"))
            .where(ConnectEvent.name == "select_institution")
            .group_by(ConnectEvent.session_id)
            .subquery("last_pick")
        )
        picked = sa.orm.aliased(ConnectEvent, name="picked")
        picked_institution = picked.payload[("properties", "institution_id")].as_string()
        institution = sa.func.coalesce(Link.institution_id, picked_institution)
        stmt = (
            sa.select(
                ConnectSession.id,
                ConnectSession.mode,
                ConnectSession.started_at,
                ConnectSession.outcome,
                ConnectSession.exit_error_id,
                institution.label("institution_id"),
            )
            .outerjoin(Link, Link.link_id == ConnectSession.link_id)
            .outerjoin(last_pick, last_pick.c.session_id == ConnectSession.id)
            .outerjoin(
                picked,
                sa.and_(picked.session_id == last_pick.c.session_id, picked.seq == last_pick.c.seq),
            )
            .where(
                ConnectSession.started_at >= filters.since,
                ConnectSession.started_at < filters.until,
            )
        )
        if filters.mode:
            stmt = stmt.where(ConnectSession.mode == filters.mode)
        if filters.institution_id:
            stmt = stmt.where(institution == filters.institution_id)
        return stmt.subquery("scoped")

    def funnel_summary(self, filters: FunnelFilters) -> FunnelSummary:
        scoped = self._scoped_sessions(filters)
        ended = (
            sa.select(ConnectEvent.id)
            .where(ConnectEvent.session_id == scoped.c.id, ConnectEvent.type.in_(_TERMINAL_TYPES))
            .exists()
        )
        cutoff = self._clock() - ABANDONED_AFTER
        outcome = scoped.c.outcome
        stmt = sa.select(
            sa.func.count(),
            _count_if(outcome == "success"),
            _count_if(outcome == "exit"),
            _count_if(outcome == "failed"),
            _count_if(outcome == "pending"),
            _count_if(sa.and_(outcome == "pending", scoped.c.started_at < cutoff, ~ended)),
        ).select_from(scoped)
        with self._store.read() as session:
            started, completed, exited, failed, pending, abandoned = session.execute(stmt).one()
        return FunnelSummary(
            started=int(started),
            completed=int(completed),
            exited=int(exited),
            failed=int(failed),
            pending=int(pending),
            abandoned=int(abandoned),
        )

    def funnel_by_day(self, filters: FunnelFilters) -> list[DayCount]:
        scoped = self._scoped_sessions(filters)
        day = sa.func.date(scoped.c.started_at).label("day")
        stmt = (
            sa.select(day, sa.func.count(), _count_if(scoped.c.outcome == "success"))
            .group_by(day)
            .order_by(day)
        )
        with self._store.read() as session:
            return [
                DayCount(day=_as_date(d), started=int(s), completed=int(c))
                for d, s, c in session.execute(stmt).all()
            ]

    def screens(self, filters: FunnelFilters) -> list[ScreenStat]:
        """Per Connect screen: sessions that reached it, dropped there, and time spent on it."""
        scoped = self._scoped_sessions(filters)
        screen = _event_property("current_screen_name")
        shown = (
            sa.select(
                ConnectEvent.session_id,
                ConnectEvent.seq,
                screen.label("screen"),
                ConnectEvent.at,
                sa.func.lead(ConnectEvent.at)
                .over(partition_by=ConnectEvent.session_id, order_by=ConnectEvent.seq)
                .label("next_at"),
                sa.func.max(ConnectEvent.seq)
                .over(partition_by=ConnectEvent.session_id)
                .label("last_seq"),
                ConnectEvent.name,
            )
            .join(scoped, scoped.c.id == ConnectEvent.session_id)
            .subquery("all_events")
        )
        # The last change_screen of each session is where it ended up.
        screen_events = (
            sa.select(
                shown.c.session_id,
                shown.c.seq,
                shown.c.screen,
                shown.c.at,
                shown.c.next_at,
                sa.func.max(shown.c.seq)
                .over(partition_by=shown.c.session_id)
                .label("last_screen_seq"),
            )
            .where(shown.c.name == "change_screen", shown.c.screen.is_not(None))
            .subquery("screens")
        )
        seconds = _seconds_between(self._store.dialect, screen_events.c.next_at, screen_events.c.at)
        timed = sa.and_(screen_events.c.at.is_not(None), screen_events.c.next_at.is_not(None))
        outcome = (
            sa.select(scoped.c.outcome).where(scoped.c.id == screen_events.c.session_id)
        ).scalar_subquery()
        last_here = screen_events.c.seq == screen_events.c.last_screen_seq
        stmt = (
            sa.select(
                screen_events.c.screen,
                sa.func.count(sa.distinct(screen_events.c.session_id)),
                _count_if(sa.and_(last_here, outcome != "success")),
                sa.func.avg(sa.case((timed, seconds), else_=None)),
                _count_if(timed),
            )
            .group_by(screen_events.c.screen)
            .order_by(sa.func.count(sa.distinct(screen_events.c.session_id)).desc())
            .limit(100)
        )
        with self._store.read() as session:
            return [
                ScreenStat(
                    screen=str(name),
                    reached=int(reached),
                    dropped=int(dropped),
                    avg_seconds=float(avg) if avg is not None else None,
                    samples=int(samples),
                )
                for name, reached, dropped, avg, samples in session.execute(stmt).all()
            ]

    def exit_errors(self, filters: FunnelFilters, limit: int = 50) -> list[ExitErrorRow]:
        scoped = self._scoped_sessions(filters)
        n = sa.func.count().label("n")
        stmt = (
            sa.select(scoped.c.institution_id, Institution.name, scoped.c.exit_error_id, n)
            .outerjoin(Institution, Institution.institution_id == scoped.c.institution_id)
            .where(scoped.c.outcome == "exit", scoped.c.exit_error_id.is_not(None))
            .group_by(scoped.c.institution_id, Institution.name, scoped.c.exit_error_id)
            .order_by(n.desc(), scoped.c.exit_error_id)
            .limit(_bounded(limit))
        )
        with self._store.read() as session:
            return [
                ExitErrorRow(
                    institution_id=iid,
                    institution_name=name or iid or "(no bank picked)",
                    error_id=str(error),
                    sessions=int(count),
                )
                for iid, name, error, count in session.execute(stmt).all()
            ]

    def session_institutions(self, since: datetime) -> list[tuple[str, str]]:
        """(institution id, name) of banks seen in Connect sessions since ``since``, for filters."""
        scoped = self._scoped_sessions(
            FunnelFilters(since=since, until=self._clock() + timedelta(days=1))
        )
        stmt = (
            sa.select(
                scoped.c.institution_id, sa.func.coalesce(Institution.name, scoped.c.institution_id)
            )
            .outerjoin(Institution, Institution.institution_id == scoped.c.institution_id)
            .where(scoped.c.institution_id.is_not(None))
            .distinct()
            .order_by(sa.func.coalesce(Institution.name, scoped.c.institution_id))
            .limit(500)
        )
        with self._store.read() as session:
            return [(str(i), str(n)) for i, n in session.execute(stmt).all()]

    # -- customer timeline -------------------------------------------------------------------

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
        limit = _bounded(limit)
        their_links = sa.select(Link.link_id).where(Link.customer_id == customer_id)
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
                _event_property("current_screen_name"),
                _event_property("institution_name"),
                _event_property("error_id"),
                _event_property("search_term"),
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
            moment = _as_aware(at)
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

    # -- webhooks ----------------------------------------------------------------------------

    def deliveries(
        self,
        limit: int = 50,
        *,
        before_id: int | None = None,
        verdict: str | None = None,
        reason: str | None = None,
        link_id: str | None = None,
    ) -> list[DeliveryDetail]:
        """Newest first, paged by id (ids grow with arrival). Payloads are left out here."""
        stmt = sa.select(
            WebhookDelivery.id,
            WebhookDelivery.received_at,
            WebhookDelivery.verdict,
            WebhookDelivery.reason,
            WebhookDelivery.event,
            WebhookDelivery.link_id,
            WebhookDelivery.attempt,
            WebhookDelivery.delivery_token,
            WebhookDelivery.event_timestamp,
        )
        if before_id is not None:
            stmt = stmt.where(WebhookDelivery.id < before_id)
        if verdict:
            stmt = stmt.where(WebhookDelivery.verdict == verdict)
        if reason:
            stmt = stmt.where(WebhookDelivery.reason == reason)
        if link_id:
            stmt = stmt.where(WebhookDelivery.link_id == link_id)
        stmt = stmt.order_by(WebhookDelivery.id.desc()).limit(_bounded(limit))
        with self._store.read() as session:
            return [DeliveryDetail(*row, payload=None) for row in session.execute(stmt).all()]

    def delivery(self, delivery_id: int) -> DeliveryDetail | None:
        """One delivery; its payload only when its signature was verified."""
        with self._store.read() as session:
            d = session.get(WebhookDelivery, delivery_id)
            if d is None:
                return None
            verified = d.verdict == "accepted" and isinstance(d.payload, dict)
            return DeliveryDetail(
                id=d.id,
                received_at=d.received_at,
                verdict=d.verdict,
                reason=d.reason,
                event=d.event,
                link_id=d.link_id,
                attempt=d.attempt,
                delivery_token=d.delivery_token,
                event_timestamp=d.event_timestamp,
                payload=dict(d.payload or {}) if verified else None,
            )

    def delivery_counts(self) -> dict[str, int]:
        stmt = sa.select(WebhookDelivery.verdict, sa.func.count()).group_by(WebhookDelivery.verdict)
        with self._store.read() as session:
            return {str(v): int(n) for v, n in session.execute(stmt).all()}

    def delivery_reasons(self) -> list[str]:
        stmt = (
            sa.select(WebhookDelivery.reason)
            .where(WebhookDelivery.reason.is_not(None))
            .distinct()
            .order_by(WebhookDelivery.reason)
            .limit(100)
        )
        with self._store.read() as session:
            return [str(r) for r in session.scalars(stmt).all()]


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


# -- CSV export --------------------------------------------------------------------------------

_CSV_COLUMNS = (
    "link_id",
    "customer_id",
    "institution_id",
    "institution_name",
    "state",
    "error_code",
    "health",
    "health_reason",
    "created_at",
    "last_synced_at",
    "updated_at",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    # A bank name starting with = or + would run as a formula in a spreadsheet.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def links_csv(
    queries: LinkQueries,
    filters: LinkFilters | None = None,
    *,
    sort: LinkSort | str = LinkSort.UPDATED_DESC,
    cap: int = EXPORT_CAP,
    page_size: int = 1000,
) -> LinksExport:
    """The links matching ``filters`` as CSV, read page by page with the keyset cursor."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    written = 0
    after: str | None = None
    capped = False
    cap = max(1, int(cap))
    while True:
        page = queries.list_links(
            filters, limit=min(page_size, cap - written), after=after, sort=sort
        )
        for row in page.rows:
            writer.writerow([_cell(getattr(row, column)) for column in _CSV_COLUMNS])
        written += len(page.rows)
        if page.next_cursor is None:
            break
        if written >= cap:
            capped = True
            break
        after = page.next_cursor
    return LinksExport(text=buffer.getvalue(), rows=written, capped=capped)
