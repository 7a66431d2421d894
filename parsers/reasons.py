"""Reason codes: the standard list.

Standard codes match in any case (``item_returned`` is ``ITEM_RETURNED``); a campaign's custom
disposition codes match exactly, because they are case-sensitive.
"""

from __future__ import annotations

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
