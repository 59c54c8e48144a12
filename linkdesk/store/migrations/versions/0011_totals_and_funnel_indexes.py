"""Indexes the shared totals and the Connect funnel are counted from.

The totals (links per verdict, state, error code and bank) were one pass over every row of the
links table, each row's verdict worked out on the way: 2.9 to 3.9 s at a million links on SQLite,
every 30 s while a page was open. Only the verdicts the clock decides (stale, stuck) need more
than a link's state and error code, and indexes find those few; the rest is a count by state,
error code and bank, which this index answers without reading a row (0.15 s at a million).

The funnel counted a window's Connect sessions by outcome and day through the start-time index,
reading each session's row for its outcome (0.4 s for the 118,000 sessions of 30 days at a
million links on SQLite); with mode and outcome in the index it reads no row (0.1 s).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_links_state_error_bank", "links", ["state", "error_code", "institution_id"])
    op.drop_index("ix_connect_sessions_started", table_name="connect_sessions")
    op.create_index(
        "ix_connect_sessions_started", "connect_sessions", ["started_at", "mode", "outcome"]
    )


def downgrade() -> None:
    op.drop_index("ix_connect_sessions_started", table_name="connect_sessions")
    op.create_index("ix_connect_sessions_started", "connect_sessions", ["started_at"])
    op.drop_index("ix_links_state_error_bank", table_name="links")
