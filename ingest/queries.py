"""Read-side queries over the store: actions (filtered, keyset-paged), one action with its history,
files (filtered, keyset-paged) and a file's line errors.

Plain functions over `ingest.tables` taking an open connection (`Store.read()`), shared by the web
console and the impact-compatible API so both list the same rows the same way. Every function takes
the campaigns the caller may see (`campaigns=None`: all, for operators); a row outside them is
simply not found, which the callers turn into a 404.

Pagination is by keyset, never OFFSET and never a COUNT(*) over a campaign: a page is the rows after
a cursor in (sort column, id) order, one row more is read to tell whether another page follows.
"""

from __future__ import annotations

import base64
import codecs
import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Select, and_, func, literal_column, or_, select

from ingest import tables as t
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


# --- actions -------------------------------------------------------------------------------


def _action_where(q: Select[Any], f: ActionFilter) -> Select[Any]:
    a = t.actions.c
    q = q.where(a.campaign_id == f.campaign_id)
    if f.states:
        q = q.where(a.state.in_(f.states))
    if f.partner_id:
        q = q.where(a.partner_id == f.partner_id)
    if f.event_type_id is not None:
        q = q.where(a.event_type_id == f.event_type_id)
    if f.order_id:
        q = q.where(a.order_id == f.order_id)
    if f.action_id:
        q = q.where(a.id == f.action_id)
    if f.event_from:
        q = q.where(a.event_at >= f.event_from)
    if f.event_to:
        q = q.where(a.event_at < f.event_to)
    if f.locks_within_days is not None:
        now = f.now or datetime.now(UTC)
        q = q.where(a.lock_at > now, a.lock_at <= now + timedelta(days=f.locks_within_days))
    if f.reversal_reason:
        u = t.audit.c
        q = q.where(
            select(u.id)
            .where(u.action_id == a.id, u.new_state == "REVERSED", u.reason == f.reversal_reason)
            .exists()
        )
    return q


def _row(r: Any) -> ActionRow:
    m = r._mapping
    return ActionRow(
        id=m["id"],
        campaign_id=m["campaign_id"],
        event_type_id=m["event_type_id"],
        order_id=m["order_id"],
        partner_id=m["partner_id"],
        event_at=m["event_at"],
        lock_at=m["lock_at"],
        currency=m["currency"],
        amount=m["amount"],
        payout=m["payout"],
        customer_status=m["customer_status"],
        state=m["state"],
        mod_count=m["mod_count"],
        orig_amount=m["orig_amount"],
        orig_payout=m["orig_payout"],
        has_items=bool(m["has_items"]),
    )


