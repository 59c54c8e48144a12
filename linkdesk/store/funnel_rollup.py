"""What a Connect session adds to the funnel's rollups, and moving it there.

Two tables, kept by the writers of sessions and their events (``store.connect_repository``, the
demo history's bulk writes) in the same transaction as each change:

* ``connect_session_days``: sessions per UTC day of their start, mode, bank, outcome and exit
  error;
* ``connect_screen_days``: per day, mode, bank and Connect screen, the sessions that reached it,
  those whose last screen it was without a success, and the time until the next logged entry
  (summed in whole milliseconds, each rounded down, with the number of timed visits).

A writer works out what the session added before its change and what it adds after, from the
session's row and its few logged entries (:class:`SessionCounts`), and adds the difference: the
same whatever order the entries arrive in, or however late the session's bank is known. The
differences are written as the transaction commits, in one order and to a shard picked at random
(``store.counters``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.store.counters import count_later
from linkdesk.store.models import ConnectEvent, ConnectScreenDay, ConnectSessionDay

__all__ = [
    "ENDING_TYPES",
    "PICKED_BANK_EVENT",
    "SCREEN_EVENT",
    "LoggedStep",
    "ScreenCounts",
    "SessionBucket",
    "SessionCounts",
    "add_counts",
    "logged_step",
    "logged_steps",
    "moved",
    "screen_counts",
    "screen_of",
]

PICKED_BANK_EVENT = "select_institution"
SCREEN_EVENT = "change_screen"
_SCREEN_NAME_MAX = 100
_MILLISECOND = timedelta(milliseconds=1)

# Entries that end a session in Connect (its success or exit, as the page's log has them).
ENDING_TYPES = ("success", "relink_success", "exit")

# One logged entry as the rollups count it: (seq, name, screen shown or None, when, whether it
# ends the session).
LoggedStep = tuple[int, str | None, str | None, datetime | None, bool]


@dataclass(frozen=True, slots=True, order=True)
class SessionBucket:
    """Where a session is counted in ``connect_session_days`` (no bank, no exit error: '').
    ``end_logged``: Connect's success or exit is among its logged entries (a pending session
    without one, long after it started, was abandoned)."""

    day: date
    mode: str
    institution_id: str
    outcome: str
    exit_error_id: str
    end_logged: bool = False

    @classmethod
    def of_row(cls, row: Any, *, end_logged: bool = False) -> SessionBucket:
        """The bucket of a ``ConnectSession`` (or of a row with its columns)."""
        return cls(
            row.started_at.date(),
            row.mode,
            row.institution_id or "",
            row.outcome,
            row.exit_error_id or "",
            end_logged,
        )


@dataclass(frozen=True, slots=True)
class ScreenCounts:
    reached: int = 0
    dropped: int = 0
    milliseconds: int = 0
    samples: int = 0

    def __add__(self, other: ScreenCounts) -> ScreenCounts:
        return ScreenCounts(
            self.reached + other.reached,
            self.dropped + other.dropped,
            self.milliseconds + other.milliseconds,
            self.samples + other.samples,
        )


@dataclass(frozen=True, slots=True)
class SessionCounts:
    """What one session adds to the rollups."""

    bucket: SessionBucket
    screens: Mapping[str, ScreenCounts] = field(default_factory=dict)

    @classmethod
    def of(cls, row: Any, steps: Iterable[LoggedStep]) -> SessionCounts:
        steps = list(steps)
        return cls(
            SessionBucket.of_row(row, end_logged=any(step[4] for step in steps)),
            screen_counts(steps, succeeded=row.outcome == "success"),
        )


def screen_of(name: str | None, payload: Any) -> str | None:
    """The screen a logged entry shows: a change_screen's ``current_screen_name``."""
    if name != SCREEN_EVENT or not isinstance(payload, dict):
        return None
    properties = payload.get("properties")
    screen = properties.get("current_screen_name") if isinstance(properties, dict) else None
    if screen is None or isinstance(screen, dict | list):
        return None
    return str(screen)[:_SCREEN_NAME_MAX] or None


def screen_counts(steps: Iterable[LoggedStep], *, succeeded: bool) -> dict[str, ScreenCounts]:
    """Per screen one session showed: reached once, dropped if it was the last screen shown and
    the session did not succeed, and the time from showing it to the next logged entry."""
    ordered = sorted(steps, key=lambda step: step[0])
    counts: dict[str, ScreenCounts] = {}
    last_screen: str | None = None
    for index, (_seq, _name, screen, at, _ends) in enumerate(ordered):
        if screen is None:
            continue
        following = ordered[index + 1][3] if index + 1 < len(ordered) else None
        timed = at is not None and following is not None
        spent = (following - at) // _MILLISECOND if timed else 0  # type: ignore[operator]
        counts[screen] = counts.get(screen, ScreenCounts()) + ScreenCounts(
            reached=0 if screen in counts else 1, milliseconds=spent, samples=int(timed)
        )
        last_screen = screen
    if last_screen is not None and not succeeded:
        counts[last_screen] = counts[last_screen] + ScreenCounts(dropped=1)
    return counts


def logged_step(
    seq: int, entry_type: str, name: str | None, payload: Any, at: datetime | None
) -> LoggedStep:
    """A logged entry (a ``connect_events`` row's values) as the rollups count it."""
    return (seq, name, screen_of(name, payload), at, entry_type in ENDING_TYPES)


def logged_steps(session: Session, session_id: str) -> list[LoggedStep]:
    """The session's stored entries as the rollups count them."""
    rows = session.execute(
        sa.select(
            ConnectEvent.seq,
            ConnectEvent.type,
            ConnectEvent.name,
            ConnectEvent.payload,
            ConnectEvent.at,
        ).where(ConnectEvent.session_id == session_id)
    ).all()
    return [logged_step(*row) for row in rows]


def add_counts(
    session: Session, added: Iterable[SessionCounts] = (), removed: Iterable[SessionCounts] = ()
) -> None:
    """Add what ``added`` sessions count and take away what ``removed`` ones did, as the
    transaction of ``session`` commits (see ``store.counters``)."""
    for sign, group in ((1, added), (-1, removed)):
        for counts in group:
            bucket = counts.bucket
            where = {
                "day": bucket.day,
                "mode": bucket.mode,
                "institution_id": bucket.institution_id,
            }
            key = {
                **where,
                "outcome": bucket.outcome,
                "exit_error_id": bucket.exit_error_id,
                "end_logged": bucket.end_logged,
            }
            count_later(session, ConnectSessionDay, key, {"sessions": sign})
            for screen, counted in counts.screens.items():
                amounts = {
                    "reached": sign * counted.reached,
                    "dropped": sign * counted.dropped,
                    "milliseconds": sign * counted.milliseconds,
                    "samples": sign * counted.samples,
                }
                count_later(session, ConnectScreenDay, {**where, "screen": screen}, amounts)


def moved(session: Session, before: SessionCounts, after: SessionCounts) -> None:
    """One session's counts, from what they were to what they are."""
    if before != after:
        add_counts(session, added=[after], removed=[before])
