"""Property: over random ledgers and return files, the engine equals a small row-by-row model."""

from __future__ import annotations

import copy
import csv
import io
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from ingest import config
from ingest import tables as t
from ingest.files import FileRecord
from ingest.results import ResultStore
from ingest.spool import Spool
from ingest.store import Store, make_engine
from ingest.worker import process_file
from tests.conftest import campaign_dict

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
REASONS = (
    "ITEM_RETURNED",
    "ORDER_UPDATE",
    "CONS_FRAUD",
    "RESET",
    "APPROVED",
    "DAMAGED",
    "FRAUD_X",
    "OK_EARLY",
    "NOPE",
)
CUSTOM = {"DAMAGED": "modify", "FRAUD_X": "reverse", "OK_EARLY": "approve"}
# tracker → (kind, fixed payout cents or None, percent × 10,000)
TRACKERS = {
    101: ("sale", None, 100_000),
    102: ("lead", 500, 0),
    103: ("cpc", 25, 0),
    104: ("sale", None, 75_000),
}
OTHER_CAMPAIGN_TRACKER = 9001


@dataclass
class Item:
    """One item of a model action."""

    qty: int
    amount: int
    orig_qty: int
    orig_amount: int
    category: str | None = None


@dataclass
class Act:
    """A model action."""

    id: str
    tracker: int
    order: str
    event_at: datetime
    amount: int
    payout: int
    state: str
    mods: int
    locked: bool
    status: str | None = None
    items: dict[str, Item] = field(default_factory=dict)
    orig: tuple[int, int, str | None] = (0, 0, None)


def payout_for(tracker: int, amount: int) -> int:
    """The model's payout rule."""
    _, fixed, pct = TRACKERS[tracker]
    return fixed if fixed is not None else (amount * pct + 500_000) // 1_000_000


def model(actions: dict[str, Act], rows: list[dict[str, str]], item_file: bool) -> list[tuple]:
    """Apply rows one by one, as the returns-file rules read; (status, code, action id) per row."""
    out = []
    for row in rows:
        out.append(model_row(actions, row, item_file))
    return out


def model_row(actions: dict[str, Act], row: dict[str, str], item_file: bool) -> tuple:
    aid, oid, tr = row.get("ActionId", ""), row.get("Oid", ""), row.get("ActionTrackerId", "")
    reason, amount = row.get("Reason", ""), row.get("Amount", "")
    sku, qty = row.get("Sku", ""), row.get("Quantity", "")
    if not aid and (bool(oid) != bool(tr) or not oid):
        return ("ERROR", "MISSING_IDENTIFIER", None)
    if reason not in CUSTOM and reason not in REASONS[:5]:
        return ("ERROR", "UNKNOWN_REASON", None)
    order_amount = "" if item_file else amount
    if order_amount and order_amount.count(".") == 1 and len(order_amount.split(".")[1]) > 2:
        return ("ERROR", "MALFORMED", None)
    is_item = item_file and bool(sku)
    if is_item and not qty:
        return ("ERROR", "MALFORMED", None)
    effect = {"RESET": "reset", "APPROVED": "approve"}.get(reason, CUSTOM.get(reason, "modify"))
    if not is_item and effect == "modify" and not order_amount and not row.get("CustomerStatus"):
        return ("ERROR", "MALFORMED", None)
    if not is_item and order_amount and effect in ("reverse", "approve", "reset"):
        return ("ERROR", "MALFORMED", None)  # the amount would be dropped
    if aid:
        act = actions.get(aid)
    else:
        tracker = int(tr)
        if tracker == OTHER_CAMPAIGN_TRACKER:
            return ("ERROR", "ACTIONTRACKER_CAMPAIGN_MISMATCH", None)
        if tracker not in TRACKERS:
            return ("ERROR", "ACTIONTRACKER_NOT_FOUND", None)
        same = [a for a in actions.values() if a.order == oid and a.tracker == tracker]
        act = max(same, key=lambda a: (a.event_at, a.id)) if same else None
    if act is None:
        return ("ERROR", "ACTION_NOT_FOUND", None)
    cents = int(Decimal(order_amount) * 100) if order_amount else None
    op = effect
    new_items: dict[str, tuple[int, int]] = {}
    if is_item and effect == "modify":
        if sku not in act.items:
            return _guarded(act, "modify", "ITEM_NOT_FOUND")
        item = act.items[sku]
        q = int(qty)
        if amount:
            line = int(Decimal(amount) * 100)
        else:
            bq, ba = (item.qty, item.amount) if item.qty else (item.orig_qty, item.orig_amount)
            line = (2 * ba * q + bq) // (2 * bq) if bq else 0
        new_items = {s: (i.qty, i.amount) for s, i in act.items.items()}
        new_items[sku] = (q, line)
        cents = sum(a for _, a in new_items.values())
        op = "reverse" if all(q == 0 for q, _ in new_items.values()) else "modify"
    elif effect == "modify" and cents == 0 and (act.amount != 0 or act.state == "REVERSED"):
        op = "reverse"
    guard = _guard(act, op, row)
    if guard:
        return ("ERROR", guard, act.id)
    return _apply(act, op, cents, row.get("CustomerStatus") or None, new_items)


