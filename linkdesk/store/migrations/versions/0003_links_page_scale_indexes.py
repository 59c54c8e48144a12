"""Indexes for the Links page at a million links: the sorts by customer, by state and error and
by bank name read in index order, the stale/healthy filters are index ranges, and the worker
panel counts claimed and due jobs from indexes alone.

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_links_customer_sort", "links", [sa.text("coalesce(customer_id, '')"), "link_id"]
    )
    op.create_index(
        "ix_links_state_error_sort",
        "links",
        ["state", sa.text("coalesce(error_code, '')"), "link_id"],
    )
    op.create_index(
        "ix_links_state_fresh",
        "links",
        ["state", sa.text("coalesce(products_refreshed_at, created_at, discovered_at)")],
    )
    op.create_index("ix_links_institution_link", "links", ["institution_id", "link_id"])
    op.create_index("ix_sync_jobs_claimed", "sync_jobs", ["claimed_until"])
    op.create_index("ix_sync_jobs_due_claimed", "sync_jobs", ["due_at", "claimed_until"])


def downgrade() -> None:
    op.drop_index("ix_sync_jobs_due_claimed", table_name="sync_jobs")
    op.drop_index("ix_sync_jobs_claimed", table_name="sync_jobs")
    op.drop_index("ix_links_institution_link", table_name="links")
    op.drop_index("ix_links_state_fresh", table_name="links")
    op.drop_index("ix_links_state_error_sort", table_name="links")
    op.drop_index("ix_links_customer_sort", table_name="links")
