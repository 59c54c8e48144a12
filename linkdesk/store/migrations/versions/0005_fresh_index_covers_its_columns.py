"""PostgreSQL reads stale links sorted by update time from the freshness index alone.

PostgreSQL only answers a query from an index without visiting the table when the index holds the
columns an expression is computed from, not just the expression: ``ix_links_state_fresh_updated``
indexes the freshness (a ``coalesce`` of three columns) and so cost one table read per stale
link, 150 ms at a million links. The index now also carries the three columns (``INCLUDE``, not
part of its order), and the same page takes about 20 ms. SQLite has no such rule: unchanged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_links_state_fresh_updated"
_FRESH = "coalesce(products_refreshed_at, created_at, discovered_at)"
_FRESH_COLUMNS = ["products_refreshed_at", "created_at", "discovered_at"]


def _rebuild(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Build the new index beside the old one, so the stale filter is never without one.
    op.create_index(
        f"{_NAME}_new",
        "links",
        ["state", sa.text(_FRESH), "updated_at", "link_id"],
        postgresql_include=include,
    )
    op.drop_index(_NAME, table_name="links")
    op.execute(f"ALTER INDEX {_NAME}_new RENAME TO {_NAME}")


def upgrade() -> None:
    _rebuild(_FRESH_COLUMNS)


def downgrade() -> None:
    _rebuild([])
