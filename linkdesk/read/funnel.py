"""The Connect funnel screen: sessions started and how they ended, per day, per Connect screen
(reached, dropped, time spent) and the errors people left with, for a window, a bank and a mode.

The counts by day, bank, outcome and exit error, and the screens, are sums over the rollups the
sessions' writers keep (``store.funnel_rollup``): a few rows per day, whatever the number of
sessions. Only the sessions of the last day or so are asked whether they were abandoned (pending
for 30 minutes with no end logged: a question of time passing), through the start-time index."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.store.aggregates import as_date, bounded
from linkdesk.store.engine import Store
from linkdesk.store.funnel_rollup import ENDING_TYPES
from linkdesk.store.models import (
    ConnectEvent,
    ConnectScreenDay,
    ConnectSession,
    ConnectSessionDay,
    Institution,
)
from linkdesk.store.shared import SharedResults

# A Connect session with no success or exit after this long was left by the person.
ABANDONED_AFTER = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class FunnelFilters:
    """Sessions started from ``since`` to ``until``: whole UTC days (the rollup's), so both
    are midnights."""

    since: datetime
    until: datetime
    institution_id: str | None = None
    mode: str | None = None  # link | relink

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if bound.utcoffset() != timedelta(0) or bound.time() != day_time.min:
                raise ValueError(f"funnel periods are whole UTC days; {bound} is not a midnight")

    @classmethod
    def days(
        cls, first: date, last: date, *, institution_id: str | None = None, mode: str | None = None
    ) -> FunnelFilters:
        """The sessions started on ``first`` through ``last`` (UTC days)."""
        return cls(
            since=datetime.combine(first, day_time.min, UTC),
            until=datetime.combine(last + timedelta(days=1), day_time.min, UTC),
            institution_id=institution_id,
            mode=mode,
        )


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
        seconds (an older view is served while one background thread counts it again)."""
        return self._shared.get(("view", filters), lambda: self._count_view(filters), max_age)

    def banks_seen(self, since: datetime, *, max_age: float) -> list[tuple[str, str]]:
        """:meth:`session_institutions`, shared like :meth:`view`."""
        return self._shared.get(("banks", since), lambda: self.session_institutions(since), max_age)

    def _count_view(self, filters: FunnelFilters) -> FunnelView:
        return FunnelView(
            summary=self.summary(filters),
            by_day=self.by_day(filters),
            screens=self.screens(filters),
            exit_errors=self.exit_errors(filters),
        )

    def _scoped_sessions(
        self,
        filters: FunnelFilters,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Any:
        """The window's sessions (or those started from ``since`` to ``until`` within it), one
        range of the start-time index (which holds the mode, outcome and bank filtered on)."""
        stmt = sa.select(
            ConnectSession.id,
            ConnectSession.started_at,
            ConnectSession.outcome,
        ).where(
            ConnectSession.started_at >= max(filters.since, since or filters.since),
            ConnectSession.started_at < min(filters.until, until or filters.until),
        )
        if filters.mode:
            stmt = stmt.where(ConnectSession.mode == filters.mode)
        if filters.institution_id:
            stmt = stmt.where(ConnectSession.institution_id == filters.institution_id)
        return stmt.subquery("scoped")

    def _days(
        self,
        filters: FunnelFilters,
        *columns: Any,
        rollup: type[ConnectSessionDay] | type[ConnectScreenDay] = ConnectSessionDay,
    ) -> Any:
        """``columns`` over the ``rollup``'s rows of the window, bank and mode."""
        stmt = sa.select(*columns).where(
            rollup.day >= filters.since.date(), rollup.day < filters.until.date()
        )
        if filters.mode:
            stmt = stmt.where(rollup.mode == filters.mode)
        if filters.institution_id:
            stmt = stmt.where(rollup.institution_id == filters.institution_id)
        return stmt

    def summary(self, filters: FunnelFilters) -> FunnelSummary:
        sessions = sa.func.coalesce(sa.func.sum(ConnectSessionDay.sessions), 0)
        counts = self._days(filters, ConnectSessionDay.outcome, sessions).group_by(
            ConnectSessionDay.outcome
        )
        with self._store.read() as session:
            by_outcome = {str(o): int(n) for o, n in session.execute(counts).all()}
            abandoned = self._abandoned(session, filters)
        return FunnelSummary(
            started=sum(by_outcome.values()),
            completed=by_outcome.get("success", 0),
            exited=by_outcome.get("exit", 0),
            failed=by_outcome.get("failed", 0),
            pending=by_outcome.get("pending", 0),
            abandoned=abandoned,
        )

    def _abandoned(self, session: Session, filters: FunnelFilters) -> int:
        """Sessions still pending long after they started, with no end logged: from the rollup
        for the days before the one :data:`ABANDONED_AFTER` ago (all their sessions are that
        old), and from that day's sessions after it (the pending ones asked whether an end is
        logged, a lookup each)."""
        cutoff = self._clock() - ABANDONED_AFTER
        recent_from = datetime.combine(cutoff.date(), day_time.min, UTC)
        older = self._days(filters, sa.func.coalesce(sa.func.sum(ConnectSessionDay.sessions), 0))
        older = older.where(
            ConnectSessionDay.outcome == "pending",
            ConnectSessionDay.end_logged.is_(False),
            ConnectSessionDay.day < recent_from.date(),
        )
        recent = self._scoped_sessions(filters, since=recent_from, until=cutoff)
        ended = (
            sa.select(ConnectEvent.id)
            .where(ConnectEvent.session_id == recent.c.id, ConnectEvent.type.in_(ENDING_TYPES))
            .exists()
        )
        recent_count = (
            sa.select(sa.func.count())
            .select_from(recent)
            .where(recent.c.outcome == "pending", ~ended)
        )
        return int(session.execute(older).scalar_one()) + int(
            session.execute(recent_count).scalar_one()
        )

    def by_day(self, filters: FunnelFilters) -> list[DayCount]:
        day = ConnectSessionDay.day
        sessions = ConnectSessionDay.sessions
        stmt = (
            self._days(
                filters,
                day,
                sa.func.sum(sessions),
                sa.func.sum(sa.case((ConnectSessionDay.outcome == "success", sessions), else_=0)),
            )
            .group_by(day)
            .having(sa.func.sum(sessions) != 0)
            .order_by(day)
        )
        with self._store.read() as session:
            return [
                DayCount(day=as_date(d), started=int(s), completed=int(c))
                for d, s, c in session.execute(stmt).all()
            ]

    def screens(self, filters: FunnelFilters) -> list[ScreenStat]:
        """Per Connect screen: sessions that reached it, dropped there, and time spent on it."""
        reached = sa.func.sum(ConnectScreenDay.reached)
        stmt = (
            self._days(
                filters,
                ConnectScreenDay.screen,
                reached,
                sa.func.sum(ConnectScreenDay.dropped),
                sa.func.sum(ConnectScreenDay.milliseconds),
                sa.func.sum(ConnectScreenDay.samples),
                rollup=ConnectScreenDay,
            )
            .group_by(ConnectScreenDay.screen)
            .having(reached > 0)
            .order_by(reached.desc(), ConnectScreenDay.screen)
            .limit(100)
        )
        with self._store.read() as session:
            return [
                ScreenStat(
                    screen=str(name),
                    reached=int(reached),
                    dropped=int(dropped),
                    avg_seconds=int(milliseconds) / int(samples) / 1000 if samples else None,
                    samples=int(samples),
                )
                for name, reached, dropped, milliseconds, samples in session.execute(stmt).all()
            ]

    def exit_errors(self, filters: FunnelFilters, limit: int = 50) -> list[ExitErrorRow]:
        institution_id = ConnectSessionDay.institution_id
        error_id = ConnectSessionDay.exit_error_id
        n = sa.func.sum(ConnectSessionDay.sessions).label("n")
        stmt = (
            self._days(filters, institution_id, Institution.name, error_id, n)
            .outerjoin(Institution, Institution.institution_id == institution_id)
            .where(ConnectSessionDay.outcome == "exit", error_id != "")
            .group_by(institution_id, Institution.name, error_id)
            .having(n > 0)
            .order_by(n.desc(), error_id)
            .limit(bounded(limit))
        )
        with self._store.read() as session:
            return [
                ExitErrorRow(
                    institution_id=iid or None,
                    institution_name=name or iid or "(no bank picked)",
                    error_id=str(error),
                    sessions=int(count),
                )
                for iid, name, error, count in session.execute(stmt).all()
            ]

    def session_institutions(self, since: datetime) -> list[tuple[str, str]]:
        """(institution id, name) of banks seen in Connect sessions since ``since``, for filters."""
        institution_id = ConnectSessionDay.institution_id
        name = sa.func.coalesce(Institution.name, institution_id)
        stmt = (
            sa.select(institution_id, name)
            .outerjoin(Institution, Institution.institution_id == institution_id)
            .where(ConnectSessionDay.day >= since.date(), institution_id != "")
            .group_by(institution_id, Institution.name)
            .having(sa.func.sum(ConnectSessionDay.sessions) > 0)
            .order_by(name)
            .limit(500)
        )
        with self._store.read() as session:
            return [(str(i), str(n)) for i, n in session.execute(stmt).all()]
