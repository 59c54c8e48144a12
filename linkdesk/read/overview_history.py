"""The Overview's reads over history: the links that broke today, the relinks of the last days
and how far behind the webhook queue is. Counted in SQL, returned small.

Every method here answers one screen's question with a bounded result: GROUP BY for counts, a
LIMIT for lists (keyset cursors where a list is paged), so no page ever pulls a table into memory
to count it. Time comes from the injected clock, so tests can pin "now".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

import sqlalchemy as sa

from linkdesk.health import (
    RELINK_ERRORS,
    STUCK_STATES,
    Health,
    HealthThresholds,
    health_condition_at,
)
from linkdesk.store.aggregates import as_aware, bounded, outcome_counts, seconds_between
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    ConnectSession,
    Institution,
    Link,
    LinkStateChange,
    WebhookEvent,
)
from linkdesk.store.plans import unindexed

__all__ = [
    "BrokeToday",
    "BrokenLink",
    "OverviewHistory",
    "RelinkStats",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- result rows -------------------------------------------------------------------------------


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


class OverviewHistory:
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
        limit = bounded(limit)
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
            # The bank joined by a column no index serves: SQLite's statistics see a state as a
            # fifth of the links and would otherwise read every bank's links through the bank
            # index (2.7 s at a million) instead of the few in Connect states through theirs.
            .join(Institution, Institution.institution_id == unindexed(Link.institution_id))
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
                moment = as_aware(at)
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
                moment = as_aware(since_at)
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

    def relink_stats(self, days: int = 30) -> RelinkStats:
        """Relink sessions of the last ``days``: outcomes, and the median time to repair."""
        since = self._clock() - timedelta(days=max(1, int(days)))
        in_window = sa.and_(ConnectSession.mode == "relink", ConnectSession.started_at >= since)
        outcome = ConnectSession.outcome
        counts = sa.select(*outcome_counts(outcome)).where(in_window)
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
                seconds_between(self._store.dialect, ConnectSession.finished_at, broke_at).label(
                    "seconds"
                )
            )
            # The outcome hidden from its index, so the relinks are found through the mode's:
            # the outcome index would read every successful session of the period.
            .where(
                in_window, unindexed(outcome) == "success", ConnectSession.finished_at.is_not(None)
            )
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
            oldest = as_aware(
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
