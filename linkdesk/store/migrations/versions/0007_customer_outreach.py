"""Customer outreach: relink links emailed to customers, tracked from sent to finished.

Customers' email addresses (from MoneyKit or an import), the editable relink email, campaigns and
their messages, and the first time a customer relink link was opened.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from linkdesk.store.models import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customer_link_tokens", sa.Column("opened_at", UTCDateTime(), nullable=True))
    op.create_table(
        "customer_emails",
        sa.Column("customer_id", sa.String(150), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customer_emails"),
    )
    op.create_table(
        "outreach_templates",
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_outreach_templates"),
    )
    op.create_table(
        "outreach_campaigns",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_role", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("filters", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("repair_base_url", sa.String(500), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outreach_campaigns"),
    )
    op.create_index("ix_outreach_campaigns_created", "outreach_campaigns", ["created_at"])
    op.create_table(
        "outreach_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.String(40), nullable=False),
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.String(150), nullable=True),
        sa.Column("institution_id", sa.String(200), nullable=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(500), nullable=True),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["outreach_campaigns.id"],
            name="fk_outreach_messages_campaign_id_outreach_campaigns",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outreach_messages"),
    )
    op.create_index(
        "ix_outreach_messages_campaign", "outreach_messages", ["campaign_id", "status", "id"]
    )
    op.create_index("ix_outreach_messages_link", "outreach_messages", ["link_id", "created_at"])
    op.create_index(
        "ix_outreach_messages_customer", "outreach_messages", ["customer_id", "created_at"]
    )
    op.create_index("ix_outreach_messages_sent", "outreach_messages", ["sent_at"])


def downgrade() -> None:
    op.drop_table("outreach_messages")
    op.drop_table("outreach_campaigns")
    op.drop_table("outreach_templates")
    op.drop_table("customer_emails")
    with op.batch_alter_table("customer_link_tokens") as batch:
        batch.drop_column("opened_at")
