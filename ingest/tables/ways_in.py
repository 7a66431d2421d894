"""The tables of the other ways in: the impact-compatible API, the web console, Salesforce."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from ingest.tables.base import UtcDateTime, metadata

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
