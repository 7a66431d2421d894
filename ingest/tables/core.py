"""The core tables: campaigns, actions, items, audit, files, results, pulls, jobs, nodes."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
)

from ingest.tables.base import UtcDateTime, metadata

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("disposition_codes", JSON, nullable=False, default=dict),
)

event_types = Table(
    "event_types",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("campaign_id", String(64), ForeignKey("campaigns.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("payout_type", String(8), nullable=False),
    Column("payout_value", String(20), nullable=False),  # Decimal as text: exact
    Column("lock_months", Integer, nullable=True),
    Column("lock_days", Integer, nullable=False),
)

# Money is integer minor units (cents). Indexed columns are never updated, so PostgreSQL can do
# HOT updates (fillfactor set in the migration).
actions = Table(
    "actions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("campaign_id", String(64), nullable=False),
    Column("event_type_id", Integer, nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("partner_id", String(64), nullable=False),
    Column("event_at", UtcDateTime, nullable=False),
    Column("lock_at", UtcDateTime, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("payout", BigInteger, nullable=False),
    Column("customer_status", Text, nullable=True),
    Column("state", String(10), nullable=False),
    Column("mod_count", Integer, nullable=False, default=0),
    Column("orig_amount", BigInteger, nullable=False),
    Column("orig_payout", BigInteger, nullable=False),
    Column("orig_customer_status", Text, nullable=True),
    Column("has_items", Integer, nullable=False, default=0),
    Index("ix_actions_order", "campaign_id", "order_id", "event_type_id"),
)

# Keyset pages of a campaign's actions by event date, lock date, partner + event date. Only
# columns that never change are indexed, so updates of amounts and states stay HOT.
Index("ix_actions_event", actions.c.campaign_id, actions.c.event_at, actions.c.id)
Index("ix_actions_lock", actions.c.campaign_id, actions.c.lock_at, actions.c.id)
Index("ix_actions_partner", actions.c.campaign_id, actions.c.partner_id, actions.c.event_at)

action_items = Table(
    "action_items",
    metadata,
    Column("action_id", String(64), primary_key=True),
    Column("sku", String(128), primary_key=True),
    Column("category", Text, nullable=True),
    Column("quantity", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("orig_quantity", Integer, nullable=False),
    Column("orig_amount", BigInteger, nullable=False),
)

audit = Table(
    "audit",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("action_id", String(64), nullable=False, index=True),
    Column("file_id", String(32), nullable=True, index=True),
    Column("line", Integer, nullable=True),
    Column("channel", String(16), nullable=False),
    Column("actor", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("operation", String(16), nullable=False),
    Column("old_state", String(10), nullable=False),
    Column("new_state", String(10), nullable=False),
    Column("old_amount", BigInteger, nullable=False),
    Column("new_amount", BigInteger, nullable=False),
    Column("old_payout", BigInteger, nullable=False),
    Column("new_payout", BigInteger, nullable=False),
    Column("detail", Text, nullable=True),
    Column("at", UtcDateTime, nullable=False),
)

files = Table(
    "files",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("campaign_id", String(64), nullable=False, index=True),
    Column("channel", String(16), nullable=False),
    Column("name", Text, nullable=False),
    Column("sender", Text, nullable=True),
    Column("peer", Text, nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("spool_path", Text, nullable=False),
    Column("status", String(12), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", Text, nullable=True),
    Column("duplicate_of", String(32), nullable=True),
    Column("error_code", String(32), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("counts", JSON, nullable=True),
    Column("meta", JSON, nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("delivered_at", UtcDateTime, nullable=True),
    # Cluster mode: the claim (held by `worker`) is good until then; the heartbeat renews it.
    Column("lease_until", UtcDateTime, nullable=True),
)

# One row per (campaign, content hash): the first file with those bytes. Its primary key is what
# makes a second copy a DUPLICATE even when two copies arrive at the same moment.
file_hashes = Table(
    "file_hashes",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("file_id", String(32), nullable=False),
)

results = Table(
    "results",
    metadata,
    Column("file_id", String(32), primary_key=True),
    Column("path", Text, nullable=False),
    Column("summary", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# What the scheduled pull has fetched: never fetch the same remote file twice.
pulled = Table(
    "pulled",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("remote_path", Text, primary_key=True),
    Column("size", BigInteger, primary_key=True),
    Column("mtime", BigInteger, primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("file_id", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

# Last successful run of scheduled jobs, so a run missed while the daemon was down runs at start.
job_runs = Table(
    "job_runs",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("last_run_at", UtcDateTime, nullable=False),
)


# Cluster mode: the nodes of one database, each with its last heartbeat.
nodes = Table(
    "nodes",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("version", String(32), nullable=False),
    Column("process", String(160), nullable=False),  # host:pid of the node's current run
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False),
    Column("stopped_at", UtcDateTime, nullable=True),
)

# Cluster mode: received bytes ("spool") and result CSVs ("result") in 1 MiB chunks, so that every
# node reads what any node received or wrote.
spool_chunks = Table(
    "spool_chunks",
    metadata,
    Column("file_id", String(32), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

# Cluster mode: one row per scheduled job and period; the node whose insert wins runs it.
job_claims = Table(
    "job_claims",
    metadata,
    Column("job_id", String(128), primary_key=True),
    Column("period", UtcDateTime, primary_key=True),
    Column("node_id", String(128), nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
)
