"""What the read-side queries return and take: filters, rows, pages, keyset cursors."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from ingest.domain import error_type

ACTION_SORTS = ("event_at", "lock_at")
FILE_STATUSES = ("QUEUED", "PROCESSING", "COMPLETE", "FAILED", "DUPLICATE")
MAX_PAGE = 500
T = TypeVar("T")


@dataclass(frozen=True)
class ActionFilter:
    """Which actions of one campaign a listing shows; None/empty means "any"."""

    campaign_id: str
    states: tuple[str, ...] = ()
    partner_id: str | None = None
    event_type_id: int | None = None
    order_id: str | None = None
    action_id: str | None = None
    event_from: datetime | None = None  # inclusive
    event_to: datetime | None = None  # exclusive
    locks_within_days: int | None = None  # lock date between now and now + N days
    now: datetime | None = None  # "now" for locks_within_days (default: the current time)
    reversal_reason: str | None = None  # reversed with this reason (per the audit trail)


@dataclass(frozen=True)
class ActionRow:
    """One action as listed: money in integer cents, times aware UTC."""

    id: str
    campaign_id: str
    event_type_id: int
    order_id: str
    partner_id: str
    event_at: datetime
    lock_at: datetime
    currency: str
    amount: int
    payout: int
    customer_status: str | None
    state: str
    mod_count: int
    orig_amount: int
    orig_payout: int
    has_items: bool


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset listing: its rows and the cursor of the next page (None: last)."""

    rows: list[T]
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        """True when another page follows."""
        return self.next_cursor is not None


@dataclass(frozen=True)
class ActionItem:
    """One item of an action (money in cents)."""

    sku: str
    category: str | None
    quantity: int
    amount: int
    orig_quantity: int
    orig_amount: int


@dataclass(frozen=True)
class HistoryEntry:
    """One audit-trail entry of an action: what changed, why, who, through what."""

    at: datetime
    operation: str
    reason: str | None
    old_state: str
    new_state: str
    old_amount: int
    new_amount: int
    old_payout: int
    new_payout: int
    channel: str
    actor: str | None
    file_id: str | None
    line: int | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionDetail:
    """An action with its items and full history (oldest change first)."""

    action: ActionRow
    items: list[ActionItem]
    history: list[HistoryEntry]


@dataclass(frozen=True)
class FileFilter:
    """Which received files a listing shows; None/empty means "any"."""

    campaign_id: str | None = None
    statuses: tuple[str, ...] = ()
    channel: str | None = None
    received_from: datetime | None = None  # inclusive
    received_to: datetime | None = None  # exclusive


@dataclass(frozen=True)
class FileRow:
    """One received file as listed, with its counts by status and error type."""

    id: str
    campaign_id: str
    channel: str
    name: str
    sender: str | None
    peer: str | None
    size: int
    status: str
    received_at: datetime
    finished_at: datetime | None
    error_code: str | None
    error_message: str | None
    duplicate_of: str | None
    counts: dict[str, Any]
    meta: dict[str, Any]
    result_path: Path | None

    @property
    def rows(self) -> int:
        """Lines processed (applied + unchanged + errors)."""
        return int(self.counts.get("lines", 0))

    @property
    def by_status(self) -> dict[str, int]:
        """Counts by line status: APPLIED, UNCHANGED, ERROR."""
        c = self.counts
        names = (("APPLIED", "applied"), ("UNCHANGED", "unchanged"), ("ERROR", "errors"))
        return {k: int(c.get(n, 0)) for k, n in names}

    @property
    def errors_by_type(self) -> dict[str, int]:
        """Error lines by type: Validation and Contract."""
        out = {"Validation": 0, "Contract": 0}
        for code, n in (self.counts.get("by_error_code") or {}).items():
            out[error_type(code)] += int(n)
        return out


@dataclass(frozen=True)
class LineError:
    """One error line of a file's result."""

    line: int
    error_type: str
    code: str
    message: str
    action_id: str
    cells: dict[str, str]


# --- cursors -------------------------------------------------------------------------------


def encode_cursor(value: datetime | str, row_id: str) -> str:
    """An opaque cursor for the row after (value, id)."""
    text = value.isoformat() if isinstance(value, datetime) else value
    return base64.urlsafe_b64encode(json.dumps([text, row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str] | None:
    """(value, id) of a cursor, or None when it is not one of ours (a tampered URL: page 1)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, row_id = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return (value, row_id) if isinstance(value, str) and isinstance(row_id, str) else None
