"""Product refresh states: each link's products as MoneyKit reports them, and the worst of them.

MoneyKit fetches a product only on ``prefetch`` or a refresh, and a refresh can be in progress or
fail; the link detail shows this per product (``link_products``) and health reads the worst one
from the link row (``links.refresh_issue``), so the verdict needs no join.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from linkdesk.store.models import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: a batch copy of ``links`` on SQLite would lose its expression indexes.
    op.add_column("links", sa.Column("refresh_issue", sa.String(20), nullable=True))
    op.create_index("ix_links_refresh_issue", "links", ["refresh_issue", "state"])
    op.create_table(
        "link_products",
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("product", sa.String(40), nullable=False),
        sa.Column("refreshed_at", UTCDateTime(), nullable=True),
        sa.Column("last_attempted_at", UTCDateTime(), nullable=True),
        sa.Column("error_code", sa.String(60), nullable=True),
        sa.Column("error_message", sa.String(500), nullable=True),
        sa.Column("refresh_state", sa.String(20), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["links.link_id"],
            name="fk_link_products_link_id_links",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("link_id", "product", name="pk_link_products"),
    )


def downgrade() -> None:
    op.drop_table("link_products")
    op.drop_index("ix_links_refresh_issue", table_name="links")
    op.drop_column("links", "refresh_issue")