def _guard(act: Act, op: str, row: dict[str, str]) -> str | None:
    kind = TRACKERS[act.tracker][0]
    if act.locked or act.state in ("APPROVED", "LOCKED"):
        return "ACTION_LOCKED"
    if kind == "cpc" and op in ("modify", "reverse"):
        return "CPC_NOT_SUPPORTED"
    if act.state == "REVERSED" and op in ("modify", "approve"):
        return "ACTION_REVERSED"
    if op == "reverse" and row.get("CustomerStatus") and act.state != "REVERSED":
        return "MALFORMED"
    if op == "modify" and act.mods >= 1000:
        return "MODIFICATION_LIMIT"
    return None


def _guarded(act: Act, op: str, last: str) -> tuple:
    return ("ERROR", _guard(act, op, {}) or last, act.id)


def _apply(
    act: Act, op: str, cents: int | None, status: str | None, new_items: dict[str, tuple[int, int]]
) -> tuple:
    before = (
        act.amount,
        act.payout,
        act.state,
        act.status,
        {s: (i.qty, i.amount) for s, i in act.items.items()},
    )
    if op == "reverse":
        if act.state == "REVERSED":
            return ("UNCHANGED", None, act.id)
        act.amount, act.payout, act.state = 0, 0, "REVERSED"
        for s, (q, a) in new_items.items():
            act.items[s].qty, act.items[s].amount = q, a
    elif op == "approve":
        act.state = "APPROVED"
    elif op == "reset":
        act.amount, act.payout, act.status = act.orig
        act.state = "PENDING"
        for i in act.items.values():
            i.qty, i.amount = i.orig_qty, i.orig_amount
    else:
        assert cents is not None or status is not None
        act.amount = cents if cents is not None else act.amount
        act.payout = payout_for(act.tracker, act.amount)
        act.status = status if status is not None else act.status
        for s, (q, a) in new_items.items():
            act.items[s].qty, act.items[s].amount = q, a
    after = (
        act.amount,
        act.payout,
        act.state,
        act.status,
        {s: (i.qty, i.amount) for s, i in act.items.items()},
    )
    if after == before:
        return ("UNCHANGED", None, act.id)
    if op == "modify":
        act.mods += 1
    return ("APPLIED", None, act.id)


# ---- strategies -------------------------------------------------------------------------------

ids = st.sampled_from([f"A{i}" for i in range(8)])
money = st.sampled_from(["0", "0.00", "10.00", "25.5", "99.99", "100", "1.234", "7.01"])


