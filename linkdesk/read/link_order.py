"""The orders the Links list reads in, and its keyset cursors.

A page asks for rows strictly after the last row of the previous page in the chosen order, so
page 1000 costs the same as page 1 and nothing loads a whole table. Every sort ends with the
link id, so the order is total, and no sort key is NULL (nullable columns through coalesce).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

from linkdesk.store.cursor import InvalidCursor, decode_cursor, encode_cursor
from linkdesk.store.models import Institution, Link

__all__ = [
    "ASC",
    "DESC",
    "InvalidCursor",
    "LinkSort",
    "SortKey",
    "customer_sort_key",
    "decode_link_cursor",
    "encode_link_cursor",
    "error_sort_key",
    "escape_like",
    "key_values",
    "prefix_range",
    "rows_after",
    "sort_keys",
]


class LinkSort(enum.StrEnum):
    UPDATED_DESC = "updated_desc"
    UPDATED_ASC = "updated_asc"
    LINK_ID = "link_id"
    INSTITUTION = "institution"
    CUSTOMER = "customer"
    STATE = "state"


ASC, DESC = "asc", "desc"
Expr = ColumnElement[Any] | QueryableAttribute[Any]
SortKey = tuple[Expr, str, bool]  # (expression, direction, is_datetime)


def customer_sort_key() -> ColumnElement[str]:
    # The '' is written into the SQL, not bound: a database uses an index on an expression only
    # when the query spells the same expression (see the ix_links_*_sort indexes).
    return sa.func.coalesce(Link.customer_id, sa.literal_column("''", sa.String))


def error_sort_key() -> ColumnElement[str]:
    return sa.func.coalesce(Link.error_code, sa.literal_column("''", sa.String))


def sort_keys(sort: LinkSort) -> list[SortKey]:
    """(expression, direction, is_datetime) for each sort key; link_id always ends it."""
    customer = customer_sort_key()
    error = error_sort_key()
    keys: dict[LinkSort, list[SortKey]] = {
        LinkSort.UPDATED_DESC: [(Link.updated_at, DESC, True), (Link.link_id, DESC, False)],
        LinkSort.UPDATED_ASC: [(Link.updated_at, ASC, True), (Link.link_id, ASC, False)],
        LinkSort.LINK_ID: [(Link.link_id, ASC, False)],
        LinkSort.INSTITUTION: [(Institution.name, ASC, False), (Link.link_id, ASC, False)],
        LinkSort.CUSTOMER: [(customer, ASC, False), (Link.link_id, ASC, False)],
        LinkSort.STATE: [
            (Link.state, ASC, False),
            (error, ASC, False),
            (Link.link_id, ASC, False),
        ],
    }
    return keys[sort]


def rows_after(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order given by ``keys`` (a lexicographic compare).

    When every key runs in one direction (every sort here does) this is a row-value comparison,
    which both databases answer with an index seek, so page 1000 costs what page 1 does. Sort
    keys are never NULL (nullable columns are sorted through coalesce).
    """
    directions = {direction for _, direction, _ in keys}
    if len(directions) == 1 and len(keys) > 1:
        columns = sa.tuple_(*(expr for expr, _, _ in keys))
        cursor = sa.tuple_(
            *(
                sa.literal(value, type_=expr.type)
                for (expr, _, _), value in zip(keys, values, strict=True)
            )
        )
        return columns > cursor if directions == {ASC} else columns < cursor
    clauses: list[ColumnElement[bool]] = []
    for i, (expr, direction, _) in enumerate(keys):
        equal_prefix = [keys[j][0] == values[j] for j in range(i)]
        beyond = expr > values[i] if direction == ASC else expr < values[i]
        clauses.append(sa.and_(*equal_prefix, beyond))
    return sa.or_(*clauses)


def encode_link_cursor(sort: LinkSort, values: Sequence[Any]) -> str:
    encoded = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return encode_cursor({"s": sort.value, "k": encoded})


def decode_link_cursor(cursor: str, sort: LinkSort) -> list[Any]:
    keys = sort_keys(sort)
    data = decode_cursor(cursor)
    if not isinstance(data, dict) or data.get("s") != sort.value:
        raise InvalidCursor("cursor belongs to another sort order")
    raw_values = data.get("k")
    if not isinstance(raw_values, list) or len(raw_values) != len(keys):
        raise InvalidCursor("cursor has the wrong shape")
    values: list[Any] = []
    for (_, _, is_datetime), value in zip(keys, raw_values, strict=True):
        if not isinstance(value, str):
            raise InvalidCursor("cursor has the wrong shape")
        try:
            values.append(datetime.fromisoformat(value) if is_datetime else value)
        except ValueError as exc:
            raise InvalidCursor("cursor has the wrong shape") from exc
    return values


def prefix_range(column: Expr, prefix: str) -> ColumnElement[bool]:
    # A range instead of LIKE 'p%': SQLite's LIKE is case-insensitive and cannot use the index.
    return sa.and_(column >= prefix, column < prefix + "\U0010ffff")


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def key_values(sort: LinkSort, link: Any, institution: Any) -> list[Any]:
    """The sort keys of a row, as the SQL expressions compute them (for the next cursor)."""
    columns: dict[LinkSort, list[Any]] = {
        LinkSort.UPDATED_DESC: [link.updated_at, link.link_id],
        LinkSort.UPDATED_ASC: [link.updated_at, link.link_id],
        LinkSort.LINK_ID: [link.link_id],
        LinkSort.INSTITUTION: [institution.name, link.link_id],
        LinkSort.CUSTOMER: [link.customer_id or "", link.link_id],
        LinkSort.STATE: [link.state, link.error_code or "", link.link_id],
    }
    return columns[sort]
