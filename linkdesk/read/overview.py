"""What the Overview shows, computed once per refresh for every session that has it open.

The totals are the shared health summary (:meth:`HealthTotals.health_summary`): staff actions and
applied webhooks move it at once, and links per state, per error code and per bank (the errors
by bank) are read from it rather than counted again. What happened recently comes from the
alert rollup (``alert_bank_buckets``: banks whose links broke in the last minutes, against
their own usual rate) and from the state changes of the last hour (found by id, so their cost
follows the changes, not the links). "Broke today" is an indexed read. None of it scans the
links table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from linkdesk.alerts.rollup import TREND_DAYS_KEPT, BankRate, StateChangeRollup
from linkdesk.health import RELINK_ERRORS
from linkdesk.read.overview_history import BrokeToday, OverviewHistory
from linkdesk.read.worker import WorkerProgress, WorkerStatus
from linkdesk.store.engine import Store
from linkdesk.store.health_totals import RECOUNT_MAX_AGE, HealthSummary, HealthTotals
from linkdesk.store.models import Institution
from linkdesk.store.shared import SharedResult
from linkdesk.validation import safe_hex_color

__all__ = [
    "BANKS_SHOWN",
    "BROKE_TODAY_LIMIT",
    "TROUBLE_WINDOW",
    "HourChanges",
    "InstitutionErrors",
    "OverviewReads",
    "OverviewSnapshot",
    "TrendPoint",
]

log = logging.getLogger(__name__)

# A bank is in trouble when, over the last TROUBLE_WINDOW, at least TROUBLE_MIN_LINKS more of its
# links broke than came back, and TROUBLE_FACTOR times its usual number over the TROUBLE_BASELINE
# before (the defaults of the bank error spike alert, so the tile and the alert agree).
TROUBLE_WINDOW = timedelta(minutes=15)
TROUBLE_BASELINE = timedelta(hours=24)
TROUBLE_FACTOR = 3.0
TROUBLE_MIN_LINKS = 5
BANKS_SHOWN = 5
CHANGE_PERIOD = timedelta(hours=1)
BROKE_TODAY_LIMIT = 100
ERRORS_BY_BANK_SHOWN = 10
# After links moved in this process, the Overview's activity (0.2 s at a million links) is read
# again at most this often: during an incident's stream of webhooks, about once per refresh.
ACTIVITY_RECOUNT_SPACING = 5.0


@dataclass(frozen=True, slots=True)
class HourChanges:
    """How many links entered (+) or left (-) each (state, error code) over the last hour."""

    moves: Mapping[tuple[str, str], int] = field(default_factory=dict)
    complete: bool = True  # False: more changes than were read (a very large outage)

    def state(self, state: str) -> int:
        return sum(n for (s, _), n in self.moves.items() if s == state)

    def error(self, code: str) -> int:
        return self.moves.get(("error", code), 0)

    def needs_relink(self) -> int:
        return sum(self.error(code) for code in RELINK_ERRORS)


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """How many links were in each condition at the end of ``day`` (UTC)."""

    day: date
    auth_expired: int
    needs_relink: int


@dataclass(frozen=True, slots=True)
class InstitutionErrors:
    """A bank with links in state ``error``: how many, of how many links it has."""

    institution_id: str
    name: str
    color: str | None
    errors: int
    links: int


@dataclass(frozen=True, slots=True)
class _Activity:
    """The part of the snapshot read from history, shared for ``max_age`` seconds."""

    broke_today: BrokeToday
    banks: list[BankRate]
    institutions: dict[str, tuple[str, str | None]]  # id → name, checked brand colour
    changes: HourChanges


@dataclass(frozen=True, slots=True)
class OverviewSnapshot:
    summary: HealthSummary
    worker: WorkerStatus
    broke_today: BrokeToday  # up to BROKE_TODAY_LIMIT rows
    # Banks whose links broke faster than they came back over TROUBLE_WINDOW, in trouble first.
    banks: list[BankRate]
    errors_by_bank: list[InstitutionErrors]
    changes: HourChanges
    webhook_lag: timedelta

    @property
    def by_state(self) -> dict[str, int]:
        states: dict[str, int] = {}
        for (_, state, _), n in self.summary.groups.items():
            states[state] = states.get(state, 0) + n
        return states

    @property
    def by_error(self) -> dict[str, int]:
        """Links in state ``error``, per error code."""
        errors: dict[str, int] = {}
        for (_, state, code), n in self.summary.groups.items():
            if state == "error" and code:
                errors[code] = errors.get(code, 0) + n
        return errors

    @staticmethod
    def in_trouble(bank: BankRate) -> bool:
        return bank.spiking(factor=TROUBLE_FACTOR, min_links=TROUBLE_MIN_LINKS)


class OverviewReads:
    def __init__(
        self,
        *,
        store: Store,
        totals: HealthTotals,
        worker: WorkerProgress,
        history: OverviewHistory,
        rollup: StateChangeRollup,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._totals, self._worker = totals, worker
        self._history = history
        self._rollup = rollup
        self._clock = clock
        self._activity = SharedResult(
            self._compute_activity, recount_spacing=ACTIVITY_RECOUNT_SPACING, monotonic=monotonic
        )
        # A link that broke here (an applied webhook) is in "Broke today" on the next refresh,
        # instead of one or two refreshes later when the shared activity has aged out.
        totals.when_links_move(self._activity.recount_soon)

    def snapshot(self, max_age: float) -> OverviewSnapshot:
        """Everything the Overview shows, no older than ``max_age`` seconds (the totals: as of
        the last staff action or applied webhook too)."""
        activity = self._activity.get(max_age)
        # Moved by every writer at once; counted again only every RECOUNT_MAX_AGE.
        summary = self._totals.health_summary(max_age=max(max_age, RECOUNT_MAX_AGE))
        return OverviewSnapshot(
            summary=summary,
            worker=self._worker.status(max_age=max_age),
            broke_today=activity.broke_today,
            banks=activity.banks,
            errors_by_bank=_errors_by_bank(summary, activity.institutions),
            changes=activity.changes,
            # Read on every refresh (one indexed minimum): the page sees at once when the
            # store cannot be read, instead of serving shared numbers until they age out.
            webhook_lag=self._history.webhook_lag(),
        )

    def start_counting(self) -> None:
        """Start counting what the landing page shows (the shared totals, the activity) in the
        background, so that the first person to open it after a start does not wait for it: at
        a million links "Broke today" alone reads 0.2 s."""
        self._totals.ready_health_summary(max_age=RECOUNT_MAX_AGE)
        self._activity.get_if_ready(RECOUNT_MAX_AGE)

    def _compute_activity(self) -> _Activity:
        try:
            # Usually nothing to fold in (the workers' alert runs keep the rollup current); with
            # alerts switched off, this keeps the tile current. Exactly once across processes.
            self._rollup.roll_up()
        except Exception:
            log.warning("the bank rollup could not be brought up to date", exc_info=True)
        rates = self._rollup.bank_rates(TROUBLE_WINDOW, TROUBLE_BASELINE)
        banks = sorted(
            (rate for rate in rates if rate.net > 0),
            key=lambda rate: (
                not OverviewSnapshot.in_trouble(rate),
                -(rate.net - rate.usual),
                rate.name,
            ),
        )[:BANKS_SHOWN]
        moves, complete = self._rollup.moves_since(self._clock() - CHANGE_PERIOD)
        return _Activity(
            broke_today=self._history.broke_today(BROKE_TODAY_LIMIT),
            banks=banks,
            institutions=self._institutions(),
            changes=HourChanges(dict(moves), complete),
        )

    def trend(self, days: int) -> list[TrendPoint]:
        """Links in ``auth_expired`` and needing a relink at the end of each of the last
        ``days`` days (today: now). Today's numbers are the shared totals; each day before is
        the next day's less the moves of the next day, which the rollup keeps per day: a few
        rows, however long the history."""
        days = max(1, min(int(days), TREND_DAYS_KEPT - 1))
        try:
            self._rollup.roll_up()  # nothing to do when the alert runs or a snapshot just did
        except Exception:
            log.warning("the trend rollup could not be brought up to date", exc_info=True)
        summary = self._totals.health_summary(max_age=RECOUNT_MAX_AGE)
        expired = relink = 0
        for (_, state, code), n in summary.groups.items():
            if state == "error":
                expired += n if code == "auth_expired" else 0
                relink += n if code in RELINK_ERRORS else 0
        today = self._clock().date()
        moves = self._rollup.day_moves(today - timedelta(days=days - 2))
        points: list[TrendPoint] = []
        for back in range(days):
            day = today - timedelta(days=back)
            # A history that disagrees with the links (an import, a restore) never draws a
            # negative count.
            points.append(TrendPoint(day, max(expired, 0), max(relink, 0)))
            moved = moves.get(day)
            if moved is not None:
                expired -= moved.auth_expired
                relink -= moved.needs_relink
        return points[::-1]

    def _institutions(self) -> dict[str, tuple[str, str | None]]:
        stmt = sa.select(Institution.institution_id, Institution.name, Institution.color)
        with self._store.read() as session:
            rows = session.execute(stmt).all()
        return {iid: (name, safe_hex_color(color)) for iid, name, color in rows}


def _errors_by_bank(
    summary: HealthSummary, institutions: Mapping[str, tuple[str, str | None]]
) -> list[InstitutionErrors]:
    """The banks with most links in state ``error``, worst first, from the shared totals."""
    rows = []
    for bank, counted in summary.banks.items():
        if counted.in_error:
            name, color = institutions.get(bank, (bank, None))
            rows.append(InstitutionErrors(bank, name, color, counted.in_error, counted.links))
    rows.sort(key=lambda row: (-row.errors, row.name, row.institution_id))
    return rows[:ERRORS_BY_BANK_SHOWN]
