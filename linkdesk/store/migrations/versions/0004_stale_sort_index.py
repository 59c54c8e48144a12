"""The stale filter sorted by update time at a million links.

Stale links are collected through the freshness index and sorted by update time, which the index
now holds beside the freshness, so the sort reads the index alone (no row per stale link).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FRESH = "coalesce(products_refreshed_at, created_at, discovered_at)"


def upgrade() -> None:
    op.drop_index("ix_links_state_fresh", table_name="links")
    op.create_index(
        "ix_links_state_fresh_updated",
        "links",
        ["state", sa.text(_FRESH), "updated_at", "link_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_links_state_fresh_updated", table_name="links")
    op.create_index("ix_links_state_fresh", "links", ["state", sa.text(_FRESH)])
