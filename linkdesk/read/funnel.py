"""The Connect funnel screen: sessions started and how they ended, per day, per Connect screen
(reached, dropped, time spent) and the errors people left with, for a window, a bank and a mode."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from linkdesk.store.aggregates import (
    as_date,
    bounded,
    count_if,
    event_property,
    outcome_counts,
    seconds_between,
)
from linkdesk.store.engine import Store
from linkdesk.store.models import ConnectEvent, ConnectSession, Institution, Link
from linkdesk.store.shared import SharedResults

# A Connect session with no success or exit after this long was left by the person.
ABANDONED_AFTER = timedelta(minutes=30)
_TERMINAL_TYPES = ("success", "relink_success", "exit")


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
class FunnelView:
    """Everything the funnel page shows for one choice of filters."""

    summary: FunnelSummary
    by_day: list[DayCount]
    screens: list[ScreenStat]
    exit_errors: list[ExitErrorRow]


# Choices of filters whose results are kept for the sessions that ask again (the page's filters
# are whole days, a bank and a mode: a handful are in use at once).
_VIEWS_KEPT = 32


class FunnelReads:
    """The funnel's aggregates, counted in SQL over the window's sessions."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._shared = SharedResults(kept=_VIEWS_KEPT, monotonic=monotonic)

    def view(self, filters: FunnelFilters, *, max_age: float) -> FunnelView:
        """:meth:`summary`, :meth:`by_day`, :meth:`screens` and :meth:`exit_errors` together,
        counted once for every session that asks for the same filters within ``max_age``
        seconds (an older view is served while one background thread counts it again). Each
        of them reads every session of the period: seconds at a million links, which a rerun
        (a sort, a click) must not pay again."""
        return self._shared.get(("view", filters), lambda: self._count_view(filters), max_age)

    def banks_seen(
        self, since: datetime, *, max_age: float, wait: float = 0.0
    ) -> list[tuple[str, str]] | None:
        """:meth:`session_institutions`, shared like :meth:`view`; None while they are first
        gathered (in the background, after ``wait`` seconds): at a million links that reads
        every session of the period and its link, which a page's first view must not wait for."""
        return self._shared.get_if_ready(
            ("banks", since), lambda: self.session_institutions(since), max_age, wait=wait
        )

    def _count_view(self, filters: FunnelFilters) -> FunnelView:
        return FunnelView(
            summary=self.summary(filters),
            by_day=self.by_day(filters),
            screens=self.screens(filters),
            exit_errors=self.exit_errors(filters),
        )

    def _scoped_sessions(self, filters: FunnelFilters, *, with_bank: bool = True) -> Any:
        """Sessions in the window with their institution: the link's, else the one picked.

        ``with_bank=False``: without it, unless the filters name a bank. Working it out joins
        every session of the window to its link and its events (seconds at a million sessions);
        the counts that do not show banks are an index range over the start time without it.
        """
        if not with_bank and not filters.institution_id:
            plain = sa.select(
                ConnectSession.id,
                ConnectSession.mode,
                ConnectSession.started_at,
                ConnectSession.outcome,
                ConnectSession.exit_error_id,
            ).where(
                ConnectSession.started_at >= filters.since,
                ConnectSession.started_at < filters.until,
            )
            if filters.mode:
                plain = plain.where(ConnectSession.mode == filters.mode)
            return plain.subquery("scoped")
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

    def summary(self, filters: FunnelFilters) -> FunnelSummary:
        scoped = self._scoped_sessions(filters, with_bank=False)
        outcome = scoped.c.outcome
        counts = sa.select(*outcome_counts(outcome)).select_from(scoped)
        # Abandoned: still pending long after it started, and no end ever logged. Asked of the
        # pending sessions alone (the test for a logged end is a lookup per session).
        ended = (
            sa.select(ConnectEvent.id)
            .where(ConnectEvent.session_id == scoped.c.id, ConnectEvent.type.in_(_TERMINAL_TYPES))
            .exists()
        )
        abandoned_sessions = (
            sa.select(sa.func.count())
            .select_from(scoped)
            .where(
                outcome == "pending",
                scoped.c.started_at < self._clock() - ABANDONED_AFTER,
                ~ended,
            )
        )
        with self._store.read() as session:
            started, completed, exited, failed, pending = session.execute(counts).one()
            abandoned = session.execute(abandoned_sessions).scalar_one()
        return FunnelSummary(
            started=int(started),
            completed=int(completed),
            exited=int(exited),
            failed=int(failed),
            pending=int(pending),
            abandoned=int(abandoned),
        )

    def by_day(self, filters: FunnelFilters) -> list[DayCount]:
        scoped = self._scoped_sessions(filters, with_bank=False)
        day = sa.func.date(scoped.c.started_at).label("day")
        stmt = (
            sa.select(day, sa.func.count(), count_if(scoped.c.outcome == "success"))
            .group_by(day)
            .order_by(day)
        )
        with self._store.read() as session:
            return [
                DayCount(day=as_date(d), started=int(s), completed=int(c))
                for d, s, c in session.execute(stmt).all()
            ]

    def screens(self, filters: FunnelFilters) -> list[ScreenStat]:
        """Per Connect screen: sessions that reached it, dropped there, and time spent on it."""
        scoped = self._scoped_sessions(filters)
        screen = event_property("current_screen_name")
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
        seconds = seconds_between(self._store.dialect, screen_events.c.next_at, screen_events.c.at)
        timed = sa.and_(screen_events.c.at.is_not(None), screen_events.c.next_at.is_not(None))
        outcome = (
            sa.select(scoped.c.outcome).where(scoped.c.id == screen_events.c.session_id)
        ).scalar_subquery()
        last_here = screen_events.c.seq == screen_events.c.last_screen_seq
        stmt = (
            sa.select(
                screen_events.c.screen,
                sa.func.count(sa.distinct(screen_events.c.session_id)),
                count_if(sa.and_(last_here, outcome != "success")),
                sa.func.avg(sa.case((timed, seconds), else_=None)),
                count_if(timed),
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
            .limit(bounded(limit))
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
