"""Which reason fits which operation: the one rule every way in (file, CLI, console, API) obeys.

A file row's operation follows from its reason and amount (RESET resets, APPROVED and custom
`approve` codes approve, custom `reverse` codes reverse, any other reason modifies, and Amount 0
reverses). A request that names its operation must bring a reason that fits it. An Amount given
with a reason that reverses, approves or resets would be dropped, so it is an error instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ingest.rules import OP_APPROVE, OP_MODIFY, OP_RESET, OP_REVERSE, OPS
from parsers.reasons import REASON_CODES

EFFECTS = {"modify": OP_MODIFY, "reverse": OP_REVERSE, "approve": OP_APPROVE}
STANDARD = {"RESET": OP_RESET, "APPROVED": OP_APPROVE}
# Standard codes that describe why an action changes (not what to do with it).
CHANGE_REASONS = tuple(sorted(REASON_CODES - set(STANDARD)))
NO_OP = -1  # a file row: the operation follows from its reason and amount


def effect(reason: str, custom: Mapping[str, str]) -> int:
    """The operation a reason asks for on its own (no amount looked at)."""
    if reason in custom:
        return EFFECTS[custom[reason]]
    return STANDARD.get(reason, OP_MODIFY)


def fits(op: int, reason: str, custom: Mapping[str, str]) -> bool:
    """Does `reason` fit an explicitly requested operation `op`?

    A reversal or a modification takes one of the standard change reasons or a custom code of
    that effect; an approval takes APPROVED or a custom `approve` code; a reset takes RESET.
    """
    if reason in custom:
        return EFFECTS[custom[reason]] == op
    if op in (OP_MODIFY, OP_REVERSE):
        return reason in CHANGE_REASONS
    return STANDARD.get(reason) == op


def allowed(op: int, custom: Mapping[str, str]) -> list[str]:
    """The reasons that fit `op`, for messages."""
    own = sorted(c for c, e in custom.items() if EFFECTS[e] == op)
    if op in (OP_MODIFY, OP_REVERSE):
        return [*CHANGE_REASONS, *own]
    return [*(name for name, code in STANDARD.items() if code == op), *own]


def misfit_message(op: int, reason: str, custom: Mapping[str, str]) -> str:
    """Why `reason` cannot be used for `op`."""
    shown = allowed(op, custom)
    listed = ", ".join(shown[:8]) + (", …" if len(shown) > 8 else "")
    return f"{reason!r} is not a reason for {OPS[op]}: use one of {listed}"


VERBS = {OP_REVERSE: "reverses", OP_APPROVE: "approves", OP_RESET: "resets"}


def amount_message(reason: str, op: int) -> str:
    """Why an Amount cannot be given with a reason that reverses, approves or resets."""
    return (
        f"Amount cannot be given with Reason {reason!r}: it {VERBS[op]} the action, so the "
        "amount would be ignored; leave Amount empty, or use a modification reason"
    )


def check_rows(rows: pd.DataFrame, custom: Mapping[str, str]) -> pd.DataFrame:
    """Mark valid rows whose reason does not fit: an Amount with a reason that reverses,
    approves or resets, or a requested operation (column `op`) the reason does not fit."""
    valid = rows["error_code"].isna().to_numpy()
    if not valid.any():
        return rows
    reasons = rows["reason"].to_numpy(dtype=object, na_value=None)
    requested = rows["op"].to_numpy(dtype=np.int64) if "op" in rows else None
    given = rows["amount"].notna().to_numpy() & ~rows["is_item"].to_numpy(dtype=bool)
    code = rows["error_code"].to_numpy(dtype=object, na_value=None).copy()
    message = rows["error_message"].to_numpy(dtype=object, na_value=None).copy()
    effects = {r: effect(str(r), custom) for r in pd.unique(reasons[valid])}
    own = pd.Series(reasons, dtype=object).map(effects).fillna(OP_MODIFY).to_numpy(np.int64)
    for i in np.flatnonzero(valid & given & np.isin(own, (OP_REVERSE, OP_APPROVE, OP_RESET))):
        code[i], message[i] = "MALFORMED", amount_message(str(reasons[i]), int(own[i]))
    if requested is not None:
        extra = valid & given & pd.isna(code) & (requested != NO_OP) & (requested != OP_MODIFY)
        for i in np.flatnonzero(extra):
            code[i], message[i] = "MALFORMED", f"Amount cannot be given to {OPS[requested[i]]}"
        for i in np.flatnonzero(valid & (requested != NO_OP) & pd.isna(code)):
            if not fits(int(requested[i]), str(reasons[i]), custom):
                code[i] = "UNKNOWN_REASON"
                message[i] = misfit_message(int(requested[i]), str(reasons[i]), custom)
    return rows.assign(error_code=code, error_message=message)
