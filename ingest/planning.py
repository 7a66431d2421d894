"""Plan: decide every matched line, round by round, and keep the audit rows of what applied."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ingest.domain import S_REVERSED, STATE_NAMES
from ingest.matching import Matched
from ingest.reasons import NO_OP, effect
from ingest.report import LineOutcomes
from ingest.rules import (
    APPLIED,
    OP_MODIFY,
    OP_REVERSE,
    OPS,
    ActionArrays,
    Decision,
    Items,
    Proposal,
    decide,
)

Progress = Callable[[str, int, int], None]
ItemUpdate = tuple[int, int, int, str | None]  # slot, quantity, amount, category


@dataclass
class Planned:
    """Each line's outcome, and the audit columns of the lines that applied."""

    outcomes: LineOutcomes
    audit: dict[str, np.ndarray] = field(default_factory=dict)


def plan(
    rows: pd.DataFrame, matched: Matched, custom: Mapping[str, str], progress: Progress
) -> Planned:
    """Decide every valid line, round by round (round k holds the k-th line of each action)."""
    lines, arrays = matched.lines, matched.arrays
    out = LineOutcomes.empty(lines["line"].to_numpy(dtype=np.int64), len(lines))
    out.mark_errors(lines["code"].to_numpy(dtype=object), lines["msg"].to_numpy(dtype=object))
    live = np.flatnonzero(pd.isna(lines["code"]).to_numpy())
    pos_all = lines["pos"].to_numpy(dtype=np.int64)
    out.action_pos[:] = pos_all
    occurrence = pd.Series(pos_all[live]).groupby(pos_all[live]).cumcount().to_numpy()
    parts = rows.assign(_i=np.arange(len(rows)))
    parts_by_line = parts[parts["is_item"].astype(bool)].groupby("line")["_i"].apply(list)
    rounds: list[dict[str, np.ndarray]] = []
    for k in range(int(occurrence.max()) + 1 if len(live) else 0):
        sel = live[occurrence == k]
        proposal = _propose(lines.iloc[sel], arrays, rows, parts_by_line, custom)
        decision = decide(arrays, proposal)
        out.take(sel, decision)
        rounds.append(_audit(lines.iloc[sel], arrays, decision, proposal))
        progress("apply", int((occurrence <= k).sum()), len(live))
    rounds = [r for r in rounds if len(r["pos"])]
    audit = (
        {name: np.concatenate([r[name] for r in rounds]) for name in rounds[0]} if rounds else {}
    )
    return Planned(out, audit)


def _operations(lines: pd.DataFrame, arrays: ActionArrays, custom: Mapping[str, str]) -> np.ndarray:
    """Each line's operation: the one requested, else what its reason and amount ask for."""
    pos = lines["pos"].to_numpy(dtype=np.int64)
    reasons = lines["reason"].to_numpy(dtype=object)
    effects = {r: effect(r, custom) for r in pd.unique(reasons)}
    op = np.array(pd.Series(reasons, dtype=object).map(effects), dtype=np.int64)
    amount = lines["amount"].to_numpy(dtype=np.int64, na_value=-1)
    # Amount 0 reverses, unless the action's amount is already 0 (then it is a modification);
    # on an action that is already reversed it is the same reversal again (UNCHANGED).
    already = (arrays.amount[pos] != 0) | (arrays.state[pos] == S_REVERSED)
    op[(op == OP_MODIFY) & (amount == 0) & already] = OP_REVERSE
    if "op" in lines:  # a request names its operation; a modification to 0 still reverses
        requested = lines["op"].to_numpy(dtype=np.int64)
        op = np.where((requested != NO_OP) & (requested != OP_MODIFY), requested, op)
    return op


