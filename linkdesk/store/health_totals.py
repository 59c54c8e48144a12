"""The shared totals: how many links have each verdict, state and error code, and each bank.

Counted from the rollup the links' writers keep (``link_counts``: links per state, error code
and bank, moved in the transaction of each change) plus the verdicts the clock decides (stale,
stuck), in the background for every session of the process, and remembered in the store for the
next process (see linkdesk.store.shared). Between counts, a write of this process that may change
a link's group goes through :meth:`HealthTotals.writing`, which reads the link's group before
and after inside the write transaction and moves the shared totals at once: the numbers a staff
action or a webhook changed are right on the next run of any page, and a count follows within a
second for what other processes wrote meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.health import (
    STUCK_STATES,
    Health,
    HealthThresholds,
    assess_link,
    health_case,
    health_condition_at,
    link_health,
)
from linkdesk.store.engine import Store
from linkdesk.store.models import Link, LinkCount
from linkdesk.store.repository import delete_named_state, get_named_state, put_named_state
from linkdesk.store.shared import SharedResult

__all__ = [
    "RECOUNT_MAX_AGE",
    "SUMMARY_RECALL_MAX_AGE",
    "SUMMARY_STATE_NAME",
    "BankLinks",
    "HealthSummary",
    "HealthTotals",
    "forget_stored_summary",
]

log = logging.getLogger(__name__)

# A process that has just started shows the last summary any process counted, when it is at
# most this old, while it counts again (see linkdesk.store.shared); an older one is not shown.
SUMMARY_RECALL_MAX_AGE = 3600.0
SUMMARY_STATE_NAME = "health_summary"
# How old the shared totals may be before a page's run asks for them to be counted again (in the
# background). Writers move them at once; a count catches what no writer of this process reports:
# verdicts the clock changes (stale, stuck) and the writes of other processes (a worker process,
# other replicas).
RECOUNT_MAX_AGE = 10.0


@dataclass(frozen=True, slots=True)
class BankLinks:
    links: int
    in_error: int  # in state ``error``, whatever the code


# Where a link counts: its verdict, state and error code (or ""), and its bank.
_Place = tuple[Health, str, str, str]


@dataclass(frozen=True, slots=True)
class HealthSummary:
    """How many links have each verdict and each error code, and each bank, at ``computed_at``."""

    counts: dict[Health, int]
    errors: dict[str, int]  # links per error code (any state)
    computed_at: datetime
    # Links per (verdict, state, error code or ""): what the Links page plans its reads with.
    groups: dict[tuple[Health, str, str], int] = field(default_factory=dict)
    # Links per bank (institution id → links, links in state error): the Overview's errors by
    # bank and the bank gauges, without a count of the links table each time they are shown.
    banks: dict[str, BankLinks] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def from_groups(
        cls,
        groups: dict[tuple[Health, str, str], int],
        computed_at: datetime,
        banks: dict[str, BankLinks] | None = None,
    ) -> HealthSummary:
        counts = dict.fromkeys(Health, 0)
        errors: dict[str, int] = {}
        for (health, _state, error_code), n in groups.items():
            counts[health] += n
            if error_code:
                errors[error_code] = errors.get(error_code, 0) + n
        return cls(
            counts=counts,
            errors=errors,
            computed_at=computed_at,
            groups=dict(groups),
            banks=dict(banks or {}),
        )

    def to_record(self, thresholds: HealthThresholds) -> dict[str, Any]:
        """As JSON, with the thresholds that decided the verdicts (see :meth:`from_record`)."""
        return {
            "computed_at": self.computed_at.isoformat(),
            "thresholds": _thresholds_record(thresholds),
            "groups": [[h.value, state, error, n] for (h, state, error), n in self.groups.items()],
            "banks": [[bank, n.links, n.in_error] for bank, n in self.banks.items()],
        }

    @classmethod
    def from_record(cls, record: Any, thresholds: HealthThresholds) -> HealthSummary | None:
        """The summary of :meth:`to_record`; None when it was counted with other thresholds
        (another release's settings) or is not one (an older format, a hand-edited row)."""
        try:
            if record["thresholds"] != _thresholds_record(thresholds):
                return None
            computed_at = datetime.fromisoformat(record["computed_at"])
            if computed_at.tzinfo is None:
                return None
            groups: dict[tuple[Health, str, str], int] = {}
            for verdict, state, error, n in record["groups"]:
                if not (isinstance(state, str) and isinstance(error, str)):
                    return None
                if not _count(n):
                    return None
                groups[(Health(verdict), state, error)] = n
            banks: dict[str, BankLinks] = {}
            for bank, links, in_error in record["banks"]:
                numbers = (links, in_error)
                if not isinstance(bank, str) or not all(_count(n) for n in numbers):
                    return None
                banks[bank] = BankLinks(links, in_error)
        except (KeyError, TypeError, ValueError):
            return None
        return cls.from_groups(groups, computed_at, banks)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _thresholds_record(thresholds: HealthThresholds) -> list[float]:
    return [thresholds.stuck_after.total_seconds(), thresholds.stale_after.total_seconds()]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def forget_stored_summary(store: Store) -> None:
    """Drop the stored health summary, so that the next process to start counts before it shows
    one: after a bulk load or a restore, the stored counts describe a store that is gone."""
    with store.write() as session:
        delete_named_state(session, SUMMARY_STATE_NAME)


class _StoredSummary:
    """The last health summary any process counted: one ``worker_state`` row."""

    def __init__(
        self, store: Store, thresholds: HealthThresholds, wall: Callable[[], float] = time.time
    ) -> None:
        # ``wall``: seconds since the epoch, the one clock processes share for the row's age.
        self._store, self._thresholds, self._wall = store, thresholds, wall

    def load(self) -> tuple[HealthSummary, float] | None:
        with self._store.read() as session:
            record = get_named_state(session, SUMMARY_STATE_NAME)
        summary = HealthSummary.from_record(record, self._thresholds) if record else None
        saved_at = record.get("saved_at") if record else None
        if summary is None or not isinstance(saved_at, int | float) or isinstance(saved_at, bool):
            return None
        # Its age in real time: the verdict clock (computed_at) may be set apart, as in tests.
        return summary, self._wall() - saved_at

    def save(self, value: HealthSummary) -> None:
        record = value.to_record(self._thresholds) | {"saved_at": self._wall()}
        with self._store.write() as session:
            put_named_state(session, SUMMARY_STATE_NAME, record, _utcnow())


class HealthTotals:
    """The shared health summary of a process, and the write transaction that keeps it right.

    ``clock`` and ``thresholds`` decide the time-dependent verdicts (stuck, stale); ``monotonic``
    and ``wall`` measure how old a shared count is (in this process, and across processes
    through the store); tests step them instead of sleeping.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        thresholds: HealthThresholds | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock or _utcnow
        self._thresholds = thresholds or HealthThresholds()
        self._shared_summary = SharedResult(
            self._compute_health_summary,
            remembered=_StoredSummary(store, self._thresholds, wall),
            recall_max_age=SUMMARY_RECALL_MAX_AGE,
            monotonic=monotonic,
        )
        self._move_listeners: list[Callable[[], None]] = []

    @property
    def thresholds(self) -> HealthThresholds:
        return self._thresholds

    def counts_by_health(self, *, max_age: float = 0.0) -> dict[Health, int]:
        """Links per verdict; see :meth:`health_summary` for ``max_age``."""
        return dict(self.health_summary(max_age=max_age).counts)

    def health_summary(self, *, max_age: float = 0.0) -> HealthSummary:
        """Links per verdict and per error code, in one pass over the table.

        ``max_age`` (seconds) accepts a summary that this process computed that recently for
        any caller; a page passes it so that every session shares one count of a large table.
        The default, 0, counts now.
        """
        return self._shared_summary.get(max_age)

    def ready_health_summary(self, *, max_age: float, wait: float = 0.0) -> HealthSummary | None:
        """:meth:`health_summary` without waiting for a count (beyond ``wait`` seconds): None
        until this process has one, or a stored one (see linkdesk.store.shared), while one
        background thread counts. A page draws its rows meanwhile instead of waiting seconds for
        the totals of a large store on its first run."""
        return self._shared_summary.get_if_ready(max_age, wait=wait)

    def when_links_move(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each write of this process that moved a link between the
        totals' groups (its state, error or bank changed; a link was added), through
        :meth:`writing` or :meth:`links_moved`: for other shared results drawn from the links,
        which then count again without waiting to age out."""
        self._move_listeners.append(listener)

    def _place_of(self, link: Link | None) -> _Place | None:
        if link is None:
            return None
        verdict = assess_link(link, now=self._clock(), thresholds=self._thresholds)
        return (verdict.health, link.state, link.error_code or "", link.institution_id)

    def _count_moved(self, before: _Place | None, after: _Place | None) -> None:
        """One link moved from ``before`` to ``after`` (None: it was not stored, or is gone):
        the shared totals (this process's and the stored ones) change at once, so the numbers a
        staff action changed are right on the next run of any page. The totals moved may lack
        what other processes (the worker, another replica) wrote since they were counted, so a
        count from the rollup follows in the background within a second (``RECOUNT_SPACING``);
        without it, a link repaired here after the worker broke another would show its kind as
        gone until the next count, ``RECOUNT_MAX_AGE`` later."""
        if before == after:
            return

        def move(summary: HealthSummary) -> HealthSummary:
            groups = dict(summary.groups)
            banks = dict(summary.banks)
            for place, step in ((before, -1), (after, 1)):
                if place is None:
                    continue
                group, bank = place[:3], place[3]
                groups[group] = max(groups.get(group, 0) + step, 0)
                if not groups[group]:
                    del groups[group]
                counted = banks.get(bank, BankLinks(0, 0))
                in_error = int(place[1] == "error")
                banks[bank] = BankLinks(
                    max(counted.links + step, 0), max(counted.in_error + step * in_error, 0)
                )
                if not banks[bank].links:
                    del banks[bank]
            return HealthSummary.from_groups(groups, summary.computed_at, banks)

        self._shared_summary.adjust(move, recount=True)
        self._tell_listeners()

    def links_moved(self) -> None:
        """Links moved in a write of this process that did not go through :meth:`writing` (the
        sync worker's reads, discovery: where moving and storing the totals link by link would
        cost a write each): the totals are counted again soon, from the rollup that write kept,
        and so is what listens (see :meth:`when_links_move`)."""
        self._shared_summary.recount_soon()
        self._tell_listeners()

    def _tell_listeners(self) -> None:
        for listener in self._move_listeners:
            try:
                listener()
            except Exception:  # the write has committed; only a shared result lags behind
                log.warning("a listener to moved links failed", exc_info=True)

    @contextmanager
    def writing(self, link_id: str) -> Iterator[Session]:
        """A write transaction that may move ``link_id`` between the shared totals' groups (a
        staff action, an applied webhook, a Connect completion). The link's group is read inside
        the transaction before and after the caller's writes, and the totals follow once it has
        committed (see :meth:`_count_moved`).

        Two writers to one link take turns (SQLite's ``BEGIN IMMEDIATE``; a transaction-scoped
        advisory lock on PostgreSQL, which also covers a link not stored yet), so whichever comes
        second sees the first one's result as its "before": a new link that Connect's Done and
        its webhook both store is counted once, whichever lands first and however they overlap.
        """
        with self._store.write() as session:
            if session.get_bind().dialect.name == "postgresql":
                key = sa.func.hashtextextended(link_id, 0)
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            before = self._place_of(session.get(Link, link_id, with_for_update=True))
            yield session
            session.flush()
            # Re-read: the caller may have changed the row with a statement the ORM never saw.
            after = self._place_of(session.get(Link, link_id, populate_existing=True))
        self._count_moved(before, after)

    def _compute_health_summary(self) -> HealthSummary:
        """Links per state, error code and bank, from the rollup the links' writers keep (a few
        thousand rows); then the verdicts the clock decides, for the few states that have them:
        how many connected links are stale (an index range over the freshness time) and which
        links waiting in Connect are stuck (a few thousand rows at most). Every other verdict
        follows from state and error code."""
        now = self._clock()
        links = sa.func.sum(LinkCount.links)
        place = (LinkCount.state, LinkCount.error_code, LinkCount.institution_id)
        by_place = sa.select(*place, links).group_by(*place).having(links != 0)
        groups: dict[tuple[Health, str, str], int] = {}
        banks: dict[str, BankLinks] = {}
        connected: dict[str, int] = {}
        with self._store.read() as session:
            for state, error_code, bank, n in session.execute(by_place).all():
                counted = banks.get(bank, BankLinks(0, 0))
                in_error = int(n) if state == "error" else 0
                banks[bank] = BankLinks(counted.links + int(n), counted.in_error + in_error)
                if state == "connected":
                    connected[error_code or ""] = connected.get(error_code or "", 0) + int(n)
                elif state not in STUCK_STATES:
                    group = (link_health(state, error_code), state, error_code or "")
                    groups[group] = groups.get(group, 0) + int(n)
            for group, n in self._clock_made(session, now, connected).items():
                groups[group] = groups.get(group, 0) + n
        return HealthSummary.from_groups({g: n for g, n in groups.items() if n}, now, banks)

    def _clock_made(
        self, session: Session, now: datetime, connected: dict[str, int]
    ) -> dict[tuple[Health, str, str], int]:
        """The verdict groups of connected links and of links waiting in Connect at ``now``."""
        groups: dict[tuple[Health, str, str], int] = {}
        verdict = health_case(now, self._thresholds)
        if set(connected) <= {""}:
            # The usual case (a connected link has no error code): one count of the stale.
            stale_links = sa.select(sa.func.count()).select_from(Link)
            stale_links = stale_links.where(
                health_condition_at(Health.STALE, now, self._thresholds)
            )
            stale = int(session.execute(stale_links).scalar_one()) if connected else 0
            groups[(Health.STALE, "connected", "")] = stale
            # Two statements: on PostgreSQL each sees its own moment, and a link that moved in
            # between is set right by the next count; never below zero meanwhile.
            groups[(Health.HEALTHY, "connected", "")] = max(connected.get("", 0) - stale, 0)
            waiting = [STUCK_STATES]
        else:
            waiting = [STUCK_STATES, frozenset({"connected"})]
        for states in waiting:
            stmt = (
                sa.select(verdict, Link.state, Link.error_code, sa.func.count())
                .where(Link.state.in_(sorted(states)))
                .group_by(verdict, Link.state, Link.error_code)
            )
            for value, state, error_code, n in session.execute(stmt).all():
                groups[(Health(value), state, error_code or "")] = int(n)
        return groups
