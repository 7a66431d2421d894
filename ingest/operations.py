"""One operation layer for every change to an action that does not come in a file.

The CLI calls it now; the web console, the impact-compatible API and the Salesforce channel call
it next. A request becomes canonical rows with an explicit operation and goes through the same
validation, the same reason rules (ingest.reasons), the same guards (ingest.rules) and the same
engine path as a file row; each applied change is in the audit trail with its actor and channel
(and no file or line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from ingest.config import Settings
from ingest.domain import STATE_NAMES, error_type, money_text
from ingest.engine import apply_rows, campaign_of
from ingest.reasons import NO_OP
from ingest.rules import OP_APPROVE, OP_MODIFY, OP_RESET, OP_REVERSE
from ingest.store import Store
from parsers.base import RawTable
from parsers.canonical import validate


class Operation(StrEnum):
    """What a request asks for."""

    APPROVE = "approve"
    REVERSE = "reverse"
    MODIFY = "modify"
    RESET = "reset"  # "restore" in the CLI: back to the original values and PENDING
    ROW = "row"  # what a file row with these values does (the reason and amount decide)


class Role(StrEnum):
    """Who asks: an operator (platform staff) may override what an advertiser may not."""

    OPERATOR = "operator"
    ADVERTISER = "advertiser"


OP_CODES = {
    Operation.APPROVE: OP_APPROVE,
    Operation.REVERSE: OP_REVERSE,
    Operation.MODIFY: OP_MODIFY,
    Operation.RESET: OP_RESET,
    Operation.ROW: NO_OP,
}
DEFAULT_REASONS = {
    Operation.APPROVE: "APPROVED",
    Operation.REVERSE: "OTHER",
    Operation.MODIFY: "ORDER_UPDATE",
    Operation.RESET: "RESET",
}  # a ROW has none: like a file row without a Reason, it is MALFORMED
NO_AMOUNT = {"RESET", "APPROVED"}


@dataclass(frozen=True)
class ItemEdit:
    """A new quantity (0 returns the item) and optionally a new line amount or unit price."""

    sku: str
    quantity: str
    amount: str | None = None
    price: str | None = None
    category: str | None = None


@dataclass(frozen=True)
class Change:
    """One requested change to one action; values are text, validated like a file's cells.

    The action is named by `action_id`, or (action_id None) by `order_id` + `tracker` (the
    newest action of that order and event type, as in a file).
    """

    action_id: str | None
    operation: Operation
    reason: str | None = None
    amount: str | None = None  # the new total sale amount (modify)
    customer_status: str | None = None
    items: tuple[ItemEdit, ...] = ()
    currency: str | None = None
    override_cpc: bool = False  # reverse/modify a CPC action: operators only, recorded
    order_id: str | None = None
    tracker: str | None = None
    require_reason: bool = False  # no default reason: a missing one is MALFORMED, as in a file


@dataclass(frozen=True)
class ChangeOutcome:
    """What became of one change: APPLIED | UNCHANGED | ERROR, why, and old/new values."""

    action_id: str | None  # the action changed (as resolved), or as requested
    status: str
    error_code: str | None
    error_type: str | None
    message: str | None
    state: str | None
    old_amount: str | None
    new_amount: str | None
    old_payout: str | None
    new_payout: str | None

    def as_dict(self) -> dict[str, Any]:
        """The outcome as a JSON-ready dict."""
        return asdict(self)


def apply_changes(
    store: Store,
    settings: Settings,
    campaign_id: str,
    changes: Sequence[Change],
    *,
    actor: str,
    channel: str,
    role: Role,
    then: Callable[[Connection, list[ChangeOutcome]], None] | None = None,
) -> list[ChangeOutcome]:
    """Apply changes to a campaign's actions, in order, under the rules a file row obeys.

    `actor` is who asked (a user, a token, a Salesforce org…), `channel` through what (cli,
    console, api…); `role` decides whether an explicit CPC override is honoured. `then` runs
    in the same transaction with the outcomes, so a caller can record them atomically with
    the changes (raising there undoes the changes).
    """
    campaign = campaign_of(settings, campaign_id)
    rows = canonical_rows(changes, dict(campaign.disposition_codes), role)
    lines = np.arange(1, len(changes) + 1)
    raw = RawTable([], pd.DataFrame(index=range(len(changes))), lines, "request")
    with store.begin() as conn:
        run = apply_rows(
            conn, store.sql, settings, campaign, rows, raw, channel=channel, actor=actor
        )
        outcomes = _outcomes(changes, run.planned.outcomes, run.matched.arrays.ids)
        if then is not None:
            then(conn, outcomes)
    return outcomes


def apply_change(
    store: Store,
    settings: Settings,
    campaign_id: str,
    change: Change,
    *,
    actor: str,
    channel: str,
    role: Role,
) -> ChangeOutcome:
    """Apply one change (see `apply_changes`)."""
    return apply_changes(
        store, settings, campaign_id, [change], actor=actor, channel=channel, role=role
    )[0]


def canonical_rows(changes: Sequence[Change], codes: Mapping[str, str], role: Role) -> pd.DataFrame:
    """The changes as validated canonical rows (line k = k-th change) with their operation."""
    frame = _frame(changes)
    # A reversal with a change reason is written as a file would (Amount 0) so that validation
    # passes; the engine then reverses because the operation says so, not because of the 0.
    implied = frame["amount"].isna().to_numpy() & _implied_zero(changes, codes, frame)
    frame.loc[implied, "amount"] = "0"
    rows = validate(frame, codes)
    rows.loc[implied, "amount"] = pd.NA
    index = rows["line"].to_numpy(dtype=np.int64) - 1
    ops = np.array([OP_CODES[c.operation] for c in changes], dtype=np.int64)
    override = np.array([c.override_cpc and role == Role.OPERATOR for c in changes], dtype=bool)
    return rows.assign(op=ops[index], override_cpc=override[index])


def _implied_zero(
    changes: Sequence[Change], codes: Mapping[str, str], frame: pd.DataFrame
) -> np.ndarray:
    """Rows of reversals whose reason is a standard change reason (a file gives Amount 0)."""
    wanted = [
        c.operation == Operation.REVERSE
        and (c.reason or DEFAULT_REASONS[c.operation]) not in codes
        and (c.reason or "").upper() not in NO_AMOUNT
        for c in changes
    ]
    return np.array([wanted[line - 1] for line in frame["line"]], dtype=bool)


def _frame(changes: Sequence[Change]) -> pd.DataFrame:
    """The changes as a canonical text frame (one row per change, or per item edit)."""
    records: list[dict[str, Any]] = []
    for line, c in enumerate(changes, start=1):
        reason = c.reason or (None if c.require_reason else DEFAULT_REASONS.get(c.operation))
        base = {"line": line, "action_id": c.action_id, "order_id": c.order_id,
                "tracker": c.tracker, "reason": reason, "currency": c.currency}  # fmt: skip
        if c.operation in (Operation.MODIFY, Operation.ROW):
            base["customer_status"] = c.customer_status
        if c.items and c.operation in (Operation.MODIFY, Operation.ROW):
            records.extend(
                {**base, "is_item": True, "sku": i.sku, "quantity": i.quantity,
                 "item_amount": i.amount, "item_price": i.price, "category": i.category}
                for i in c.items
            )  # fmt: skip
            continue
        base["amount"] = c.amount
        records.append({**base, "is_item": False})
    frame = pd.DataFrame.from_records(records, columns=[*TEXT_COLUMNS, "line", "is_item"])
    for name in TEXT_COLUMNS:
        frame[name] = frame[name].astype("string[pyarrow]")
    frame["line"] = frame["line"].astype(np.int64)
    frame["is_item"] = frame["is_item"].fillna(False).astype(bool)
    return frame


TEXT_COLUMNS = (
    "action_id", "order_id", "tracker", "amount", "currency", "customer_status", "reason",
    "sku", "quantity", "item_amount", "item_price", "category",
)  # fmt: skip


def _outcomes(changes: Sequence[Change], out: Any, ids: np.ndarray) -> list[ChangeOutcome]:
    result = []
    for k, change in enumerate(changes):
        code = out.code[k]
        state = int(out.state[k])
        result.append(
            ChangeOutcome(
                action_id=str(ids[pos]) if (pos := out.action_pos[k]) >= 0 else change.action_id,
                status=str(out.status[k]),
                error_code=code,
                error_type=error_type(code) if code else None,
                message=out.message[k],
                state=str(STATE_NAMES[state]) if state >= 0 else None,
                old_amount=money_text(int(out.old_amount[k])) or None,
                new_amount=money_text(int(out.new_amount[k])) or None,
                old_payout=money_text(int(out.old_payout[k])) or None,
                new_payout=money_text(int(out.new_payout[k])) or None,
            )
        )
    return result
