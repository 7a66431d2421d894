"""The returns rules, vectorised: one round of changes (each action at most once) at a time.

Rows of a file apply in file order. Rows touching different actions do not interact, so the engine
splits a file into rounds — round k holds the k-th line of every action — and each round is decided
here with whole-array operations. The same guard order serves order-level and item-level lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.domain import (
    MAX_MODIFICATIONS,
    S_APPROVED,
    S_LOCKED,
    S_PENDING,
    S_REVERSED,
    percent_payout,
)

OPS = ("modify", "reverse", "reset", "approve")
OP_MODIFY, OP_REVERSE, OP_RESET, OP_APPROVE = range(4)

APPLIED, UNCHANGED, ERROR = "APPLIED", "UNCHANGED", "ERROR"

I64 = npt.NDArray[np.int64]
Obj = npt.NDArray[np.object_]
Bool = npt.NDArray[np.bool_]


@dataclass
class Items:
    """Items of the loaded actions (slot arrays) and an index (action position, sku) → slot."""

    action_pos: I64
    sku: Obj
    category: Obj
    quantity: I64
    amount: I64
    orig_quantity: I64
    orig_amount: I64
    touched: Bool
    index: dict[tuple[int, str], int] = field(default_factory=dict)
    by_action: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for slot, (pos, sku) in enumerate(zip(self.action_pos.tolist(), self.sku, strict=True)):
            self.index[(pos, sku)] = slot
            self.by_action.setdefault(pos, []).append(slot)

    def dirty(self, pos: int) -> bool:
        """True when an item of the action at `pos` differs from its original."""
        slots = self.by_action.get(pos, [])
        return any(
            self.quantity[s] != self.orig_quantity[s] or self.amount[s] != self.orig_amount[s]
            for s in slots
        )


@dataclass
class ActionArrays:
    """The actions a file touches, as arrays; rounds read and update them in place."""

    ids: Obj
    currency: Obj
    kind: Obj
    locked: Bool
    fixed_rule: Bool
    percent_e4: I64
    fixed_cents: I64
    amount: I64
    payout: I64
    state: npt.NDArray[np.int8]
    mod_count: I64
    customer_status: Obj
    orig_amount: I64
    orig_payout: I64
    orig_customer_status: Obj
    items: Items
    status_known: bool = True  # False when customer statuses were not read (none needed)
    touched: Bool = field(init=False)
    order: I64 | None = field(init=False, default=None)  # positions sorted by id, when needed

    def __post_init__(self) -> None:
        self.touched = np.zeros(len(self.ids), dtype=bool)

    def new_payout(self, pos: I64, amount: I64) -> I64:
        """Payout under the event type's current rule for `amount`, half-up to the cent."""
        pct = percent_payout(amount, self.percent_e4[pos])
        return np.where(self.fixed_rule[pos], self.fixed_cents[pos], pct)


@dataclass
class Proposal:
    """What each line of a round asks for, before the guards: one entry per line."""

    pos: I64
    op: I64
    amount: I64  # proposed new amount (modify); ignored otherwise
    customer_status: Obj  # new status or None
    currency: Obj  # currencyCode given, or None
    item_error: Obj  # ITEM_NOT_FOUND etc. (checked last), or None
    # Only lines that change items: line index → [(slot, quantity, amount, category)].
    item_updates: dict[int, list[tuple[int, int, int, str | None]]]
    override_cpc: Bool  # an operator's explicit change of a CPC action


ItemChange = tuple[str, int, int, int, int]  # sku, old quantity, new quantity, old/new amount


@dataclass
class Decision:
    """A round's outcome per line: status, error, and the action's old and new values."""

    status: Obj
    code: Obj
    message: Obj
    old_amount: I64
    new_amount: I64
    old_payout: I64
    new_payout: I64
    old_state: npt.NDArray[np.int8]
    new_state: npt.NDArray[np.int8]
    op: I64
    old_status: Obj  # customer status before / after
    new_status: Obj
    item_changes: dict[int, list[ItemChange]]  # line index → each item that changed


MESSAGES = {
    (APPLIED, OP_MODIFY): "modified",
    (APPLIED, OP_REVERSE): "reversed",
    (APPLIED, OP_RESET): "reset to the original amount, payout and PENDING",
    (APPLIED, OP_APPROVE): "approved",
    (UNCHANGED, OP_MODIFY): "no change: amount and status already as given",
    (UNCHANGED, OP_REVERSE): "no change: already reversed",
    (UNCHANGED, OP_RESET): "no change: already at its original values",
}


