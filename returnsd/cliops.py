"""What the CLI does beyond parsing arguments: one-shot ingest, action listings and exports."""

from __future__ import annotations

import csv
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ingest import tables as t
from ingest.checking import DryRun, check_file
from ingest.config import Settings
from ingest.domain import money_text
from ingest.files import FileLifecycle
from ingest.results import FileOutcome, ResultStore
from ingest.spool import PROCESSING, QUEUED, Spool
from ingest.store import Store
from ingest.worker import Worker

EXPORT_COLUMNS = (
    "ActionId",
    "CampaignId",
    "ActionTrackerId",
    "OrderId",
    "PartnerId",
    "EventDate",
    "LockDate",
    "Amount",
    "Currency",
    "Payout",
    "CustomerStatus",
    "State",
    "Modifications",
    "OriginalAmount",
    "OriginalPayout",
)


MONEY_COLUMNS = frozenset({"Amount", "Payout", "OriginalAmount", "OriginalPayout"})


class TerminalProgress:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.last = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Show `stage` at done/total."""
        if not self.enabled or total < 10_000:
            return
        line = f"\r{stage:<6} {100 * done // max(total, 1):3d}% ({done:,}/{total:,})"
        if line != self.last:
            sys.stderr.write(line)
            sys.stderr.flush()
            self.last = line

    def close(self) -> None:
        """End the progress line."""
        if self.enabled and self.last:
            sys.stderr.write("\n")


def ingest_file(
    settings: Settings,
    store: Store,
    path: Path,
    campaign_id: str,
    sender: str,
    progress: bool = False,
) -> FileOutcome:
    """Spool a local file and process it now (the same path as every channel)."""
    spool = Spool(settings, store)
    accepted = spool.accept(campaign_id, "cli", path.name, path, sender=sender, peer="local")
    if accepted.status in (QUEUED, PROCESSING):
        _run_now(settings, store, accepted.file_id, progress)
    outcome = ResultStore(store).outcome(accepted.file_id)
    assert outcome is not None
    return outcome


def _run_now(settings: Settings, store: Store, file_id: str, progress: bool) -> None:
    worker = Worker(settings, store)
    worker.recover()
    rec = worker.claim(file_id)
    if rec is None:
        worker.wait_finished(file_id)
        return
    bar = TerminalProgress() if progress else None
    worker.process(rec, progress=bar)
    if bar:
        bar.close()


def dry_run_file(settings: Settings, store: Store, path: Path, campaign_id: str) -> DryRun:
    """Check a local file without applying or recording it: its summary and result CSV."""
    return check_file(settings, store, campaign_id, path.name, path.read_bytes())


def reprocess_file(
    settings: Settings, store: Store, file_id: str, actor: str
) -> FileOutcome | None:
    """Queue a FAILED or DUPLICATE file again and process it now; its outcome (None: no file)."""
    if FileLifecycle(store).reprocess(file_id, actor) is None:
        return None
    _run_now(settings, store, file_id, progress=False)
    return ResultStore(store).outcome(file_id)


def _action_doc(r: Any) -> dict[str, Any]:
    return {
        "ActionId": r.id,
        "CampaignId": r.campaign_id,
        "ActionTrackerId": r.event_type_id,
        "OrderId": r.order_id,
        "PartnerId": r.partner_id,
        "EventDate": r.event_at.isoformat(),
        "LockDate": r.lock_at.isoformat(),
        "Amount": money_text(r.amount),
        "Currency": r.currency,
        "Payout": money_text(r.payout),
        "CustomerStatus": r.customer_status or "",
        "State": r.state,
        "Modifications": r.mod_count,
        "OriginalAmount": money_text(r.orig_amount),
        "OriginalPayout": money_text(r.orig_payout),
    }


def _listed(q: Any, campaign_id: str | None, state: str | None, order_id: str | None) -> Any:
    if campaign_id:
        q = q.where(t.actions.c.campaign_id == campaign_id)
    if state:
        q = q.where(t.actions.c.state == state.upper())
    if order_id:
        q = q.where(t.actions.c.order_id == order_id)
    return q


def list_actions(
    store: Store,
    campaign_id: str | None,
    state: str | None,
    order_id: str | None,
    limit: int | None,
) -> list[dict[str, Any]]:
    """Actions matching the filters in id order, as export-shaped dicts (all when limit=None)."""
    q = _listed(
        select(t.actions).order_by(t.actions.c.id).limit(limit), campaign_id, state, order_id
    )
    with store.read() as conn:
        return [_action_doc(r) for r in conn.execute(q)]


def count_listed(
    store: Store, campaign_id: str | None, state: str | None, order_id: str | None
) -> int:
    """How many actions match the filters of `list_actions`."""
    q = _listed(select(func.count()).select_from(t.actions), campaign_id, state, order_id)
    with store.read() as conn:
        return int(conn.scalar(q) or 0)


def campaign_of(store: Store, action_id: str) -> str | None:
    """The campaign an action belongs to, or None."""
    with store.read() as conn:
        return conn.scalar(select(t.actions.c.campaign_id).where(t.actions.c.id == action_id))


def show_action(store: Store, action_id: str) -> dict[str, Any] | None:
    """An action, its items and its audit history, oldest change first."""
    with store.read() as conn:
        row = conn.execute(select(t.actions).where(t.actions.c.id == action_id)).first()
        if row is None:
            return None
        items = (
            conn.execute(
                select(t.action_items)
                .where(t.action_items.c.action_id == action_id)
                .order_by(t.action_items.c.sku)
            )
            .mappings()
            .all()
        )
        history = (
            conn.execute(
                select(t.audit).where(t.audit.c.action_id == action_id).order_by(t.audit.c.id)
            )
            .mappings()
            .all()
        )
    doc = _action_doc(row)
    doc["Items"] = [
        {
            "Sku": i["sku"],
            "Category": i["category"],
            "Quantity": i["quantity"],
            "Amount": money_text(i["amount"]),
            "OriginalQuantity": i["orig_quantity"],
            "OriginalAmount": money_text(i["orig_amount"]),
        }
        for i in items
    ]
    doc["History"] = [
        {
            "at": h["at"].isoformat(),
            "operation": h["operation"],
            "reason": h["reason"],
            "old_state": h["old_state"],
            "new_state": h["new_state"],
            "old_amount": money_text(h["old_amount"]),
            "new_amount": money_text(h["new_amount"]),
            "old_payout": money_text(h["old_payout"]),
            "new_payout": money_text(h["new_payout"]),
            "file_id": h["file_id"],
            "line": h["line"],
            "channel": h["channel"],
            "actor": h["actor"],
            **(json.loads(h["detail"]) if h["detail"] else {}),
        }
        for h in history
    ]
    return doc


def export_actions(store: Store, campaign_id: str | None, fmt: str, output: Path) -> int:
    """Write actions to CSV or XLSX; return how many."""
    q = select(t.actions).order_by(t.actions.c.id)
    if campaign_id:
        q = q.where(t.actions.c.campaign_id == campaign_id)
    n = 0
    with store.read() as conn:
        rows = (_action_doc(r) for r in conn.execute(q))
        if fmt == "xlsx":
            from openpyxl import Workbook
            from openpyxl.cell import WriteOnlyCell

            wb = Workbook(write_only=True)
            ws = wb.create_sheet("actions")
            ws.append(list(EXPORT_COLUMNS))
            for doc in rows:
                cells: list[Any] = []
                for c in EXPORT_COLUMNS:
                    if c in MONEY_COLUMNS:
                        cell = WriteOnlyCell(ws, value=float(Decimal(doc[c])))
                        cell.number_format = "0.00"
                        cells.append(cell)
                    else:
                        cells.append(_cell(doc[c]))
                ws.append(cells)
                n += 1
            wb.save(output)
            return n
        with open(output, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS)
            writer.writeheader()
            for doc in rows:
                writer.writerow({c: _cell(doc[c]) for c in EXPORT_COLUMNS})
                n += 1
    return n


def _cell(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


__all__ = ["ResultStore", "export_actions", "ingest_file"]
