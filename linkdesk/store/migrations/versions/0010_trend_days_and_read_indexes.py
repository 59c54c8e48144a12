"""The Overview trend's rollup: per day, how the links needing a relink moved; and indexes for
the Overview's webhook lag and a customer's timeline.

The trend of the last 90 days was replayed from the whole state-change history on each view (a
window function over every change, seconds at a million links); the rollup that already folds
each change into the error-spike buckets now also adds it to its day, so the trend reads a few
rows (``state_change_days``). Filled for the past by the rollup itself on its next run.

The webhook lag (the oldest pending event by receipt) read every pending event through the
status index to find the oldest receipt: 340 ms at a million links. ``(status, received_at)``
answers it with one seek. A customer's timeline looked for "their sessions, or their links'"
by scanning every Connect session (750 ms at a million); ``(customer_id, started_at)`` beside
the link index makes it two index ranges (16 ms). The Overview's relinks of the last 30 days
read every session of the period to keep the relinks (730 ms); ``(mode, started_at)`` reads
the relinks only.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "state_change_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("auth_expired", sa.Integer(), nullable=False),
        sa.Column("needs_relink", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_state_change_days"),
    )
    op.create_index(
        "ix_webhook_events_status_received", "webhook_events", ["status", "received_at"]
    )
    op.create_index(
        "ix_connect_sessions_customer", "connect_sessions", ["customer_id", "started_at"]
    )
    op.create_index("ix_connect_sessions_mode_started", "connect_sessions", ["mode", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_connect_sessions_mode_started", table_name="connect_sessions")
    op.drop_index("ix_connect_sessions_customer", table_name="connect_sessions")
    op.drop_index("ix_webhook_events_status_received", table_name="webhook_events")
    op.drop_table("state_change_days")