@dataclass
class Round:
    """What the guards and the operations of one round read: the lines and their actions."""

    a: ActionArrays
    p: Proposal

    def __post_init__(self) -> None:
        self.pos = self.p.pos
        self.state = self.a.state[self.pos]
        self.op = self.p.op
        self.has_status = ~pd.isna(self.p.customer_status)

    def is_(self, *ops: int) -> Bool:
        """Which lines ask for one of `ops`."""
        return np.isin(self.op, ops)


Guard = tuple[str, str, Callable[[Round], Bool]]

# In the order they are checked: a line gets the first guard that hits it.
GUARDS: tuple[Guard, ...] = (
    (
        "CURRENCY_MISMATCH",
        "currencyCode differs from the action's currency",
        lambda r: ~pd.isna(r.p.currency) & (r.p.currency != r.a.currency[r.pos]),
    ),
    (
        "ACTION_LOCKED",
        "the action is locked (lock date passed, or approved): it cannot change",
        lambda r: r.a.locked[r.pos] | (r.state == S_APPROVED) | (r.state == S_LOCKED),
    ),
    (
        "CPC_NOT_SUPPORTED",
        "CPC actions cannot be reversed or modified by a file or an advertiser; an operator "
        "can do it explicitly",
        lambda r: (r.a.kind[r.pos] == "cpc") & r.is_(OP_MODIFY, OP_REVERSE) & ~r.p.override_cpc,
    ),
    (
        "ACTION_REVERSED",
        "the action is reversed: RESET it first",
        lambda r: (r.state == S_REVERSED) & r.is_(OP_MODIFY, OP_APPROVE),
    ),
    (
        "MALFORMED",
        "CustomerStatus is not allowed on a reversal",
        lambda r: r.is_(OP_REVERSE) & r.has_status & (r.state != S_REVERSED),
    ),
    (
        "MODIFICATION_LIMIT",
        f"the action already had {MAX_MODIFICATIONS} modifications",
        lambda r: r.is_(OP_MODIFY) & (r.a.mod_count[r.pos] >= MAX_MODIFICATIONS),
    ),
    ("ITEM_NOT_FOUND", "Sku is not an item of this action", lambda r: ~pd.isna(r.p.item_error)),
)
GUARD_MESSAGES = {code: message for code, message, _ in GUARDS}


@dataclass
class After:
    """The new values of a round's lines, filled in by the operations."""

    amount: I64
    payout: I64
    state: npt.NDArray[np.int8]
    status: Obj
    changed: Bool


def _modify(r: Round, m: Bool, new: After) -> None:
    a, pos = r.a, r.pos
    new.amount[m], new.payout[m] = r.p.amount[m], a.new_payout(pos, r.p.amount)[m]
    new.status[m & r.has_status] = r.p.customer_status[m & r.has_status]
    new.changed |= m & (
        (new.amount != a.amount[pos])
        | (new.payout != a.payout[pos])
        | (new.status != a.customer_status[pos])
        | _items_change(a, r.p, len(pos))
    )


def _reverse(r: Round, m: Bool, new: After) -> None:
    m = m & (r.state != S_REVERSED)
    new.amount[m], new.payout[m], new.state[m] = 0, 0, S_REVERSED
    new.changed |= m


def _reset(r: Round, m: Bool, new: After) -> None:
    a, pos = r.a, r.pos
    at_orig = (
        (a.amount[pos] == a.orig_amount[pos])
        & (a.payout[pos] == a.orig_payout[pos])
        & (a.customer_status[pos] == a.orig_customer_status[pos])
        & (r.state == S_PENDING)
        & ~_items_dirty(a, pos)
    )
    new.amount[m], new.payout[m] = a.orig_amount[pos][m], a.orig_payout[pos][m]
    new.state[m], new.status[m] = S_PENDING, a.orig_customer_status[pos][m]
    new.changed |= m & ~at_orig


def _approve(r: Round, m: Bool, new: After) -> None:
    new.state[m] = S_APPROVED
    new.changed |= m


OPERATIONS: dict[int, Callable[[Round, Bool, After], None]] = {
    OP_MODIFY: _modify,
    OP_REVERSE: _reverse,
    OP_RESET: _reset,
    OP_APPROVE: _approve,
}


