"""Numbered pages with a bounded total, for the impact-compatible API's Page/PageSize."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from ingest import tables as t
from ingest.queries.actions import _action_where, _row
from ingest.queries.files import _file_query, _file_row
from ingest.queries.types import (
    ActionFilter,
    ActionRow,
    FileRow,
    HistoryEntry,
)

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
