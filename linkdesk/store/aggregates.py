"""Small SQL helpers the read side's aggregates share: bounded limits, counting a condition,
seconds between two timestamps on either backend, and values computed inside SQL read back
with the types their columns would have."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from linkdesk.store.models import ConnectEvent

# No list a screen asks for holds more rows than this.
MAX_LIMIT = 1000


def bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def as_date(value: Any) -> date:
    # SQLite's date() gives 'YYYY-MM-DD' text, PostgreSQL's gives a date.
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def as_aware(value: Any) -> datetime | None:
    # Values computed inside SQL (MIN, LEAD…) come back without the column type's processing.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return None


def seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return sa.func.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def outcome_counts(outcome: Any) -> tuple[ColumnElement[Any], ...]:
    """Connect sessions counted: all of them, then those ended in success, exit, failure, and
    those still pending (``outcome``: the sessions' outcome column)."""
    return (
        sa.func.count(),
        count_if(outcome == "success"),
        count_if(outcome == "exit"),
        count_if(outcome == "failed"),
        count_if(outcome == "pending"),
    )


def event_property(name: str) -> ColumnElement[Any]:
    """A property of a Connect event's payload, as text."""
    return ConnectEvent.payload[("properties", name)].as_string()