@st.composite
def ledgers(draw: Any) -> dict[str, Act]:
    acts = {}
    for i in range(draw(st.integers(1, 8))):
        tracker = draw(st.sampled_from(sorted(TRACKERS)))
        amount = draw(st.sampled_from([0, 1000, 2550, 9999, 12345]))
        pay = payout_for(tracker, amount)
        state = draw(st.sampled_from(["PENDING"] * 6 + ["REVERSED", "APPROVED", "LOCKED"]))
        act = Act(
            id=f"A{i}",
            tracker=tracker,
            order=draw(st.sampled_from(["O1", "O2", "O3"])),
            event_at=NOW - timedelta(days=draw(st.integers(0, 5)), minutes=i),
            amount=0 if state == "REVERSED" else amount,
            payout=0 if state == "REVERSED" else pay,
            state=state,
            mods=draw(st.sampled_from([0, 0, 0, 999, 1000])),
            locked=draw(st.booleans()) and draw(st.booleans()),
            status=draw(st.sampled_from([None, "NEW"])),
            orig=(amount, pay, None),
        )
        act.orig = (amount, pay, act.status)
        if draw(st.booleans()):
            qtys = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
            split = [amount // len(qtys)] * len(qtys)
            split[0] += amount - sum(split)
            act.items = {
                f"S{k}": Item(q, a, q, a) for k, (q, a) in enumerate(zip(qtys, split, strict=True))
            }
            if state == "REVERSED":
                act.items = {s: Item(0, 0, i.orig_qty, i.orig_amount) for s, i in act.items.items()}
        acts[act.id] = act
    return acts


@st.composite
def order_rows(draw: Any) -> dict[str, str]:
    row: dict[str, str] = {}
    if draw(st.integers(0, 9)) < 7:
        row["ActionId"] = draw(ids)
    elif draw(st.booleans()):
        row["Oid"] = draw(st.sampled_from(["O1", "O2", "O3", "O9"]))
        row["ActionTrackerId"] = str(draw(st.sampled_from([101, 102, 103, 104, 555, 9001])))
    row["Reason"] = draw(st.sampled_from(REASONS))
    row["Amount"] = draw(st.one_of(money, st.just("")))
    row["CustomerStatus"] = draw(st.sampled_from(["", "", "", "EXISTING"]))
    return row


@st.composite
def item_rows(draw: Any) -> dict[str, str]:
    row = {"ActionId": draw(ids), "Reason": draw(st.sampled_from(REASONS))}
    row["Sku"] = draw(st.sampled_from(["S0", "S1", "S2", "S7", ""]))
    row["Quantity"] = draw(st.sampled_from(["0", "1", "2", "3", ""]))
    row["Amount"] = draw(st.sampled_from(["", "", "5.00", "0"]))
    return row


def as_csv(rows: list[dict[str, str]], columns: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue().encode()


# ---- the test ---------------------------------------------------------------------------------


class Harness:
    """One SQLite database reused across examples (cleared each time)."""

    def __init__(self, folder: Path) -> None:
        other = campaign_dict("other")
        other["event_types"] = [
            {
                "id": OTHER_CAMPAIGN_TRACKER,
                "name": "x",
                "kind": "sale",
                "payout": {"type": "percent", "value": "5"},
                "locking": {"days": 5},
            }
        ]
        self.settings = config.from_dict(
            {
                "database_url": f"sqlite:///{folder / 'p.db'}",
                "spool_dir": str(folder / "spool"),
                "results_dir": str(folder / "results"),
                "campaigns": [campaign_dict(), other],
            },
            base_dir=folder,
        )
        self.store = Store(make_engine(self.settings.database_url))
        t.metadata.create_all(self.store.engine)
        self.store.sync_campaigns(self.settings)
        self.spool = Spool(self.settings, self.store)

    def load(self, acts: dict[str, Act]) -> None:
        with self.store.begin() as conn:
            for table in (t.actions, t.action_items, t.audit, t.files, t.file_hashes, t.results):
                conn.execute(delete(table))
            for a in acts.values():
                conn.execute(
                    t.actions.insert(),
                    {
                        "id": a.id,
                        "campaign_id": "acme",
                        "event_type_id": a.tracker,
                        "order_id": a.order,
                        "partner_id": "P",
                        "event_at": a.event_at,
                        "lock_at": NOW - timedelta(days=1) if a.locked else NOW + timedelta(days=9),
                        "currency": "USD",
                        "amount": a.amount,
                        "payout": a.payout,
                        "customer_status": a.status,
                        "state": a.state,
                        "mod_count": a.mods,
                        "orig_amount": a.orig[0],
                        "orig_payout": a.orig[1],
                        "orig_customer_status": a.orig[2],
                        "has_items": int(bool(a.items)),
                    },
                )
                for sku, i in a.items.items():
                    conn.execute(
                        t.action_items.insert(),
                        {
                            "action_id": a.id,
                            "sku": sku,
                            "category": None,
                            "quantity": i.qty,
                            "amount": i.amount,
                            "orig_quantity": i.orig_qty,
                            "orig_amount": i.orig_amount,
                        },
                    )

    def run(self, data: bytes) -> tuple[list[tuple], dict[str, tuple]]:
        acc = self.spool.accept("acme", "cli", "r.csv", data)
        rec = FileRecord(
            acc.file_id,
            "acme",
            "cli",
            "r.csv",
            None,
            Path(self.settings.spool_dir) / "acme" / acc.file_id,
        )
        process_file(self.store, self.settings, rec, now=NOW)
        out = ResultStore(self.store).outcome(acc.file_id)
        assert out is not None and out.status == "COMPLETE", out
        result = list(csv.DictReader(io.StringIO((out.result_csv() or b"").decode())))
        lines = [
            (r["Status"], r["ErrorCode"] or None, r["ResolvedActionId"] or None) for r in result
        ]
        with self.store.read() as conn:
            ledger: dict[str, tuple[Any, ...]] = {
                r.id: (r.amount, r.payout, r.state, r.mod_count, r.customer_status)
                for r in conn.execute(select(t.actions))
            }
            items = conn.execute(select(t.action_items)).all()
        for it in items:
            ledger[f"{it.action_id}/{it.sku}"] = (it.quantity, it.amount)
        return lines, ledger


def expected_ledger(acts: dict[str, Act]) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for a in acts.values():
        out[a.id] = (a.amount, a.payout, a.state, a.mods, a.status)
        for sku, i in a.items.items():
            out[f"{a.id}/{sku}"] = (i.qty, i.amount)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(acts=ledgers(), data=st.data())
def test_engine_matches_model(acts: dict[str, Act], data: Any) -> None:
    item_file = data.draw(st.booleans())
    rows = data.draw(st.lists(item_rows() if item_file else order_rows(), min_size=1, max_size=25))
    columns = (
        ["ActionId", "Sku", "Quantity", "Amount", "Reason"]
        if item_file
        else ["ActionId", "Oid", "ActionTrackerId", "Amount", "CustomerStatus", "Reason"]
    )
    with tempfile.TemporaryDirectory() as folder:
        h = Harness(Path(folder))
        h.load(acts)
        lines, ledger = h.run(as_csv(rows, columns))
        h.store.dispose()
    want_acts = copy.deepcopy(acts)
    want = model(want_acts, rows, item_file)
    assert lines == want
    assert ledger == expected_ledger(want_acts)
