"""Operator work on actions: import, count, lock those due (changes: ingest.operations)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Connection, func, literal, select

from ingest import bulk
from ingest import tables as t
from ingest.config import Settings
from ingest.domain import APPROVED, LOCKED, PENDING, STATES
from ingest.errors import FileRejected
from ingest.store import Store
from parsers.base import ParseLimits, RawTable
from parsers.canonical import normalise
from parsers.readers import read_table

IMPORT_COLUMNS = (
    "ActionId",
    "CampaignId",
    "ActionTrackerId",
    "OrderId",
    "PartnerId",
    "EventDate",
    "Amount",
    "Currency",
    "Payout",
    "CustomerStatus",
)
ITEM_COLUMNS = ("ActionId", "Sku", "Category", "Quantity", "Amount")


@dataclass
class ImportReport:
    """What an import did: rows imported and the rejected lines with reasons."""

    imported: int
    items: int
    errors: list[tuple[int, str]]


def _cents(text: str) -> int:
    value = Decimal(text)
    if value < 0 or value != value.quantize(Decimal("0.01")) or value >= Decimal("100000000"):
        raise InvalidOperation
    return int(value * 100)


def _event_time(text: str, tz: ZoneInfo) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def _columns(
    raw: RawTable, wanted: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, int]:
    keys = {normalise(h): i for i, h in enumerate(raw.header)}
    missing = [c for c in wanted if normalise(c) not in keys and c not in optional]
    if missing:
        raise FileRejected("NO_HEADER", f"missing column(s): {', '.join(missing)}")
    return {c: keys[normalise(c)] for c in (*wanted,) if normalise(c) in keys}


def _cells(raw: RawTable, cols: dict[str, int]) -> Iterator[tuple[int, dict[str, str]]]:
    frame = raw.frame
    values = {
        c: frame.iloc[:, i].fillna("").astype(str).str.strip().tolist() for c, i in cols.items()
    }
    for k, line in enumerate(np.asarray(raw.lines).tolist()):
        yield int(line), {c: values[c][k] for c in cols}


def import_actions(
    store: Store, settings: Settings, path: Path, items_path: Path | None = None
) -> ImportReport:
    """Load actions (and items) from CSV/XLSX; lock dates derived from each event type's rule."""
    limits = ParseLimits(max_rows=10_000_000)
    raw = read_table(path.name, path.read_bytes(), limits)
    cols = _columns(raw, (*IMPORT_COLUMNS, "State"), optional=("State", "CustomerStatus"))
    errors: list[tuple[int, str]] = []
    rows: list[dict[str, Any]] = []
    with store.begin() as conn:
        rules = bulk.event_types(conn)
        for line, cell in _cells(raw, cols):
            try:
                rows.append(_action_row(settings, rules, cell))
            except (ValueError, InvalidOperation, KeyError) as exc:
                errors.append((line, _why(exc)))
        existing = _existing_ids(conn, [r["id"] for r in rows])
        fresh = [r for r in rows if r["id"] not in existing]
        errors.extend((0, f"ActionId {i} already exists; skipped") for i in sorted(existing))
        item_rows = _item_rows(items_path, {r["id"] for r in fresh}, errors) if items_path else []
        with_items = {r["action_id"] for r in item_rows}
        for r in fresh:
            r["has_items"] = int(r["id"] in with_items)
        for campaign_id in sorted({r["campaign_id"] for r in fresh}):
            store.sql.campaign_lock(conn, campaign_id)
        if fresh:
            conn.execute(t.actions.insert(), fresh)
        if item_rows:
            conn.execute(t.action_items.insert(), item_rows)
    return ImportReport(len(fresh), len(item_rows), errors)


def _why(exc: Exception) -> str:
    if isinstance(exc, InvalidOperation):
        return "Amount/Payout must be a non-negative number with at most 2 decimals"
    if isinstance(exc, KeyError):
        return f"unknown {exc.args[0]}"
    return str(exc)


