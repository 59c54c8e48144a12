"""Counters kept by their writers: rollup rows moved in the same transaction as the rows counted.

A writer calls :func:`count_later` with what its change adds to (or takes from) a rollup row; the
moves of a transaction are added up and written as it commits, all at once and in one order
(table, then key). So a transaction holds the counter rows it writes for as short as it can, and
two transactions writing the same rows never wait on each other in opposite orders, however many
moves each made and in whatever order. Each transaction writes to one of a few shards of a row,
picked at random (the tables have a ``shard`` key column), so writers at once seldom queue on one
row; a count is the sum of its shards, so which shard a thing was counted in does not matter.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

__all__ = ["SHARDS", "add_to_counters", "count_later"]

SHARDS = 8
_PENDING = "linkdesk.counters"

# (table, key columns and values in order) → counter name → amount to add.
_Moves = dict[tuple[Any, tuple[tuple[str, Any], ...]], dict[str, int]]


def count_later(
    session: Session, model: type[Any], key: Mapping[str, Any], amounts: Mapping[str, int]
) -> None:
    """Add ``amounts`` to the counters of ``model``'s row ``key`` (without its shard) as the
    transaction of ``session`` commits; nothing if it rolls back."""
    moves: _Moves = session.info.setdefault(_PENDING, {})
    counted = moves.setdefault((model, tuple(key.items())), {})
    for name, amount in amounts.items():
        counted[name] = counted.get(name, 0) + amount


def add_to_counters(
    session: Session, model: type[Any], key: Mapping[str, Any], amounts: Mapping[str, int]
) -> None:
    """Add ``amounts`` to the counters of the row of ``model`` whose primary key is ``key``,
    creating the row with them: one statement, so two writers adding at once both count."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(model).values(**key, **amounts)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={name: getattr(model, name) + stmt.excluded[name] for name in amounts},
    )
    session.execute(stmt)


@sa.event.listens_for(Session, "before_commit")
def _write_counts(session: Session) -> None:
    moves: _Moves | None = session.info.pop(_PENDING, None)
    if not moves:
        return
    shard = random.randrange(SHARDS)  # spreads writes; nothing secret
    ordered = sorted(moves.items(), key=lambda item: (item[0][0].__tablename__, item[0][1]))
    for (model, key), amounts in ordered:
        if any(amounts.values()):
            add_to_counters(session, model, {**dict(key), "shard": shard}, amounts)


@sa.event.listens_for(Session, "after_rollback")
def _forget_counts(session: Session) -> None:
    session.info.pop(_PENDING, None)
