"""The database schema (SQLAlchemy Core); Alembic migrations create and evolve it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned time-zone aware (UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: time zones must be explicit")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


metadata = MetaData()

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

# The impact-compatible API (SPEC §10): advertiser accounts (AccountSID), their hashed AuthTokens,
# and the submissions queue (each PUT/DELETE stored before it is answered, then applied in order).
api_accounts = Table(
    "api_accounts",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("name", Text, nullable=True),
    Column("campaigns", JSON, nullable=False),  # the campaign ids the account may change
    Column("rate_limit_per_hour", Integer, nullable=True),  # None: the configured default
    Column("created_at", UtcDateTime, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("sid", String(64), ForeignKey("api_accounts.sid"), nullable=False, index=True),
    Column("token_hash", Text, nullable=False),
    Column("campaigns", JSON, nullable=True),  # a subset of the account's; None: all of them
    Column("label", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

api_submissions = Table(
    "api_submissions",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("batch_id", String(48), nullable=False, unique=True),
    Column("sid", String(64), nullable=False),
    Column("token_id", String(32), nullable=False),
    Column("campaign_id", String(64), nullable=True),  # None until the applier resolves it
    Column("type", String(16), nullable=False),  # Modification | Reversal
    Column("action_id", String(64), nullable=True),
    Column("action_tracker_id", String(16), nullable=True),
    Column("order_id", Text, nullable=True),
    Column("payload", Text, nullable=False),  # the request's parameters as submitted
    Column("params", JSON, nullable=False),  # the same, parsed: [[name, value], …]
    Column("status", String(12), nullable=False),  # Queued | In Progress | Complete
    Column("submitted_at", UtcDateTime, nullable=False),
    Column("completed_at", UtcDateTime, nullable=True),
    Column("error_type", String(32), nullable=True),
    Column("error_reason", String(64), nullable=True),
    Column("outcome", JSON, nullable=True),  # the operation layer's ChangeOutcome
    Index("ix_api_submissions_status", "status", "seq"),
    Index("ix_api_submissions_sid", "sid", "submitted_at"),
)

# --- the web console: users, their sessions and login attempts, saved views, scheduled reports.

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("login", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=True),
    Column("role", String(16), nullable=False),  # operator | advertiser
    Column("campaigns", JSON, nullable=False, default=list),  # advertisers: what they may see
    Column("email", Text, nullable=True),
    Column("password_hash", Text, nullable=False),
    Column("disabled", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    Column("password_changed_at", UtcDateTime, nullable=False),
)

# Server-side sessions: the cookie holds a random token, the table only its SHA-256, so a leaked
# database does not hand out live sessions. Logout and revoke set revoked_at.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 hex of the cookie token
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("address", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),  # the absolute expiry
    Column("revoked_at", UtcDateTime, nullable=True),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("login", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("ok", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_login_attempts_login", "login", "at"),
    Index("ix_login_attempts_address", "address", "at"),
)

saved_views = Table(
    "saved_views",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("page", String(16), nullable=False),  # pending | reversed
    Column("query", Text, nullable=False),  # the view's URL query string
    Column("created_at", UtcDateTime, nullable=False),
)

report_schedules = Table(
    "report_schedules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    Column("page", String(16), nullable=False),
    Column("query", Text, nullable=False),
    Column("format", String(8), nullable=False),  # csv | xlsx | pdf
    Column("frequency", String(8), nullable=False),  # daily | weekly | monthly
    Column("at_time", String(5), nullable=False),  # HH:MM in `timezone`
    Column("timezone", String(64), nullable=False),
    Column("weekday", Integer, nullable=True),  # weekly: 0 = Monday
    Column("monthday", Integer, nullable=True),  # monthly: 1..28
    Column("recipients", JSON, nullable=False),
    Column("skip_if_empty", Integer, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),  # failed runs in a row
    Column("paused", Integer, nullable=False, default=0),
    Column("next_run_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

report_runs = Table(
    "report_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("schedule_id", Integer, ForeignKey("report_schedules.id"), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("status", String(8), nullable=False),  # SENT | SKIPPED | FAILED
    Column("rows", Integer, nullable=False, default=0),
    Column("message", Text, nullable=True),
)

# Keyset pages of a campaign's actions by event date, lock date, partner + event date. Only
# columns that never change are indexed, so updates of amounts and states stay HOT.
Index("ix_actions_event", actions.c.campaign_id, actions.c.event_at, actions.c.id)
Index("ix_actions_lock", actions.c.campaign_id, actions.c.lock_at, actions.c.id)
Index("ix_actions_partner", actions.c.campaign_id, actions.c.partner_id, actions.c.event_at)


# Salesforce notifications already processed: a redelivery (same org, same notification id)
# changes nothing.
salesforce_notifications = Table(
    "salesforce_notifications",
    metadata,
    Column("org_id", String(18), primary_key=True),
    Column("notification_id", String(64), primary_key=True),
    Column("campaign_id", String(64), nullable=False),
    Column("record_id", String(64), nullable=True),
    Column("file_id", String(32), nullable=False),
    Column("status", String(12), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

# The newest modstamp processed per Salesforce record: an older notification changes nothing.
salesforce_records = Table(
    "salesforce_records",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("org_id", String(15), primary_key=True),
    Column("record_id", String(18), primary_key=True),
    Column("modstamp", UtcDateTime, nullable=False),
    Column("file_id", String(32), nullable=False),
)

# The reconciler's cursor per campaign: records modified after it are queried next time.
salesforce_cursors = Table(
    "salesforce_cursors",
    metadata,
    Column("campaign_id", String(64), primary_key=True),
    Column("modstamp", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
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