def decide(arrays: ActionArrays, p: Proposal) -> Decision:
    """Check the guards in order, then run each line's operation; update the arrays in place."""
    r = Round(arrays, p)
    pos, n = r.pos, len(r.pos)
    code = np.full(n, None, dtype=object)
    for name, _, hit in reversed(GUARDS):
        code[hit(r)] = name
    message = pd.Series(code, dtype=object).map(GUARD_MESSAGES).to_numpy(dtype=object)
    found = code == "ITEM_NOT_FOUND"
    message[found] = p.item_error[found]
    ok = pd.isna(code)
    old_status = arrays.customer_status[pos].copy()
    new = After(
        arrays.amount[pos].copy(),
        arrays.payout[pos].copy(),
        r.state.copy(),
        old_status.copy(),
        np.zeros(n, dtype=bool),
    )
    for op, run in OPERATIONS.items():
        run(r, ok & (r.op == op), new)
    status = np.where(ok, np.where(new.changed, APPLIED, UNCHANGED), ERROR).astype(object)
    for (outcome, kind), text in MESSAGES.items():
        message[ok & (status == outcome) & (r.op == kind)] = text
    decision = Decision(
        status, code, message, arrays.amount[pos].copy(), new.amount,
        arrays.payout[pos].copy(), new.payout, _shown(r), new.state, r.op.copy(),
        old_status, new.status, {},
    )  # fmt: skip
    decision.item_changes = _commit(arrays, p, new.changed, decision)
    return decision


def _shown(r: Round) -> npt.NDArray[np.int8]:
    """An action whose lock date has passed is shown as LOCKED even before the lock job runs."""
    late = r.a.locked[r.pos] & ((r.state == S_PENDING) | (r.state == S_APPROVED))
    return np.where(late, S_LOCKED, r.state).astype(np.int8)


def _items_dirty(arrays: ActionArrays, pos: I64) -> Bool:
    """Which of these actions have an item that differs from its original."""
    dirty = np.zeros(len(pos), dtype=bool)
    if arrays.items.by_action:
        with_items = np.isin(pos, np.fromiter(arrays.items.by_action, np.int64))
        for i in np.flatnonzero(with_items):
            dirty[i] = arrays.items.dirty(int(pos[i]))
    return dirty


def _items_change(arrays: ActionArrays, p: Proposal, n: int) -> Bool:
    """Which lines would change an item's quantity, amount or category."""
    items = arrays.items
    change = np.zeros(n, dtype=bool)
    for i, updates in p.item_updates.items():
        change[i] = any(
            items.quantity[s] != q
            or items.amount[s] != a
            or (c is not None and items.category[s] != c)
            for s, q, a, c in updates
        )
    return change


def _commit(
    arrays: ActionArrays, p: Proposal, changed: Bool, d: Decision
) -> dict[int, list[ItemChange]]:
    """Write the changed lines into the arrays; return each line's item changes."""
    w = p.pos[changed]
    arrays.amount[w] = d.new_amount[changed]
    arrays.payout[w] = d.new_payout[changed]
    arrays.state[w] = d.new_state[changed]
    arrays.customer_status[w] = d.new_status[changed]
    arrays.mod_count[w] += (d.op[changed] == OP_MODIFY).astype(np.int64)
    arrays.touched[w] = True
    items = arrays.items
    moves: dict[int, list[tuple[int, int, int, str | None]]] = {}
    if items.by_action:
        resets = changed & (d.op == OP_RESET)
        for k in np.flatnonzero(resets & np.isin(p.pos, np.fromiter(items.by_action, np.int64))):
            slots = items.by_action[int(p.pos[k])]
            moves[int(k)] = [
                (s, int(items.orig_quantity[s]), int(items.orig_amount[s]), None) for s in slots
            ]
    for i, updates in p.item_updates.items():
        if changed[i] and d.op[i] in (OP_MODIFY, OP_REVERSE):
            moves[i] = updates
    return {i: _move_items(items, updates) for i, updates in moves.items()}


def _move_items(items: Items, updates: list[tuple[int, int, int, str | None]]) -> list[ItemChange]:
    changes: list[ItemChange] = []
    for slot, qty, amt, cat in updates:
        old_q, old_a = int(items.quantity[slot]), int(items.amount[slot])
        if (old_q, old_a) != (qty, amt):
            changes.append((str(items.sku[slot]), old_q, qty, old_a, amt))
        items.quantity[slot], items.amount[slot] = qty, amt
        if cat is not None:
            items.category[slot] = cat
        items.touched[slot] = True
    return changes
