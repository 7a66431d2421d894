"""Actions for console tests and the console benchmark: many rows, inserted in bulk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ingest import tables as t
from ingest.store import Store


def seed_actions(
    store: Store,
    campaign: str = "acme",
    n: int = 100,
    *,
    tracker: int = 101,
    start: datetime | None = None,
    prefix: str | None = None,
    items: bool = True,
    partners: int = 50,
    partner_prefix: str = "P",
    step: timedelta = timedelta(minutes=1),
    chunk: int = 20_000,
) -> list[str]:
    """Insert `n` PENDING sale actions (10% payout) `step` apart, locking 27 days after the
    event; every tenth gets two items. Ids `<prefix>-<k>` (prefix defaults to the campaign)."""
    start = start or datetime.now(UTC) - timedelta(days=20)
    orders = "O" if prefix is None else f"{prefix}-O"
    prefix = prefix or campaign.upper()
    ids: list[str] = []
    batch: list[dict[str, Any]] = []
    item_rows: list[dict[str, Any]] = []
    for k in range(n):
        aid = f"{prefix}-{k:07d}"
        at = start + k * step
        amount = 1000 + (k % 500) * 100
        has = items and k % 10 == 0
        batch.append({
            "id": aid, "campaign_id": campaign, "event_type_id": tracker,
            "order_id": f"{orders}{k:07d}", "partner_id": f"{partner_prefix}{k % partners:03d}",
            "event_at": at,
            "lock_at": at + timedelta(days=27), "currency": "USD", "amount": amount,
            "payout": amount // 10, "customer_status": "NEW", "state": "PENDING",
            "mod_count": 0, "orig_amount": amount, "orig_payout": amount // 10,
            "orig_customer_status": "NEW", "has_items": int(has)})  # fmt: skip
        if has:
            half = amount // 2
            for sku, amt in (("SKU-A", half), ("SKU-B", amount - half)):
                item_rows.append({"action_id": aid, "sku": sku, "category": "shoes",
                                  "quantity": 1, "amount": amt, "orig_quantity": 1,
                                  "orig_amount": amt})  # fmt: skip
        ids.append(aid)
        if len(batch) >= chunk:
            _insert(store, batch, item_rows)
            batch, item_rows = [], []
    _insert(store, batch, item_rows)
    return ids


def _insert(store: Store, batch: list[dict[str, Any]], item_rows: list[dict[str, Any]]) -> None:
    if not batch:
        return
    with store.begin() as conn:
        conn.execute(t.actions.insert(), batch)
        if item_rows:
            conn.execute(t.action_items.insert(), item_rows)
