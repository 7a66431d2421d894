"""The returns rules, vectorised: one round of changes (each action at most once) at a time.

Rows of a file apply in file order. Rows touching different actions do not interact, so the engine
splits a file into rounds — round k holds the k-th line of every action — and each round is decided
here with whole-array operations. The same guard order serves order-level and item-level lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from ingest.domain import MAX_MODIFICATIONS

S_PENDING, S_REVERSED, S_APPROVED, S_LOCKED = 0, 1, 2, 3
STATE_NAMES = np.array(["PENDING", "REVERSED", "APPROVED", "LOCKED"], dtype=object)
STATE_CODES = {str(name): i for i, name in enumerate(STATE_NAMES)}
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
class Ledger:
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
        pct = (amount * self.percent_e4[pos] + 500_000) // 1_000_000
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
    items_all_zero: Bool


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


MESSAGES = {
    (APPLIED, OP_MODIFY): "modified",
    (APPLIED, OP_REVERSE): "reversed",
    (APPLIED, OP_RESET): "reset to the original amount, payout and PENDING",
    (APPLIED, OP_APPROVE): "approved",
    (UNCHANGED, OP_MODIFY): "no change: amount and status already as given",
    (UNCHANGED, OP_REVERSE): "no change: already reversed",
    (UNCHANGED, OP_RESET): "no change: already at its original values",
}

GUARD_MESSAGES = {
    "CURRENCY_MISMATCH": "currencyCode differs from the action's currency",
    "ACTION_LOCKED": "the action is locked (lock date passed, or approved): it cannot change",
    "CPC_NOT_SUPPORTED": "CPC actions cannot be reversed or modified by file; ask the operator",
    "ACTION_REVERSED": "the action is reversed: RESET it first",
    "MALFORMED": "CustomerStatus is not allowed on a reversal",
    "MODIFICATION_LIMIT": f"the action already had {MAX_MODIFICATIONS} modifications",
    "ITEM_NOT_FOUND": "Sku is not an item of this action",
}


def decide(ledger: Ledger, p: Proposal) -> Decision:
    """Apply the guards in SPEC order, then the change; update the ledger for applied lines."""
    pos = p.pos
    state = ledger.state[pos]
    op = p.op.copy()
    items_dirty = _items_dirty(ledger, pos)
    is_cpc = ledger.kind[pos] == "cpc"
    changing = (op == OP_MODIFY) | (op == OP_REVERSE)
    has_cs, has_cur = ~pd.isna(p.customer_status), ~pd.isna(p.currency)
    item_err = ~pd.isna(p.item_error)
    guards = [
        ("CURRENCY_MISMATCH", has_cur & (p.currency != ledger.currency[pos])),
        ("ACTION_LOCKED", ledger.locked[pos] | (state == S_APPROVED) | (state == S_LOCKED)),
        ("CPC_NOT_SUPPORTED", is_cpc & changing),
        ("ACTION_REVERSED", (state == S_REVERSED) & ((op == OP_MODIFY) | (op == OP_APPROVE))),
        ("MALFORMED", (op == OP_REVERSE) & has_cs & (state != S_REVERSED)),
        ("MODIFICATION_LIMIT", (op == OP_MODIFY) & (ledger.mod_count[pos] >= MAX_MODIFICATIONS)),
        ("ITEM_NOT_FOUND", item_err),
    ]
    code = np.full(len(pos), None, dtype=object)
    for name, hit in reversed(guards):
        code[hit] = name
    message = pd.Series(code, dtype=object).map(GUARD_MESSAGES).to_numpy(dtype=object)
    found = item_err & (code == "ITEM_NOT_FOUND")
    message[found] = p.item_error[found]
    ok = pd.isna(code)

    old_amount, old_payout = ledger.amount[pos], ledger.payout[pos]
    cur_cs = ledger.customer_status[pos]
    new_amount, new_payout, new_state = old_amount.copy(), old_payout.copy(), state.copy()
    new_cs = np.where(has_cs & (op == OP_MODIFY), p.customer_status, cur_cs)
    changed = np.zeros(len(pos), dtype=bool)

    m = ok & (op == OP_MODIFY)
    proposed_payout = ledger.new_payout(pos, p.amount)
    new_amount[m], new_payout[m] = p.amount[m], proposed_payout[m]
    changed |= m & (
        (new_amount != old_amount)
        | (new_payout != old_payout)
        | (new_cs != cur_cs)
        | _items_change(ledger, p, len(pos))
    )
    r = ok & (op == OP_REVERSE) & (state != S_REVERSED)
    new_amount[r], new_payout[r], new_state[r] = 0, 0, S_REVERSED
    changed |= r
    z = ok & (op == OP_RESET)
    orig_cs = ledger.orig_customer_status[pos]
    at_orig = (
        (old_amount == ledger.orig_amount[pos])
        & (old_payout == ledger.orig_payout[pos])
        & (cur_cs == orig_cs)
        & (state == S_PENDING)
        & ~items_dirty
    )
    new_amount[z], new_payout[z] = ledger.orig_amount[pos][z], ledger.orig_payout[pos][z]
    new_state[z] = S_PENDING
    new_cs = np.where(z, orig_cs, new_cs)
    changed |= z & ~at_orig
    a = ok & (op == OP_APPROVE)
    new_state[a] = S_APPROVED
    changed |= a

    status = np.where(ok, np.where(changed, APPLIED, UNCHANGED), ERROR).astype(object)
    for (outcome, kind), text in MESSAGES.items():
        message[ok & (status == outcome) & (op == kind)] = text
    _commit(ledger, p, pos, changed, op, new_amount, new_payout, new_state, new_cs)
    # An action whose lock date has passed is shown as LOCKED even before the lock job runs.
    late = ledger.locked[pos] & ((state == S_PENDING) | (state == S_APPROVED))
    shown = np.where(late, S_LOCKED, state).astype(np.int8)
    return Decision(
        status, code, message, old_amount, new_amount, old_payout, new_payout, shown, new_state, op
    )


def _items_dirty(ledger: Ledger, pos: I64) -> Bool:
    """Which of these actions have an item that differs from its original."""
    dirty = np.zeros(len(pos), dtype=bool)
    if ledger.items.by_action:
        with_items = np.isin(pos, np.fromiter(ledger.items.by_action, np.int64))
        for i in np.flatnonzero(with_items):
            dirty[i] = ledger.items.dirty(int(pos[i]))
    return dirty


def _items_change(ledger: Ledger, p: Proposal, n: int) -> Bool:
    """Which lines would change an item's quantity, amount or category."""
    items = ledger.items
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
    ledger: Ledger,
    p: Proposal,
    pos: I64,
    changed: Bool,
    op: I64,
    new_amount: I64,
    new_payout: I64,
    new_state: npt.NDArray[np.int8],
    new_cs: Obj,
) -> None:
    w = pos[changed]
    ledger.amount[w] = new_amount[changed]
    ledger.payout[w] = new_payout[changed]
    ledger.state[w] = new_state[changed]
    ledger.customer_status[w] = new_cs[changed]
    ledger.mod_count[w] += (op[changed] == OP_MODIFY).astype(np.int64)
    ledger.touched[w] = True
    items = ledger.items
    if items.by_action:
        resets = changed & (op == OP_RESET)
        for k in np.flatnonzero(resets & np.isin(pos, np.fromiter(items.by_action, np.int64))):
            for s in items.by_action[int(pos[k])]:
                items.quantity[s], items.amount[s] = items.orig_quantity[s], items.orig_amount[s]
                items.touched[s] = True
    for i, updates in p.item_updates.items():
        if changed[i] and op[i] in (OP_MODIFY, OP_REVERSE):
            for slot, qty, amt, cat in updates:
                items.quantity[slot], items.amount[slot] = qty, amt
                if cat is not None:
                    items.category[slot] = cat
                items.touched[slot] = True