def list_actions(
    conn: Connection,
    f: ActionFilter,
    *,
    sort: str = "event_at",
    descending: bool = True,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[ActionRow]:
    """One page of a campaign's actions matching `f`, in (sort, id) order, after `cursor`."""
    limit = max(1, min(limit, MAX_PAGE))
    q = page_query(conn.dialect.name, f, sort=sort, descending=descending, cursor=cursor,
                   limit=limit + 1)  # fmt: skip
    rows = [_row(r) for r in conn.execute(q)]
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(getattr(rows[-1], sort), rows[-1].id) if more and rows else None
    return Page(rows, nxt)


def page_query(
    dialect: str, f: ActionFilter, *, sort: str = "event_at", descending: bool = True,
    cursor: str | None = None, limit: int = 51,
) -> Select[Any]:  # fmt: skip
    """The SELECT of one keyset page (exposed so its query plan can be checked)."""
    if sort not in ACTION_SORTS:
        raise ValueError(f"sort must be one of {', '.join(ACTION_SORTS)}")
    col, ident = t.actions.c[sort], t.actions.c.id
    q = _action_where(select(t.actions), f)
    after = decode_cursor(cursor) if cursor else None
    if after is not None:
        value = datetime.fromisoformat(after[0])
        if descending:
            q = q.where(or_(col < value, and_(col == value, ident < after[1])))
        else:
            q = q.where(or_(col > value, and_(col == value, ident > after[1])))
    terms: tuple[Any, Any] = (col, ident)
    if dialect == "sqlite" and (f.order_id or f.partner_id or f.action_id):
        # Without statistics SQLite would rather read the index that yields the page's order
        # and scan a whole campaign for one order id or partner; an ORDER BY on expressions
        # (`+col`) no index can give makes it pick the selective index and sort a few rows.
        terms = (literal_column(f"+actions.{sort}"), literal_column("+actions.id"))
    order = tuple(c.desc() if descending else c.asc() for c in terms)
    return q.order_by(*order).limit(limit)


def iter_actions(
    conn: Connection, f: ActionFilter, *, sort: str = "event_at", descending: bool = True,
    chunk: int = 5000,
) -> Iterator[ActionRow]:  # fmt: skip
    """Every action matching `f` in listing order, read a keyset page at a time (for exports)."""
    cursor: str | None = None
    while True:
        page = list_actions(conn, f, sort=sort, descending=descending, cursor=cursor, limit=chunk)
        yield from page.rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def count_actions_upto(conn: Connection, f: ActionFilter, cap: int = 1000) -> tuple[int, bool]:
    """How many actions match `f`, counting at most `cap`; (n, True) when there are more."""
    inner = _action_where(select(t.actions.c.id), f).limit(cap + 1).subquery()
    n = int(conn.scalar(select(func.count()).select_from(inner)) or 0)
    return min(n, cap), n > cap


def action_ids_matching(conn: Connection, f: ActionFilter, cap: int) -> list[str]:
    """Ids of the actions matching `f` (at most `cap`, newest first): for bulk changes."""
    q = _action_where(select(t.actions.c.id), f)
    q = q.order_by(t.actions.c.event_at.desc(), t.actions.c.id.desc()).limit(cap)
    return list(conn.scalars(q))


def action_campaign(conn: Connection, action_id: str) -> str | None:
    """The campaign an action belongs to, or None when there is no such action."""
    return conn.scalar(select(t.actions.c.campaign_id).where(t.actions.c.id == action_id))


def get_action(
    conn: Connection, action_id: str, campaigns: Sequence[str] | None = None
) -> ActionDetail | None:
    """An action with items and history; None when absent or outside `campaigns`."""
    q = select(t.actions).where(t.actions.c.id == action_id)
    if campaigns is not None:
        q = q.where(t.actions.c.campaign_id.in_(list(campaigns)))
    found = conn.execute(q).first()
    if found is None:
        return None
    i = t.action_items.c
    items = [
        ActionItem(r.sku, r.category, r.quantity, r.amount, r.orig_quantity, r.orig_amount)
        for r in conn.execute(
            select(t.action_items).where(i.action_id == action_id).order_by(i.sku)
        )
    ]
    return ActionDetail(_row(found), items, action_history(conn, action_id))


def action_history(conn: Connection, action_id: str) -> list[HistoryEntry]:
    """Every audit entry of an action, oldest first."""
    a = t.audit.c
    q = select(t.audit).where(a.action_id == action_id).order_by(a.id)
    return [
        HistoryEntry(
            at=r.at, operation=r.operation, reason=r.reason, old_state=r.old_state,
            new_state=r.new_state, old_amount=r.old_amount, new_amount=r.new_amount,
            old_payout=r.old_payout, new_payout=r.new_payout, channel=r.channel,
            actor=r.actor, file_id=r.file_id, line=r.line,
            detail=json.loads(r.detail) if r.detail else {},
        )
        for r in conn.execute(q)
    ]  # fmt: skip


def locking_soon(conn: Connection, campaigns: Sequence[str] | None, days: int = 7) -> int:
    """How many PENDING actions lock within `days` days (bounded to 100,000 counted)."""
    now = datetime.now(UTC)
    a = t.actions.c
    q = select(a.id).where(a.lock_at > now, a.lock_at <= now + timedelta(days=days))
    q = q.where(a.state == "PENDING")
    if campaigns is not None:
        q = q.where(a.campaign_id.in_(list(campaigns)))
    inner = q.limit(100_000).subquery()
    return int(conn.scalar(select(func.count()).select_from(inner)) or 0)


# --- files ---------------------------------------------------------------------------------


def _file_query() -> Select[Any]:
    return select(t.files, t.results.c.path.label("result_path")).outerjoin(
        t.results, t.results.c.file_id == t.files.c.id
    )


def _file_row(r: Any) -> FileRow:
    m = r._mapping
    return FileRow(
        id=m["id"], campaign_id=m["campaign_id"], channel=m["channel"], name=m["name"],
        sender=m["sender"], peer=m["peer"], size=m["size"], status=m["status"],
        received_at=m["received_at"], finished_at=m["finished_at"], error_code=m["error_code"],
        error_message=m["error_message"], duplicate_of=m["duplicate_of"],
        counts=_json(m["counts"]) or {}, meta=_json(m["meta"]) or {},
        result_path=Path(m["result_path"]) if m["result_path"] else None,
    )  # fmt: skip


def list_files(
    conn: Connection,
    f: FileFilter,
    campaigns: Sequence[str] | None = None,
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[FileRow]:
    """One page of received files, newest first, of `campaigns` (None: all) matching `f`."""
    limit = max(1, min(limit, MAX_PAGE))
    c = t.files.c
    q = _file_query()
    if campaigns is not None:
        q = q.where(c.campaign_id.in_(list(campaigns)))
    if f.campaign_id:
        q = q.where(c.campaign_id == f.campaign_id)
    if f.statuses:
        q = q.where(c.status.in_(f.statuses))
    if f.channel:
        q = q.where(c.channel == f.channel)
    if f.received_from:
        q = q.where(c.received_at >= f.received_from)
    if f.received_to:
        q = q.where(c.received_at < f.received_to)
    after = decode_cursor(cursor) if cursor else None
    if after is not None:
        q = q.where(c.id < after[1])  # ids sort by reception time
    rows = [_file_row(r) for r in conn.execute(q.order_by(c.id.desc()).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor("", rows[-1].id) if more and rows else None)


def get_file(
    conn: Connection, file_id: str, campaigns: Sequence[str] | None = None
) -> FileRow | None:
    """One received file; None when absent or outside `campaigns`."""
    q = _file_query().where(t.files.c.id == file_id)
    if campaigns is not None:
        q = q.where(t.files.c.campaign_id.in_(list(campaigns)))
    found = conn.execute(q).first()
    return _file_row(found) if found else None


def file_stats(
    conn: Connection, campaigns: Sequence[str] | None, since: datetime
) -> dict[str, Any]:
    """Files received since `since` by status, error lines, queue depth and oldest queued file."""
    c = t.files.c
    scope = [c.campaign_id.in_(list(campaigns))] if campaigns is not None else []
    by_status: dict[str, int] = dict(
        conn.execute(
            select(c.status, func.count()).where(c.received_at >= since, *scope).group_by(c.status)
        ).all()
    )
    queued = conn.execute(
        select(func.count(), func.min(c.received_at)).where(c.status == "QUEUED", *scope)
    ).one()
    lines = errors = 0
    for (counts,) in conn.execute(select(c.counts).where(c.received_at >= since, *scope)):
        doc = _json(counts) or {}
        lines += int(doc.get("lines", 0))
        errors += int(doc.get("errors", 0))
    return {
        "by_status": {k: int(v) for k, v in by_status.items()},
        "files": int(sum(by_status.values())),
        "queued": int(queued[0] or 0),
        "oldest_queued": queued[1],
        "lines": lines,
        "error_lines": errors,
        "undelivered": int(
            conn.scalar(
                select(func.count()).where(
                    c.delivered_at.is_(None), c.status.in_(("COMPLETE", "FAILED", "DUPLICATE")),
                    c.received_at >= since - timedelta(days=7), *scope,
                )
            ) or 0
        ),
    }  # fmt: skip


def line_errors(
    result_path: Path | None, kind: str | None = None, limit: int = 500
) -> tuple[list[LineError], int]:
    """The error lines of a result CSV file (`kind`: 'Validation' or 'Contract' only), and how
    many error lines of that kind there are in all."""
    if result_path is None or not result_path.exists():
        return [], 0
    return result_errors(result_path.read_bytes(), kind, limit)


def result_errors(
    result_csv: bytes, kind: str | None = None, limit: int = 500
) -> tuple[list[LineError], int]:
    """The error lines of a result CSV's bytes (e.g. a dry run's), and how many in all."""
    found: list[LineError] = []
    total = 0
    for cells in _result_rows(result_csv):
        if cells.get("Status") != "ERROR" or (kind and cells.get("ErrorType") != kind):
            continue
        total += 1
        if len(found) < limit:
            found.append(_line_error(cells))
    return found, total


def spool_path(conn: Connection, file_id: str) -> Path | None:
    """Where a file's received bytes are kept (a duplicate's: its first copy's), if still kept."""
    c = t.files.c
    row = conn.execute(select(c.spool_path, c.duplicate_of).where(c.id == file_id)).first()
    if row is None:
        return None
    raw = row[0]
    if not raw and row[1]:
        raw = conn.scalar(select(c.spool_path).where(c.id == row[1]))
    path = Path(raw) if raw else None
    return path if path is not None and path.exists() else None


def _line_error(cells: dict[str, str]) -> LineError:
    own = {k: v for k, v in cells.items() if k not in _RESULT_NAMES}
    return LineError(
        line=int(cells.get("Line") or 0),
        error_type=cells.get("ErrorType", ""),
        code=cells.get("ErrorCode", ""),
        message=cells.get("Message", ""),
        action_id=cells.get("ResolvedActionId", ""),
        cells=own,
    )


_RESULT_NAMES = frozenset(
    {"Line", "Status", "ErrorType", "ErrorCode", "Message", "ResolvedActionId", "State",
     "OldAmount", "NewAmount", "OldPayout", "NewPayout"}
)  # fmt: skip


def _result_rows(raw: bytes) -> Iterator[dict[str, str]]:
    """Rows of a result CSV in whatever dialect it answers (encoding with or without BOM)."""
    text = _decode(raw)
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t|", key=first.count)
    yield from csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)


def _decode(raw: bytes) -> str:
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if raw.startswith(bom):
            return raw.decode("utf-16" if name == "utf-16" else "utf-8-sig")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


__all__ = [
    "ActionDetail",
    "ActionFilter",
    "ActionItem",
    "ActionRow",
    "FileFilter",
    "FileRow",
    "HistoryEntry",
    "LineError",
    "Page",
    "action_campaign",
    "action_history",
    "action_ids_matching",
    "count_actions_upto",
    "decode_cursor",
    "encode_cursor",
    "file_stats",
    "get_action",
    "get_file",
    "iter_actions",
    "last_job_run",
    "line_errors",
    "list_actions",
    "list_files",
    "locking_soon",
    "page_query",
    "result_errors",
    "spool_path",
]


def last_job_run(conn: Connection, job_id: str) -> datetime | None:
    """When a scheduled job (e.g. "lock") last ran successfully, or None."""
    return conn.scalar(select(t.job_runs.c.last_run_at).where(t.job_runs.c.job_id == job_id))


# --- numbered pages (the impact-compatible API: Page/PageSize with a bounded total) ------------


def last_update() -> Any:
    """An action's last update: its newest audit entry, or its event time when never changed."""
    newest = (
        select(func.max(t.audit.c.at))
        .where(t.audit.c.action_id == t.actions.c.id)
        .correlate(t.actions)
        .scalar_subquery()
    )
    return func.coalesce(newest, t.actions.c.event_at)


@dataclass(frozen=True)
class Window:
    """A time range, both ends inclusive; None: open."""

    start: datetime | None = None
    end: datetime | None = None

    def where(self, column: Any) -> list[Any]:
        """The conditions that keep `column` inside the range."""
        out = []
        if self.start is not None:
            out.append(column >= self.start)
        if self.end is not None:
            out.append(column <= self.end)
        return out


def page_actions(
    conn: Connection,
    f: ActionFilter,
    *,
    updated: Window = Window(),
    locking: Window = Window(),
    offset: int = 0,
    limit: int = 100,
    count_cap: int = 1_000_000,
) -> tuple[list[tuple[ActionRow, datetime]], int]:
    """A numbered page of `f`'s actions newest first, each with its last update, and the total
    (counted up to `count_cap` + 1, so a caller can refuse a listing that is too long)."""
    a = t.actions.c
    updated_at = last_update().label("updated_at")
    q = _action_where(select(t.actions, updated_at), f)
    q = q.where(*updated.where(updated_at), *locking.where(a.lock_at))
    inner = q.with_only_columns(a.id).limit(count_cap + 1).subquery()
    total = int(conn.scalar(select(func.count()).select_from(inner)) or 0)
    q = q.order_by(a.event_at.desc(), a.id.desc()).offset(offset).limit(limit)
    return [(_row(r), r._mapping["updated_at"]) for r in conn.execute(q)], total


@dataclass(frozen=True)
class UpdateRow:
    """One audit entry with the action's campaign, tracker and order id."""

    id: int
    action_id: str
    campaign_id: str
    event_type_id: int
    order_id: str
    entry: HistoryEntry


def page_action_updates(
    conn: Connection,
    campaigns: Sequence[str],
    *,
    action_id: str | None = None,
    at: Window = Window(),
    offset: int = 0,
    limit: int = 100,
    count_cap: int = 1_000_000,
) -> tuple[list[UpdateRow], int]:
    """A numbered page of the audit trail of `campaigns`' actions (oldest first) and the total."""
    u, a = t.audit.c, t.actions.c
    q = (
        select(t.audit, a.campaign_id, a.event_type_id, a.order_id)
        .join(t.actions, a.id == u.action_id)
        .where(a.campaign_id.in_(list(campaigns)), *at.where(u.at))
    )
    if action_id:
        q = q.where(u.action_id == action_id)
    inner = q.with_only_columns(u.id).limit(count_cap + 1).subquery()
    total = int(conn.scalar(select(func.count()).select_from(inner)) or 0)
    rows = conn.execute(q.order_by(u.id).offset(offset).limit(limit))
    return [_update_row(r) for r in rows], total


def _update_row(r: Any) -> UpdateRow:
    entry = HistoryEntry(
        at=r.at, operation=r.operation, reason=r.reason, old_state=r.old_state,
        new_state=r.new_state, old_amount=r.old_amount, new_amount=r.new_amount,
        old_payout=r.old_payout, new_payout=r.new_payout, channel=r.channel, actor=r.actor,
        file_id=r.file_id, line=r.line, detail=json.loads(r.detail) if r.detail else {},
    )  # fmt: skip
    return UpdateRow(r.id, r.action_id, r.campaign_id, r.event_type_id, r.order_id, entry)


def page_files(
    conn: Connection,
    campaigns: Sequence[str],
    *,
    received: Window = Window(),
    finished: Window = Window(),
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[FileRow], int]:
    """A numbered page of `campaigns`' files (from every channel), newest first, and the total."""
    c = t.files.c
    scope = [c.campaign_id.in_(list(campaigns)), *received.where(c.received_at),
             *finished.where(c.finished_at)]  # fmt: skip
    total = int(conn.scalar(select(func.count()).select_from(t.files).where(*scope)) or 0)
    q = _file_query().where(*scope).order_by(c.id.desc()).offset(offset).limit(limit)
    return [_file_row(r) for r in conn.execute(q)], total