def _action_row(settings: Settings, rules: dict[int, Any], cell: dict[str, str]) -> dict[str, Any]:
    campaign = settings.campaign(cell["CampaignId"])
    if campaign is None:
        raise KeyError(f"CampaignId {cell['CampaignId']!r}")
    if not cell["ActionTrackerId"].isdigit() or int(cell["ActionTrackerId"]) not in rules:
        raise KeyError(f"ActionTrackerId {cell['ActionTrackerId']!r}")
    rule = rules[int(cell["ActionTrackerId"])]
    if rule.campaign_id != campaign.id:
        raise ValueError("ActionTrackerId belongs to another campaign")
    if not cell["ActionId"] or len(cell["ActionId"]) > 64 or len(cell["OrderId"]) > 64:
        raise ValueError("ActionId (1–64 chars) and OrderId (≤ 64 chars) are required")
    state = (cell.get("State") or "PENDING").upper()
    if state not in STATES:
        raise ValueError(f"State must be one of {', '.join(STATES)}")
    if (cell["Currency"] or campaign.currency).upper() != campaign.currency:
        raise ValueError(f"Currency must be the campaign's ({campaign.currency})")
    event_at = _event_time(cell["EventDate"], campaign.tz)
    amount, payout = _cents(cell["Amount"]), _cents(cell["Payout"])
    status = cell.get("CustomerStatus") or None
    return {
        "id": cell["ActionId"],
        "campaign_id": campaign.id,
        "event_type_id": rule.id,
        "order_id": cell["OrderId"],
        "partner_id": cell["PartnerId"],
        "event_at": event_at,
        "lock_at": rule.lock_at(event_at, campaign.tz),
        "currency": campaign.currency,
        "amount": amount,
        "payout": payout,
        "customer_status": status,
        "state": state,
        "mod_count": 0,
        "orig_amount": amount,
        "orig_payout": payout,
        "orig_customer_status": status,
    }


def _existing_ids(conn: Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(ids), 900):
        chunk = ids[i : i + 900]
        found.update(conn.scalars(select(t.actions.c.id).where(t.actions.c.id.in_(chunk))))
    return found


def _item_rows(path: Path, ids: set[str], errors: list[tuple[int, str]]) -> list[dict[str, Any]]:
    raw = read_table(path.name, path.read_bytes(), ParseLimits(max_rows=50_000_000))
    cols = _columns(raw, ITEM_COLUMNS, optional=("Category",))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for line, cell in _cells(raw, cols):
        if cell["ActionId"] not in ids:
            continue
        try:
            qty = int(cell["Quantity"])
            if qty < 0:
                raise ValueError("Quantity must be ≥ 0")
            amount = _cents(cell["Amount"])
        except (ValueError, InvalidOperation) as exc:
            errors.append((line, f"items: {_why(exc)}"))
            continue
        rows[(cell["ActionId"], cell["Sku"])] = {
            "action_id": cell["ActionId"],
            "sku": cell["Sku"],
            "category": cell.get("Category") or None,
            "quantity": qty,
            "amount": amount,
            "orig_quantity": qty,
            "orig_amount": amount,
        }
    return list(rows.values())


def count_actions(store: Store, campaign_id: str | None = None) -> int:
    """How many actions the store holds (of one campaign)."""
    q = select(func.count()).select_from(t.actions)
    if campaign_id:
        q = q.where(t.actions.c.campaign_id == campaign_id)
    with store.read() as conn:
        return int(conn.scalar(q) or 0)


def _due(at: datetime) -> Any:
    """PENDING or APPROVED actions whose lock date is at or before `at`."""
    return t.actions.c.state.in_((PENDING, APPROVED)) & (t.actions.c.lock_at <= at)


def count_due(store: Store, at: datetime) -> int:
    """How many actions the lock job would lock as of `at`."""
    due = _due(at)
    with store.read() as conn:
        return int(conn.scalar(select(func.count()).select_from(t.actions).where(due)) or 0)


def lock_due(store: Store, at: datetime | None = None) -> int:
    """Lock every PENDING or APPROVED action whose lock date has passed; return how many."""
    at = at or datetime.now(UTC)
    a, h = t.actions.c, t.audit.c
    due = _due(at)
    with store.begin() as conn:
        copied = select(
            a.id, literal("scheduler"), literal("lock job"), literal("lock"), a.state,
            literal(LOCKED), a.amount, a.amount, a.payout, a.payout, literal(at, t.UtcDateTime),
        ).where(due)  # fmt: skip
        columns = [
            h.action_id, h.channel, h.actor, h.operation, h.old_state, h.new_state,
            h.old_amount, h.new_amount, h.old_payout, h.new_payout, h.at,
        ]  # fmt: skip
        conn.execute(t.audit.insert().from_select(columns, copied))
        done = conn.execute(t.actions.update().where(due).values(state=LOCKED))
        return int(done.rowcount)
