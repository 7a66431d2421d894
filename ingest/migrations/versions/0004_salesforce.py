"""salesforce: processed notifications, newest modstamp per record, reconciler cursors

Revision ID: 0004
Revises: 0001
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ingest.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    op.create_table(
        "salesforce_notifications",
        sa.Column("org_id", sa.String(length=18), nullable=False),
        sa.Column("notification_id", sa.String(length=64), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=True),
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("at", ingest.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "notification_id"),
    )
    op.create_table(
        "salesforce_records",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=15), nullable=False),
        sa.Column("record_id", sa.String(length=18), nullable=False),
        sa.Column("modstamp", ingest.tables.UtcDateTime(), nullable=False),
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "org_id", "record_id"),
    )
    op.create_table(
        "salesforce_cursors",
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("modstamp", ingest.tables.UtcDateTime(), nullable=False),
        sa.Column("updated_at", ingest.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id"),
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("salesforce_cursors")
    op.drop_table("salesforce_records")
    op.drop_table("salesforce_notifications")
