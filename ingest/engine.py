"""The engine: parse → match → plan → apply → record, for one spooled file, exactly once.

A file's changes, its audit rows, its result and its status commit in one transaction; a crash
before the commit leaves the ledger untouched and the file to be processed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, update

from ingest import ledger as lg
from ingest import tables as t
from ingest.config import Campaign, Settings
from ingest.domain import EventTypeRule
from ingest.errors import FileRejected
from ingest.report import LineOutcomes, write_result
from ingest.rules import (
    APPLIED,
    ERROR,
    OP_APPROVE,
    OP_MODIFY,
    OP_RESET,
    OP_REVERSE,
    OPS,
    S_REVERSED,
    STATE_NAMES,
    UNCHANGED,
    Ledger,
    Proposal,
    decide,
)
from ingest.store import Store
from parsers.base import ParseLimits, RawTable
from parsers.canonical import Canonical, canonicalise
from parsers.readers import read_table

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class FileRecord:
    """The spooled file the engine works on."""

    id: str  # "" for changes that did not come in a file
    campaign_id: str
    channel: str
    name: str
    sender: str | None
    spool_path: Path


@dataclass
class Job:
    """Everything one run of the pipeline reads and produces (the steps' shared context)."""

    file: FileRecord
    settings: Settings
    campaign: Campaign
    now: datetime
    progress: Progress
    timings: dict[str, float] = field(default_factory=dict)
    canon: Canonical | None = None
    lines: pd.DataFrame | None = None
    outcomes: LineOutcomes | None = None
    ledger: Ledger | None = None
    audit: list[dict[str, np.ndarray]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.codes = self.codes or dict(self.campaign.disposition_codes)


def _noop(stage: str, done: int, total: int) -> None:
    return None


def apply_file(
    store: Store,
    settings: Settings,
    file: FileRecord,
    *,
    now: datetime | None = None,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Process one spooled file to COMPLETE or FAILED and return its JSON summary."""
    campaign = settings.campaign(file.campaign_id)
    if campaign is None:
        raise FileRejected("UNKNOWN_CAMPAIGN", f"campaign {file.campaign_id!r} is not configured")
    job = Job(file, settings, campaign, now or datetime.now(UTC), progress)
    try:
        _timed(job, "parse", parse)
    except FileRejected as exc:
        return _record_failure(store, job, exc)
    with store.begin() as conn:
        run_steps(job, conn)
        return _timed(job, "record", lambda j: record(j, conn))


def apply_rows(
    conn: Connection,
    settings: Settings,
    campaign: Campaign,
    raw: RawTable,
    *,
    channel: str,
    actor: str | None,
    effects: dict[str, str] | None = None,
    now: datetime | None = None,
) -> Job:
    """Apply rows that did not come in a file (an operator's single-action command), same rules."""
    record_ = FileRecord("", campaign.id, channel, "", actor, Path())
    job = Job(record_, settings, campaign, now or datetime.now(UTC), _noop)
    codes = {**campaign.disposition_codes, **(effects or {})}
    job.codes = codes
    job.canon = canonicalise(raw, codes)
    run_steps(job, conn)
    return job


def run_steps(job: Job, conn: Connection) -> None:
    """Match, plan and apply under the campaign's write lock."""
    lg.campaign_lock(conn, job.campaign.id)
    for name, step in STEPS:
        _timed(job, name, lambda j, s=step: s(j, conn))  # type: ignore[misc]


def _timed(job: Job, name: str, step: Callable[[Job], Any]) -> Any:
    started = time.perf_counter()
    try:
        return step(job)
    finally:
        job.timings[name] = round(time.perf_counter() - started, 4)


def parse(job: Job) -> None:
    """Read the spooled bytes into the canonical table (file-level errors raise FileRejected)."""
    limits = job.settings.limits
    data = job.file.spool_path.read_bytes()
    raw = read_table(
        job.file.name,
        data,
        ParseLimits(limits.max_rows, limits.max_uncompressed_bytes, limits.max_archive_members),
    )
    job.canon = canonicalise(raw, job.codes)
    job.progress("parse", len(raw), len(raw))


def match(job: Job, conn: Connection) -> None:
    """Resolve every valid row to an action of the campaign (or a Contract error)."""
    assert job.canon is not None
    rows = job.canon.rows
    rules = lg.event_types(conn)
    valid = rows["error_code"].isna().to_numpy()
    by_id = valid & rows["action_id"].notna().to_numpy()
    by_order = valid & ~by_id
    resets = bool((rows["reason"] == "RESET").any())
    statuses = bool(rows["customer_status"].notna().any())
    actions = lg.load_actions(
        conn,
        job.campaign.id,
        rows.loc[by_id, "action_id"],
        rows.loc[by_order, "order_id"],
        job.now,
        resets=resets,
        statuses=statuses,
        currencies=bool(rows["currency"].notna().any()),
    )
    pos = np.full(len(rows), -1, dtype=np.int64)
    code = rows["error_code"].to_numpy(dtype=object, na_value=None).copy()
    message = rows["error_message"].to_numpy(dtype=object, na_value=None).copy()
    index = pd.Index(actions["id"].to_numpy(dtype=object)) if len(actions) else pd.Index([])
    if by_id.any():
        pos[by_id] = positions(rows.loc[by_id, "action_id"], actions["id"])
    if by_order.any():
        _match_orders(job, rows, by_order, actions, index, rules, pos, code, message)
    missing = valid & (pos < 0) & pd.isna(code)
    code[missing] = "ACTION_NOT_FOUND"
    message[missing] = "no such action in this campaign"
    has_items = actions["has_items"].to_numpy(dtype=bool) if len(actions) else np.zeros(0, bool)
    with_items: list[str] = []
    if has_items.any():
        wanted = np.unique(pos[pos >= 0])
        with_items = actions["id"].to_numpy(dtype=object)[wanted[has_items[wanted]]].tolist()
    items = lg.load_items(conn, with_items)
    job.ledger = lg.build_ledger(actions, items, rules, status_known=statuses or resets)
    job.lines = _line_table(rows, pos, code, message)
    job.progress("match", len(rows), len(rows))


def positions(wanted: pd.Series, ids: pd.Series) -> np.ndarray:
    """Position of each wanted id among `ids`, -1 when absent (arrow's hash lookup: fast)."""
    if not len(ids):
        return np.full(len(wanted), -1, dtype=np.int64)
    found = pc.index_in(
        pa.array(wanted, type=pa.string(), from_pandas=True),
        value_set=pa.array(ids, type=pa.string(), from_pandas=True),
    )
    return np.asarray(pc.fill_null(found, -1), dtype=np.int64)


def _match_orders(
    job: Job,
    rows: pd.DataFrame,
    by_order: np.ndarray,
    actions: pd.DataFrame,
    index: pd.Index,
    rules: dict[int, EventTypeRule],
    pos: np.ndarray,
    code: np.ndarray,
    message: np.ndarray,
) -> None:
    tracker = rows["tracker"].to_numpy(dtype=np.int64, na_value=-1)
    known = np.array([tr in rules for tr in tracker.tolist()], dtype=bool)
    mine = np.array(
        [tr in rules and rules[tr].campaign_id == job.campaign.id for tr in tracker.tolist()],
        dtype=bool,
    )
    unknown, foreign = by_order & ~known, by_order & known & ~mine
    code[unknown], message[unknown] = "ACTIONTRACKER_NOT_FOUND", "no such ActionTrackerId"
    code[foreign] = "ACTIONTRACKER_CAMPAIGN_MISMATCH"
    message[foreign] = "the ActionTrackerId belongs to another campaign"
    ok = by_order & mine
    if not ok.any() or not len(actions):
        return
    newest = actions.sort_values(["event_at", "id"], ascending=False).drop_duplicates(
        ["order_id", "event_type_id"]
    )
    keys = pd.MultiIndex.from_arrays(
        [newest["order_id"].astype(object), newest["event_type_id"].astype(np.int64)]
    )
    want = pd.MultiIndex.from_arrays([rows.loc[ok, "order_id"].to_numpy(dtype=object), tracker[ok]])
    found = keys.get_indexer(want)
    ids = newest["id"].to_numpy(dtype=object)
    resolved = np.where(found >= 0, index.get_indexer(ids[np.maximum(found, 0)]), -1)
    pos[ok] = resolved


def _line_table(
    rows: pd.DataFrame, pos: np.ndarray, code: np.ndarray, message: np.ndarray
) -> pd.DataFrame:
    """One entry per file line: the first error among its parts, and its action position."""
    frame = rows.assign(pos=pos, code=code, msg=message)
    frame["part"] = np.arange(len(frame))
    lines = frame.drop_duplicates("line", keep="first").set_index("line")
    first_err = frame[frame["code"].notna()].drop_duplicates("line").set_index("line")
    lines.loc[first_err.index, "code"] = first_err["code"]
    lines.loc[first_err.index, "msg"] = first_err["msg"]
    return lines.reset_index()


def plan(job: Job, conn: Connection) -> None:
    """Decide every valid line, round by round (round k holds the k-th line of each action)."""
    assert job.lines is not None and job.ledger is not None and job.canon is not None
    lines, ledger = job.lines, job.ledger
    n = len(lines)
    job.outcomes = out = LineOutcomes.empty(lines["line"].to_numpy(dtype=np.int64), n)
    out.mark_errors(lines["code"].to_numpy(dtype=object), lines["msg"].to_numpy(dtype=object))
    live = np.flatnonzero(pd.isna(lines["code"]).to_numpy())
    pos_all = lines["pos"].to_numpy(dtype=np.int64)
    out.action_pos[:] = pos_all
    occurrence = pd.Series(pos_all[live]).groupby(pos_all[live]).cumcount().to_numpy()
    parts = job.canon.rows.assign(_i=np.arange(len(job.canon.rows)))
    parts_by_line = parts[parts["is_item"].astype(bool)].groupby("line")["_i"].apply(list)
    codes = job.codes
    for k in range(int(occurrence.max()) + 1 if len(live) else 0):
        sel = live[occurrence == k]
        proposal = _propose(lines.iloc[sel], ledger, job.canon.rows, parts_by_line, codes)
        decision = decide(ledger, proposal)
        out.take(sel, decision)
        _audit(job, lines.iloc[sel], decision, proposal)
        job.progress("apply", int((occurrence <= k).sum()), len(live))


EFFECTS = {"modify": OP_MODIFY, "reverse": OP_REVERSE, "approve": OP_APPROVE}


def _effect(reason: str, custom: dict[str, str]) -> int:
    if reason in custom:
        return EFFECTS[custom[reason]]
    return {"RESET": OP_RESET, "APPROVED": OP_APPROVE}.get(reason, OP_MODIFY)


def _propose(
    lines: pd.DataFrame,
    ledger: Ledger,
    rows: pd.DataFrame,
    parts_by_line: pd.Series,
    custom: dict[str, str],
) -> Proposal:
    pos = lines["pos"].to_numpy(dtype=np.int64)
    reasons = lines["reason"].to_numpy(dtype=object)
    effects = {r: _effect(r, custom) for r in pd.unique(reasons)}
    op = np.array(pd.Series(reasons, dtype=object).map(effects), dtype=np.int64)
    amount = lines["amount"].to_numpy(dtype=np.int64, na_value=-1)
    has_amount = amount >= 0
    # Amount 0 reverses, unless the action's amount is already 0 (then it is a modification);
    # on an action that is already reversed it is the same reversal again (UNCHANGED).
    already = (ledger.amount[pos] != 0) | (ledger.state[pos] == S_REVERSED)
    zero_reverse = (op == OP_MODIFY) & has_amount & (amount == 0) & already
    op[zero_reverse] = OP_REVERSE
    proposed = np.where(has_amount, amount, ledger.amount[pos])
    n = len(lines)
    updates: dict[int, list[tuple[int, int, int, str | None]]] = {}
    item_error = np.full(n, None, dtype=object)
    all_zero = np.zeros(n, dtype=bool)
    is_item = lines["is_item"].to_numpy(dtype=bool)
    for i in np.flatnonzero(is_item & (op == OP_MODIFY) | is_item & zero_reverse):
        line = int(lines["line"].iat[i])
        part_rows = rows.iloc[parts_by_line[line]]
        result = _item_change(ledger, int(pos[i]), part_rows)
        if isinstance(result, str):
            item_error[i], op[i] = result, OP_MODIFY
            continue
        updates[int(i)], total, all_zero[i] = result
        op[i] = OP_REVERSE if all_zero[i] else OP_MODIFY
        proposed[i] = total
    return Proposal(
        pos=pos,
        op=op,
        amount=proposed,
        customer_status=lines["customer_status"].to_numpy(dtype=object, na_value=None),
        currency=lines["currency"].to_numpy(dtype=object, na_value=None),
        item_error=item_error,
        item_updates=updates,
        items_all_zero=all_zero,
    )


def _item_change(
    ledger: Ledger, pos: int, parts: pd.DataFrame
) -> str | tuple[list[tuple[int, int, int, str | None]], int, bool]:
    """New (slot, quantity, amount, category) for each item row of a line, or an error message."""
    items = ledger.items
    quantity = {s: int(items.quantity[s]) for s in items.by_action.get(pos, [])}
    amount = {s: int(items.amount[s]) for s in quantity}
    updates = []
    for part in parts.itertuples(index=False):
        slot = items.index.get((pos, part.sku))
        if slot is None:
            return f"Sku {part.sku!r} is not an item of this action"
        qty = int(part.quantity)
        if not pd.isna(part.item_amount):
            line_amount = int(part.item_amount)
        elif not pd.isna(part.item_price):
            line_amount = int(part.item_price) * qty
        else:
            line_amount = _unit_amount(items, slot, qty)
        category = None if pd.isna(part.category) else str(part.category)
        quantity[slot], amount[slot] = qty, line_amount
        updates.append((slot, qty, line_amount, category))
    return updates, sum(amount.values()), all(q == 0 for q in quantity.values())


def _unit_amount(items: Any, slot: int, qty: int) -> int:
    """Line amount for a new quantity at the item's unit price, half-up to the cent."""
    base_q, base_a = int(items.quantity[slot]), int(items.amount[slot])
    if base_q == 0:
        base_q, base_a = int(items.orig_quantity[slot]), int(items.orig_amount[slot])
    if base_q == 0:
        return 0
    return (2 * base_a * qty + base_q) // (2 * base_q)


def _audit(job: Job, lines: pd.DataFrame, d: Any, p: Proposal) -> None:
    """Keep the applied lines of a round as audit columns (written in one go by `apply`)."""
    applied = np.flatnonzero(d.status == APPLIED)
    if len(applied):
        job.audit.append(
            {
                "pos": p.pos[applied],
                "line": lines["line"].to_numpy(dtype=np.int64)[applied],
                "reason": lines["reason"].to_numpy(dtype=object)[applied],
                "operation": np.asarray(OPS, dtype=object)[d.op[applied]],
                "old_state": STATE_NAMES[d.old_state[applied]],
                "new_state": STATE_NAMES[d.new_state[applied]],
                "old_amount": d.old_amount[applied],
                "new_amount": d.new_amount[applied],
                "old_payout": d.old_payout[applied],
                "new_payout": d.new_payout[applied],
            }
        )


def apply(job: Job, conn: Connection) -> None:
    """Write the changed actions and their audit rows, both sorted by action id."""
    assert job.ledger is not None
    lg.write_ledger(conn, job.ledger)
    if not job.audit:
        return
    rounds = {name: np.concatenate([r[name] for r in job.audit]) for name in job.audit[0]}
    job.audit.clear()
    # Sorted by action (stable: an action's changes keep file order), so the action index grows
    # at its end instead of taking one random B-tree insert per row.
    rank = np.empty(len(job.ledger.ids), dtype=np.int64)
    rank[lg.id_order(job.ledger)] = np.arange(len(job.ledger.ids))
    order = np.argsort(rank[rounds["pos"]], kind="stable")
    f = job.file
    columns: lg.Columns = {
        "action_id": job.ledger.ids[rounds.pop("pos")[order]],
        "file_id": f.id or None,
        "channel": f.channel,
        "actor": f.sender,
    }
    columns |= {name: values[order] for name, values in rounds.items()}
    columns["at"] = lg.ts_param(conn, job.now)
    lg.bulk_insert(conn, "audit", columns)
    job.progress("write", len(order), len(order))


def record(job: Job, conn: Connection) -> dict[str, Any]:
    """Write the result CSV, then the result row and the file's COMPLETE status."""
    assert job.outcomes is not None and job.canon is not None and job.ledger is not None
    started = time.perf_counter()
    folder = job.settings.path(job.settings.results_dir) / job.campaign.id
    path = write_result(folder / f"{job.file.id}.csv", job.canon.raw, job.outcomes, job.ledger)
    job.timings["result"] = round(time.perf_counter() - started, 4)
    counts = job.outcomes.counts()
    summary = {
        "counts": counts,
        "warnings": job.canon.warnings,
        "timings": job.timings,
        "rows": len(job.outcomes.line),
        "format": job.canon.raw.format,
        "encoding": job.canon.raw.encoding,
        "delimiter": job.canon.raw.delimiter,
    }
    conn.execute(t.results.delete().where(t.results.c.file_id == job.file.id))
    conn.execute(
        t.results.insert(),
        {
            "file_id": job.file.id,
            "path": str(path),
            "summary": summary,
            "created_at": datetime.now(UTC),
        },
    )
    _finish(conn, job.file.id, "COMPLETE", counts=counts)
    return summary


def _record_failure(store: Store, job: Job, exc: FileRejected) -> dict[str, Any]:
    summary = {"error": {"code": exc.code, "message": exc.message}, "timings": job.timings}
    with store.begin() as conn:
        conn.execute(t.results.delete().where(t.results.c.file_id == job.file.id))
        conn.execute(
            t.results.insert(),
            {
                "file_id": job.file.id,
                "path": "",
                "summary": summary,
                "created_at": datetime.now(UTC),
            },
        )
        _finish(conn, job.file.id, "FAILED", error=(exc.code, exc.message))
    return summary


def _finish(
    conn: Connection,
    file_id: str,
    status: str,
    *,
    counts: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": status,
        "finished_at": datetime.now(UTC),
        "counts": counts,
        "worker": None,
    }
    if error:
        values["error_code"], values["error_message"] = error
    conn.execute(update(t.files).where(t.files.c.id == file_id).values(**values))


STEPS: tuple[tuple[str, Callable[[Job, Connection], None]], ...] = (
    ("match", match),
    ("plan", plan),
    ("apply", apply),
)

__all__ = ["ERROR", "UNCHANGED", "FileRecord", "apply_file"]
