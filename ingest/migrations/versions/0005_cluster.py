"""cluster mode: nodes, claim leases, shared spool chunks, job claims per period

Revision ID: 0005
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ingest.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this migration."""
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_until", ingest.tables.UtcDateTime(), nullable=True))
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("process", sa.String(length=160), nullable=False),
        sa.Column("started_at", ingest.tables.UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", ingest.tables.UtcDateTime(), nullable=False),
        sa.Column("stopped_at", ingest.tables.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "spool_chunks",
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "kind", "seq"),
    )
    op.create_table(
        "job_claims",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("period", ingest.tables.UtcDateTime(), nullable=False),
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("claimed_at", ingest.tables.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "period"),
    )


def downgrade() -> None:
    """Revert this migration."""
    op.drop_table("job_claims")
    op.drop_table("spool_chunks")
    op.drop_table("nodes")
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("lease_until")