def _propose(
    lines: pd.DataFrame,
    arrays: ActionArrays,
    rows: pd.DataFrame,
    parts_by_line: pd.Series,
    custom: Mapping[str, str],
) -> Proposal:
    pos = lines["pos"].to_numpy(dtype=np.int64)
    op = _operations(lines, arrays, custom)
    amount = lines["amount"].to_numpy(dtype=np.int64, na_value=-1)
    proposed = np.where(amount >= 0, amount, arrays.amount[pos])
    n = len(lines)
    updates: dict[int, list[ItemUpdate]] = {}
    item_error = np.full(n, None, dtype=object)
    is_item = lines["is_item"].to_numpy(dtype=bool)
    for i in np.flatnonzero(is_item & ((op == OP_MODIFY) | (op == OP_REVERSE) & (amount == 0))):
        line = int(lines["line"].iat[i])
        result = _item_change(arrays.items, int(pos[i]), rows.iloc[parts_by_line[line]])
        if isinstance(result, str):
            item_error[i], op[i] = result, OP_MODIFY
            continue
        updates[int(i)], total, all_zero = result
        op[i] = OP_REVERSE if all_zero else OP_MODIFY
        proposed[i] = total
    override = lines["override_cpc"].to_numpy(dtype=bool) if "override_cpc" in lines else None
    return Proposal(
        pos=pos,
        op=op,
        amount=proposed,
        customer_status=lines["customer_status"].to_numpy(dtype=object, na_value=None),
        currency=lines["currency"].to_numpy(dtype=object, na_value=None),
        item_error=item_error,
        item_updates=updates,
        override_cpc=override if override is not None else np.zeros(n, dtype=bool),
    )


def _item_change(
    items: Items, pos: int, parts: pd.DataFrame
) -> str | tuple[list[ItemUpdate], int, bool]:
    """New (slot, quantity, amount, category) for each item row of a line, or an error message."""
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


def _unit_amount(items: Items, slot: int, qty: int) -> int:
    """Line amount for a new quantity at the item's unit price, half-up to the cent."""
    base_q, base_a = int(items.quantity[slot]), int(items.amount[slot])
    if base_q == 0:
        base_q, base_a = int(items.orig_quantity[slot]), int(items.orig_amount[slot])
    if base_q == 0:
        return 0
    return (2 * base_a * qty + base_q) // (2 * base_q)


def _audit(
    lines: pd.DataFrame, arrays: ActionArrays, d: Decision, p: Proposal
) -> dict[str, np.ndarray]:
    """The applied lines of a round as audit columns (written in one go by the apply step)."""
    applied = np.flatnonzero(d.status == APPLIED)
    return {
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
        "detail": _details(applied, arrays, d, p),
    }


def _details(applied: np.ndarray, arrays: ActionArrays, d: Decision, p: Proposal) -> np.ndarray:
    """Per applied line, what the amount/payout/state columns do not hold (JSON, or None):
    the customer status change, each item's quantity and amount change, an operator override."""
    detail = np.full(len(applied), None, dtype=object)
    status_changed = pd.Series(d.old_status[applied]).ne(pd.Series(d.new_status[applied]))
    status_changed &= ~(pd.isna(d.old_status[applied]) & pd.isna(d.new_status[applied]))
    cpc = p.override_cpc[applied] & (arrays.kind[p.pos[applied]] == "cpc")
    wanted = status_changed.to_numpy() | cpc | np.isin(applied, list(d.item_changes))
    for k in np.flatnonzero(wanted):
        i = int(applied[k])
        doc: dict[str, Any] = {}
        if status_changed.iat[k]:
            doc["customer_status"] = {"old": d.old_status[i], "new": d.new_status[i]}
        if d.item_changes.get(i):
            doc["items"] = [
                {"sku": sku, "old_quantity": oq, "new_quantity": nq,
                 "old_amount": oa, "new_amount": na}
                for sku, oq, nq, oa, na in d.item_changes[i]
            ]  # fmt: skip
        if cpc[k]:
            doc["override"] = "CPC"
        detail[k] = json.dumps(doc, sort_keys=True) if doc else None
    return detail
