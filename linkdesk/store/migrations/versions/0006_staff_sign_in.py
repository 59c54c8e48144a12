"""Staff sign-in in the store: local accounts (argon2id), server-side sessions, failed sign-ins.

Sessions and failures live in the database so that every replica sees the same sign-ins,
sign-outs, revocations and throttles.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from linkdesk.store.models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff_users",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_staff_users")),
    )
    op.create_table(
        "staff_sessions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=True),
        sa.Column("handoff_sha256", sa.String(64), nullable=True),
        sa.Column("handoff_expires_at", UTCDateTime(), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("client", sa.String(100), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_sessions")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_staff_sessions_token_sha256")),
        sa.UniqueConstraint("handoff_sha256", name=op.f("uq_staff_sessions_handoff_sha256")),
    )
    op.create_index("ix_staff_sessions_name", "staff_sessions", ["name", "created_at"])
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("client", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_failures")),
    )
    op.create_index("ix_sign_in_failures_username", "sign_in_failures", ["username", "at"])
    op.create_index("ix_sign_in_failures_client", "sign_in_failures", ["client", "at"])


def downgrade() -> None:
    op.drop_table("sign_in_failures")
    op.drop_table("staff_sessions")
    op.drop_table("staff_users")
