"""The state-change rollup: what the links did lately, kept so that nothing scans them.

:meth:`StateChangeRollup.roll_up` folds the state changes recorded since its last call (by id, a
primary-key range) into ``alert_bank_buckets`` — per bank and five-minute bucket, links that
entered an error state and links that came back — and moves a running count of the links
needing relink. Its cost follows the changes, not the number of links, and each change is
folded exactly once whichever process (the alert evaluator, the Overview) gets there first.
The same changes are added to their day in ``state_change_days`` (how the links in
``auth_expired`` and needing a relink moved that day), which the Overview's trend reads.
The error-spike rule and the Overview's "banks in trouble" read the buckets; the needs-relink
rule reads the running count; the Overview's "last hour" reads the recent changes themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.health import RELINK_ERRORS
from linkdesk.store.aggregates import as_date
from linkdesk.store.counters import add_to_counters
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    AlertBankBucket,
    AlertState,
    Institution,
    Link,
    LinkStateChange,
    StateChangeDay,
)
from linkdesk.store.repository import insert_if_absent

__all__ = [
    "BUCKET",
    "TREND_DAYS_KEPT",
    "BankRate",
    "DayMoves",
    "StateChangeRollup",
    "bucket_of",
    "forget_rollup",
]

BUCKET = timedelta(minutes=5)
ROLLUP_STATE = "spike_rollup"
RELINK_COUNT_STATE = "needs_relink_count"
# The running count of links needing relink is checked against a full (indexed) count this often,
# which also heals any drift (links removed without a recorded change).
RELINK_RECOUNT_EVERY = timedelta(hours=1)
# Buckets are kept this long: the longest baseline (a week) plus the longest window.
ROLLUP_HORIZON = timedelta(days=7, hours=5)
# State changes rolled up per transaction, and transactions per evaluation: a first start on a
# large history catches up over a few evaluations instead of one long write.
ROLLUP_CHUNK = 5000
ROLLUP_CHUNKS_PER_RUN = 4
# Days of moves kept for the Overview's trend (its longest period is 90 days), and the marker of
# the one-time fill of those days from the history older than the rollup's position.
TREND_DAYS_KEPT = 92
TREND_FILLED_STATE = "trend_days_filled"
# State changes read to tell how the links moved over a recent period (an hour of a large outage
# fits; beyond it the moves are marked incomplete rather than read without end).
MOVES_READ_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class BankRate:
    """One bank's links that entered an error state (``broke``) and came back (``recovered``)
    in a window, and its usual number of breaks per window of that length."""

    institution_id: str
    name: str
    color: str | None
    broke: int
    recovered: int
    usual: float

    @property
    def net(self) -> int:
        return self.broke - self.recovered

    def spiking(self, *, factor: float, min_links: int) -> bool:
        """Breaking faster than its own baseline: at least ``min_links`` net, and ``factor``
        times its usual number."""
        return self.net >= min_links and self.net >= factor * self.usual


def bucket_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0, minute=at.minute - at.minute % 5)


def _needs_relink(state: str | None, error: str | None) -> bool:
    return state == "error" and error in RELINK_ERRORS


def _relink_delta(rows: Any) -> int:
    """How the number of links needing relink moved over these state changes."""
    return sum(
        int(_needs_relink(row.to_state, row.to_error))
        - int(_needs_relink(row.from_state, row.from_error))
        for row in rows
    )


@dataclass(frozen=True, slots=True)
class DayMoves:
    """How many links entered less how many left ``auth_expired`` and the relink errors."""

    auth_expired: int = 0
    needs_relink: int = 0


def _auth_expired(state: str | None, error: str | None) -> bool:
    return state == "error" and error == "auth_expired"


def _day_moves(rows: Any, since: datetime) -> dict[date, DayMoves]:
    """The changes at or after ``since``, added up per UTC day (days with no move left out)."""
    days: dict[date, DayMoves] = {}
    for row in rows:
        if row.at is None or row.at < since:
            continue
        expired = int(_auth_expired(row.to_state, row.to_error)) - int(
            _auth_expired(row.from_state, row.from_error)
        )
        relink = int(_needs_relink(row.to_state, row.to_error)) - int(
            _needs_relink(row.from_state, row.from_error)
        )
        if expired or relink:
            known = days.get(row.at.date(), DayMoves())
            days[row.at.date()] = DayMoves(
                known.auth_expired + expired, known.needs_relink + relink
            )
    return days


def _first_day_kept(now: datetime) -> datetime:
    return datetime.combine(now.date() - timedelta(days=TREND_DAYS_KEPT), time.min, now.tzinfo)


def _add_days(session: Session, days: dict[date, DayMoves]) -> None:
    for day, moves in sorted(days.items()):
        amounts = {"auth_expired": moves.auth_expired, "needs_relink": moves.needs_relink}
        add_to_counters(session, StateChangeDay, {"day": day}, amounts)


def _upsert_bucket(
    session: Session, institution_id: str, start: datetime, broke: int, back: int
) -> None:
    key = {"institution_id": institution_id, "bucket_start": start}
    add_to_counters(session, AlertBankBucket, key, {"broke": broke, "recovered": back})


def forget_rollup(session: Session) -> None:
    """Drop what the rollup kept, and its position, so that its next run starts afresh from
    the history then in the store (after a rebuilt demo world: the old one's moves would
    otherwise be counted with the new one's)."""
    session.execute(sa.delete(AlertBankBucket))
    session.execute(sa.delete(StateChangeDay))
    kept = [ROLLUP_STATE, RELINK_COUNT_STATE, TREND_FILLED_STATE]
    session.execute(sa.delete(AlertState).where(AlertState.name.in_(kept)))


class StateChangeRollup:
    def __init__(self, store: Store, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    def roll_up(self) -> int:
        """Fold new state changes into the per-bank buckets and the days; returns how many
        were read."""
        total = 0
        for _ in range(ROLLUP_CHUNKS_PER_RUN):
            read = self._roll_up_chunk()
            total += read
            if read < ROLLUP_CHUNK:
                break
        self._fill_days()
        return total

    def _fill_days(self) -> None:
        """Once per store: the days of the trend's period from the changes up to the rollup's
        position (one aggregate over that range, in the database). Until then the chunks keep
        no days; from then on they add theirs."""
        with self._store.read() as session:
            if session.get(AlertState, TREND_FILLED_STATE) is not None:
                return
        now = self._clock()
        with self._store.write() as session:
            # The rollup's row, locked: no chunk can move the position until this commits, so
            # the changes are split between this fill (up to it) and the chunks (after it).
            position = session.scalar(
                sa.select(AlertState.number)
                .where(AlertState.name == ROLLUP_STATE)
                .with_for_update()
            )
            if position is None:
                return  # no rollup yet: its first chunk sets the position, the next run fills
            marker = {
                "name": TREND_FILLED_STATE,
                "number": int(position),
                "position": 0,
                "value": {},
                "updated_at": now,
            }
            if not insert_if_absent(session, AlertState, marker, ["name"]):
                return  # another process filled them
            since = _first_day_kept(now)
            first = self._first_id_since(session, since)
            day = sa.func.date(LinkStateChange.at)
            relink_errors = sorted(RELINK_ERRORS)

            def entered_less_left(to_match: Any, from_match: Any) -> Any:
                return sa.func.sum(
                    sa.case((to_match, 1), else_=0) - sa.case((from_match, 1), else_=0)
                )

            in_error = LinkStateChange.to_state == "error"
            was_error = LinkStateChange.from_state == "error"
            stmt = (
                sa.select(
                    day,
                    entered_less_left(
                        sa.and_(in_error, LinkStateChange.to_error == "auth_expired"),
                        sa.and_(was_error, LinkStateChange.from_error == "auth_expired"),
                    ),
                    entered_less_left(
                        sa.and_(in_error, LinkStateChange.to_error.in_(relink_errors)),
                        sa.and_(was_error, LinkStateChange.from_error.in_(relink_errors)),
                    ),
                )
                .where(
                    LinkStateChange.id >= first,
                    LinkStateChange.id <= int(position),
                    LinkStateChange.at >= since,
                )
                .group_by(day)
            )
            days = {
                as_date(value): DayMoves(int(expired or 0), int(relink or 0))
                for value, expired, relink in session.execute(stmt).all()
                if value is not None and (expired or relink)
            }
            _add_days(session, days)

    def day_moves(self, since: date) -> dict[date, DayMoves]:
        """The moves of each day from ``since`` on (days without a move are absent)."""
        with self._store.read() as session:
            rows = session.execute(
                sa.select(
                    StateChangeDay.day, StateChangeDay.auth_expired, StateChangeDay.needs_relink
                ).where(StateChangeDay.day >= since)
            ).all()
        return {as_date(day): DayMoves(int(a), int(r)) for day, a, r in rows}

    def _roll_up_chunk(self) -> int:
        now = self._clock()
        with self._store.read() as session:
            # Nothing new (the usual case between two quiet evaluations): no write at all.
            position = session.scalar(
                sa.select(AlertState.number).where(AlertState.name == ROLLUP_STATE)
            )
            newest = session.scalar(sa.select(sa.func.max(LinkStateChange.id))) or 0
            if position is not None and newest == position:
                return 0
        with self._store.write() as session:
            if position is None:
                # First start on an existing store: skip the history older than any window.
                start = self._first_id_since(session, now - ROLLUP_HORIZON) - 1
                insert_if_absent(
                    session,
                    AlertState,
                    {
                        "name": ROLLUP_STATE,
                        "number": start,
                        "position": 0,
                        "value": {},
                        "updated_at": now,
                    },
                    ["name"],
                )
            position = int(
                session.scalar(sa.select(AlertState.number).where(AlertState.name == ROLLUP_STATE))
                or 0
            )
            rows = session.execute(
                sa.select(
                    LinkStateChange.id,
                    LinkStateChange.link_id,
                    LinkStateChange.at,
                    LinkStateChange.from_state,
                    LinkStateChange.from_error,
                    LinkStateChange.to_state,
                    LinkStateChange.to_error,
                )
                .where(LinkStateChange.id > position)
                .order_by(LinkStateChange.id)
                .limit(ROLLUP_CHUNK)
            ).all()
            if not rows:
                newest = session.scalar(sa.select(sa.func.max(LinkStateChange.id))) or 0
                if newest < position:
                    # The history was emptied (a demo reset) and its ids start again: so do we.
                    session.execute(
                        sa.update(AlertState)
                        .where(AlertState.name == ROLLUP_STATE)
                        .values(number=0, updated_at=now)
                    )
                    session.execute(sa.delete(AlertBankBucket))
                    session.execute(sa.delete(StateChangeDay))
                    session.execute(
                        sa.delete(AlertState).where(
                            AlertState.name.in_([RELINK_COUNT_STATE, TREND_FILLED_STATE])
                        )
                    )
                return 0
            last = int(rows[-1].id)
            # Compare-and-set first: a second evaluator that read the same position waits on
            # this row, then finds it moved and rolls nothing up twice.
            moved = session.execute(
                sa.update(AlertState)
                .where(AlertState.name == ROLLUP_STATE, AlertState.number == position)
                .values(number=last, updated_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if not moved:
                session.rollback()
                return 0
            # The running count of links needing relink moves with the same changes.
            session.execute(
                sa.update(AlertState)
                .where(AlertState.name == RELINK_COUNT_STATE, AlertState.position == position)
                .values(number=AlertState.number + _relink_delta(rows), position=last)
            )
            days_since = _first_day_kept(now)
            # Read after the compare-and-set, which waited for a fill of the days under way: a
            # fill covers the changes up to the position it saw, these rows come after it.
            if session.get(AlertState, TREND_FILLED_STATE) is not None:
                _add_days(session, _day_moves(rows, days_since))
            session.execute(sa.delete(StateChangeDay).where(StateChangeDay.day < days_since.date()))
            horizon = now - ROLLUP_HORIZON
            relevant = [
                row
                for row in rows
                if row.at is not None
                and row.at >= horizon
                and (
                    # A link first seen in error (no earlier state: discovery, a restore) did
                    # not break now; nobody knows when it did.
                    (row.to_state == "error" and row.from_state not in (None, "error"))
                    or (row.from_state == "error" and row.to_state == "connected")
                )
            ]
            banks: dict[str, str] = {}
            link_ids = sorted({row.link_id for row in relevant})
            for start in range(0, len(link_ids), 500):
                chunk = link_ids[start : start + 500]
                banks.update(
                    session.execute(
                        sa.select(Link.link_id, Link.institution_id).where(Link.link_id.in_(chunk))
                    ).all()
                )
            broke: Counter[tuple[str, datetime]] = Counter()
            back: Counter[tuple[str, datetime]] = Counter()
            for row in relevant:
                bank = banks.get(row.link_id)
                if bank is None:
                    continue
                slot = (bank, bucket_of(row.at))
                if row.to_state == "error":
                    broke[slot] += 1
                else:
                    back[slot] += 1
            for slot in sorted(set(broke) | set(back)):
                _upsert_bucket(session, slot[0], slot[1], broke[slot], back[slot])
            session.execute(
                sa.delete(AlertBankBucket).where(AlertBankBucket.bucket_start < horizon)
            )
            return len(rows)

    def moves_since(self, since: datetime) -> tuple[Counter[tuple[str, str]], bool]:
        """How the links moved between (state, error code or "") groups since ``since``: +1 for
        each group a change put a link in, -1 for each it took one out of. Read from the state
        changes recorded since then (found by bisecting the ids), at most MOVES_READ_LIMIT of
        them; the flag says whether they were all read."""
        moves: Counter[tuple[str, str]] = Counter()
        with self._store.read() as session:
            first = self._first_id_since(session, since)
            rows = session.execute(
                sa.select(
                    LinkStateChange.at,
                    LinkStateChange.from_state,
                    LinkStateChange.from_error,
                    LinkStateChange.to_state,
                    LinkStateChange.to_error,
                )
                .where(LinkStateChange.id >= first)
                .order_by(LinkStateChange.id)
                .limit(MOVES_READ_LIMIT + 1)
            ).all()
        for row in rows[:MOVES_READ_LIMIT]:
            if row.at is None or row.at < since:
                continue  # written out of order around the cut
            if row.from_state is not None:
                moves[(row.from_state, row.from_error or "")] -= 1
            moves[(row.to_state, row.to_error or "")] += 1
        return moves, len(rows) <= MOVES_READ_LIMIT

    @staticmethod
    def _first_id_since(session: Session, since: datetime) -> int:
        """The first state change recorded at or after ``since``, by bisecting the ids (they
        follow time as changes are appended): a few primary-key reads instead of reading a long
        history. Changes written out of order (a bulk import of the past) may be rolled up or
        skipped around the cut; they are older than any window anyway."""
        low = int(session.scalar(sa.select(sa.func.min(LinkStateChange.id))) or 0)
        high = int(session.scalar(sa.select(sa.func.max(LinkStateChange.id))) or 0)
        if high == 0:
            return 1
        while low < high:
            middle = (low + high) // 2
            at = session.scalar(
                sa.select(LinkStateChange.at)
                .where(LinkStateChange.id >= middle)
                .order_by(LinkStateChange.id)
                .limit(1)
            )
            if at is not None and at >= since:
                high = middle
            else:
                low = middle + 1
        return low

    def bank_rates(self, window: timedelta, baseline: timedelta) -> list[BankRate]:
        """Per bank whose links broke or came back in the last ``window`` (whole buckets, the
        current one included): how many, against the bank's own average per window over the
        ``baseline`` before it. Reads the rollup's buckets only, never the links."""
        now = self._clock()
        window_start = bucket_of(now) + BUCKET - window
        in_window = AlertBankBucket.bucket_start >= window_start
        zero = sa.literal(0)
        stmt = (
            sa.select(
                AlertBankBucket.institution_id,
                Institution.name,
                Institution.color,
                sa.func.sum(sa.case((in_window, AlertBankBucket.broke), else_=zero)),
                sa.func.sum(sa.case((in_window, AlertBankBucket.recovered), else_=zero)),
                sa.func.sum(sa.case((in_window, zero), else_=AlertBankBucket.broke)),
            )
            .outerjoin(Institution, Institution.institution_id == AlertBankBucket.institution_id)
            .where(AlertBankBucket.bucket_start >= window_start - baseline)
            .group_by(AlertBankBucket.institution_id, Institution.name, Institution.color)
        )
        windows_in_baseline = baseline / window
        with self._store.read() as session:
            rows = session.execute(stmt).all()
        return [
            BankRate(
                institution_id=bank,
                name=name or bank,
                color=color,
                broke=int(broke or 0),
                recovered=int(back or 0),
                usual=int(before or 0) / windows_in_baseline,
            )
            for bank, name, color, broke, back, before in rows
            if broke or back
        ]

    def relink_count(self) -> int:
        """Links needing relink now: the running count kept by the rollup plus the few changes
        since its position. Counted through the index (cost: the links needing relink) only on
        first use, once an hour, or while the rollup is catching up on a long history."""
        now = self._clock()
        with self._store.read() as session:
            kept = session.get(AlertState, RELINK_COUNT_STATE)
            position = session.scalar(
                sa.select(AlertState.number).where(AlertState.name == ROLLUP_STATE)
            )
            if position is not None and kept is not None and kept.position == position:
                fresh = now - kept.updated_at < RELINK_RECOUNT_EVERY
                since = self._changes_after(session, int(position))
                if fresh and since is not None:
                    return int(kept.number) + _relink_delta(since)
        with self._store.write() as session:
            position = session.scalar(
                sa.select(AlertState.number).where(AlertState.name == ROLLUP_STATE)
            )
            count = self._count_needing_relink(session)
            since = self._changes_after(session, int(position)) if position is not None else None
            if since is not None and position is not None:
                values = {
                    "name": RELINK_COUNT_STATE,
                    "number": count - _relink_delta(since),
                    "position": int(position),
                    "value": {},
                    "updated_at": now,
                }
                if not insert_if_absent(session, AlertState, values, ["name"]):
                    session.execute(
                        sa.update(AlertState)
                        .where(AlertState.name == RELINK_COUNT_STATE)
                        .values(
                            number=values["number"], position=values["position"], updated_at=now
                        )
                    )
            return count

    @staticmethod
    def _count_needing_relink(session: Session) -> int:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(Link)
                .where(Link.error_code.in_(sorted(RELINK_ERRORS)), Link.state == "error")
            )
            or 0
        )

    @staticmethod
    def _changes_after(session: Session, position: int) -> list[Any] | None:
        """State changes not rolled up yet (None when there are too many: still catching up)."""
        rows = session.execute(
            sa.select(
                LinkStateChange.from_state,
                LinkStateChange.from_error,
                LinkStateChange.to_state,
                LinkStateChange.to_error,
            )
            .where(LinkStateChange.id > position)
            .limit(ROLLUP_CHUNK + 1)
        ).all()
        return None if len(rows) > ROLLUP_CHUNK else list(rows)
