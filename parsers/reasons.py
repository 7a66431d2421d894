"""Reason codes: the standard list, how a reason is recognised, and what to say when it is not.

Standard codes match in any case (``item_returned`` is ``ITEM_RETURNED``); a campaign's custom
disposition codes match exactly, because they are case-sensitive. An unknown reason is answered
with the value as sent and, when one is near, the code it was probably meant to be.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

REASON_CODES = frozenset(
    {
        "CONS_FRAUD",
        "CONS_ERROR",
        "CONS_INFO_INVALID",
        "ITEM_RETURNED",
        "MP_RETURNED",
        "ITEM_OUT_OF_STOCK",
        "ORDER_ERROR",
        "ORDER_UPDATE",
        "PUB_ACT_DISPUTE",
        "ADV_ACT_DISPUTE",
        "NOT_COMPLIANCE_TERMS",
        "TEST_ACTION",
        "REJECTED",
        "OTHER",
        "APPROVED",
        "RESET",
    }
)
EXAMPLES = "ITEM_RETURNED, CONS_FRAUD, ORDER_UPDATE, RESET, APPROVED"
SIMILAR = 0.6  # difflib ratio from which a code is offered as "did you mean"
SHOWN = 40  # characters of an unknown value echoed in the message
_SEPARATORS = re.compile(r"[\s_\-.]+")


def reason_key(value: str) -> str:
    """A reason reduced for comparison: upper case, each run of separators (space - . _) one `_`."""
    return _SEPARATORS.sub("_", value.strip()).strip("_").upper()


def suggest_reason(value: str, custom_codes: Iterable[str] = ()) -> str | None:
    """The code `value` was most likely meant to be (standard or the campaign's), or None.

    A code whose `reason_key` equals the value's wins (``Item Returned`` → ``ITEM_RETURNED``);
    else the closest by difflib's ratio on those keys, if at least `SIMILAR`.
    """
    codes = [*sorted(REASON_CODES), *sorted(custom_codes)]
    by_key: dict[str, str] = {}
    for code in codes:
        by_key.setdefault(reason_key(code), code)
    key = reason_key(value)
    if key in by_key:
        return by_key[key]
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=SIMILAR)
    return by_key[close[0]] if close else None


def unknown_reason_message(
    value: str, custom_codes: Iterable[str] = (), *, suggest: bool = True
) -> str:
    """What to tell the sender of a reason that is neither a standard nor a custom code.

    The value is echoed (cut at `SHOWN` characters); with `suggest`, the nearest code is offered
    (`suggest_reason`), with a reminder that custom codes are case-sensitive when it is one.
    """
    custom = list(custom_codes)
    shown = value if len(value) <= SHOWN else value[: SHOWN - 1] + "…"
    head = f"Reason {shown!r} is neither a reason code nor a disposition code of this campaign"
    suggestion = suggest_reason(value, custom) if suggest and len(value) <= 4 * SHOWN else None
    if suggestion is None:
        return f"{head} (reason codes are e.g. {EXAMPLES})"
    if suggestion in custom and reason_key(suggestion) == reason_key(value):
        return (
            f"{head}; did you mean {suggestion}? The campaign's disposition codes are "
            "case-sensitive: write them exactly as defined"
        )
    return f"{head}; did you mean {suggestion}?"
