"""How a page of links is read: in the page's order, or by collecting the matches and sorting them.

A page of 50 links under a filter and a sort can be read two ways:

* **walk**: read links in the page's order (through the sort's index) and keep the matches until
  the page is full. About ``51 / share`` rows are read, however many links there are, as long as
  the matches are spread through that order;
* **collect**: read every match through the filter's index and sort them. About
  ``share * links`` rows are read, which is few for a rare filter and far too many for a common
  one.

Neither database chooses well by itself at a million links: both walk the update-time index for
a verdict that has no match (reading the whole table), or collect 700,000 healthy links to sort
them by id. The shares are known (the shared health summary counts every verdict, error code and
state), so the choice is made here and the database is kept to it by hiding the other plan's
index: a column wrapped as ``coalesce(x, x)`` has the same value and no index (and PostgreSQL is
told not to sort, see :func:`keep_to_page_order`).

Some filters are not spread through the update-time order: a link is *stale* because nothing
about it has changed for days, so stale links sit at the far end of "recently updated"; a link
*stuck* or *pending* in Connect is as old as its last change. Those are collected whatever their
share (an index holds the update time beside the freshness, so collecting reads the index only).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement

from linkdesk.health import Health
from linkdesk.store.models import Link

PAGE_READ_FACTOR = 1.0  # reading in order checks each row; collecting also sorts (a wash)

# Filters that the update-time order does not spread evenly (see the module docstring).
_CLUSTERED_IN_UPDATE_ORDER = frozenset({Health.STALE, Health.STUCK, Health.PENDING})

# The columns whose indexes a walk must not use: a filter on them would otherwise tempt the
# database into collecting.
_FILTER_COLUMNS = frozenset({"state", "error_code", "institution_id"})


class Plan(enum.Enum):
    WALK = "walk"
    COLLECT = "collect"


def unindexed(expr: Any) -> ColumnElement[Any]:
    """``expr`` with the same value and type, which no index can serve (see the module doc)."""
    return sa.func.coalesce(expr, expr, type_=expr.type)


def without_filter_indexes(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """``condition`` with its state, error and institution columns hidden from the indexes."""

    def hide(element: Any, **_: Any) -> Any:
        # The ORM hands annotated copies of the table's columns: compare by table and name.
        ours = getattr(element, "table", None) is Link.__table__
        if ours and isinstance(element, sa.ColumnClause) and element.name in _FILTER_COLUMNS:
            return unindexed(element)
        return None

    return visitors.replacement_traverse(condition, {}, hide)


def keep_to_page_order(session: Session, dialect: str) -> None:
    """Make this read transaction read in the page's order rather than collect and sort.

    SQLite is kept to it by hiding the filter's columns (:func:`without_filter_indexes`).
    PostgreSQL would then guess every hidden condition rare (it has no statistics for the
    wrapped columns) and collect anyway; with its sorts made prohibitively dear it takes the
    ordered index instead, and its estimates of the visible filter stay right.
    """
    if dialect == "postgresql":
        session.execute(sa.text("SET LOCAL enable_sort = off"))


def keep_to_filter_index(session: Session, dialect: str) -> None:
    """Make this read transaction collect the matches through the filter's index.

    PostgreSQL overestimates ranges over the freshness expression and would read the whole
    table in parallel instead (150 ms at a million links, against 20 ms through the index).
    """
    if dialect == "postgresql":
        session.execute(sa.text("SET LOCAL enable_seqscan = off"))


def choose_plan(
    *,
    share: float,
    links: int,
    page_size: int,
    health: Health | None,
    update_order: bool,
) -> Plan:
    """The cheaper plan for a filter matching ``share`` of ``links``.

    Walking reads about ``(page_size + 1) / share`` rows; collecting reads ``share * links``.
    """
    if share <= 0.0:
        return Plan.COLLECT  # nothing matches: walking would read every link to find that out
    if update_order and health in _CLUSTERED_IN_UPDATE_ORDER:
        return Plan.COLLECT
    walk_rows = (page_size + 1) / share
    # "Needs attention" is what no other verdict covers: no index finds it, collecting reads all.
    collect_rows = links if health is Health.ATTENTION else share * links
    return Plan.WALK if walk_rows <= collect_rows * PAGE_READ_FACTOR else Plan.COLLECT


def filter_share(
    groups: Mapping[tuple[Health, str, str], int],
    *,
    health: Health | None,
    state: str | None,
    error_code: str | None,
    include_deleted: bool,
) -> float:
    """The share of links matching the verdict, state and error filters, from the summary's
    counts per (verdict, state, error code) group: exact as of the summary, however the
    filters combine."""
    total = sum(groups.values())
    if total <= 0:
        return 0.0
    matching = sum(
        n
        for (verdict, link_state, link_error), n in groups.items()
        if (health is None or verdict is health)
        and (not state or link_state == state)
        and (not error_code or link_error == error_code)
        and (include_deleted or link_state != "deleted")
    )
    return matching / total
