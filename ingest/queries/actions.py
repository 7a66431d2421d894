"""Actions: filtered keyset pages, one action with its items and history, what locks soon."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, and_, func, literal_column, or_, select

from ingest import tables as t
from ingest.queries.types import (
    ACTION_SORTS,
    MAX_PAGE,
    ActionDetail,
    ActionFilter,
    ActionItem,
    ActionRow,
    HistoryEntry,
    Page,
    decode_cursor,
    encode_cursor,
)

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


def last_job_run(conn: Connection, job_id: str) -> datetime | None:
    """When a scheduled job (e.g. "lock") last ran successfully, or None."""
    return conn.scalar(select(t.job_runs.c.last_run_at).where(t.job_runs.c.job_id == job_id))
