"""impact-compatible API: accounts, tokens, submissions

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ingest.tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "api_accounts",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("campaigns", sa.JSON(), nullable=False),
        sa.Column("rate_limit_per_hour", sa.Integer(), nullable=True),
        sa.Column("created_at", ingest.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sid"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("campaigns", sa.JSON(), nullable=True),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("created_at", ingest.tables.UtcDateTime(), nullable=False),
        sa.Column("revoked_at", ingest.tables.UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["sid"], ["api_accounts.sid"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_api_tokens_sid", "api_tokens", ["sid"])
    op.create_table(
        "api_submissions",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("batch_id", sa.String(length=48), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("action_id", sa.String(length=64), nullable=True),
        sa.Column("action_tracker_id", sa.String(length=16), nullable=True),
        sa.Column("order_id", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("submitted_at", ingest.tables.UtcDateTime(), nullable=False),
        sa.Column("completed_at", ingest.tables.UtcDateTime(), nullable=True),
        sa.Column("error_type", sa.String(length=32), nullable=True),
        sa.Column("error_reason", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("batch_id"),
    )
    op.create_index("ix_api_submissions_status", "api_submissions", ["status", "seq"])
    op.create_index("ix_api_submissions_sid", "api_submissions", ["sid", "submitted_at"])


def downgrade() -> None:
    """Revert this migration."""
    op.drop_index("ix_api_submissions_sid", table_name="api_submissions")
    op.drop_index("ix_api_submissions_status", table_name="api_submissions")
    op.drop_table("api_submissions")
    op.drop_index("ix_api_tokens_sid", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("api_accounts")
