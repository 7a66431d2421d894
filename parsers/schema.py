"""The canonical returns table: every field once, with its header spellings, its label and type.

Header names are compared normalised (lower case, without white space, ``_`` or ``-``), so
``ActionID``, ``action_id`` and ``Action Id`` are one spelling. A file is item-level when it has a
Sku column (``Sku`` or the wide form ``Sku1``, ``Sku2``, …); there an ``Amount`` column is the
item's amount, not the action's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    """What a field's text becomes once validated."""

    TEXT = "text"  # kept as text, trimmed; empty → missing
    WHOLE = "whole"  # a whole number
    MONEY = "money"  # an amount in cents (decimal(8,2) in files)

    @property
    def dtype(self) -> str:
        """The pandas dtype of a validated column of this kind."""
        return "string[pyarrow]" if self is Kind.TEXT else "Int64"


@dataclass(frozen=True)
class Field:
    """One canonical column."""

    name: str  # the canonical column name
    label: str  # how messages name the column
    kind: Kind
    aliases: tuple[str, ...]  # normalised header spellings
    item: bool = False  # an item-level field: one row per item
    wide: str | None = None  # prefix of the wide item form (Sku1, Quantity1, Amount1, …)
    item_file_aliases: tuple[str, ...] | None = None  # spellings in an item-level file, if other
    identifier: bool = False  # names something to find: a number cell must be exact


SCHEMA: tuple[Field, ...] = (
    Field("action_id", "ActionId", Kind.TEXT, ("actionid",), identifier=True),
    Field("order_id", "Oid", Kind.TEXT, ("oid", "orderid"), identifier=True),
    Field("tracker", "ActionTrackerId", Kind.WHOLE, ("actiontrackerid",)),
    Field("amount", "Amount", Kind.MONEY, ("amount",), item_file_aliases=()),
    Field("currency", "currencyCode", Kind.TEXT, ("currencycode", "currency")),
    Field("customer_status", "CustomerStatus", Kind.TEXT, ("customerstatus",)),
    Field("reason", "Reason", Kind.TEXT, ("reason", "dispositioncode")),
    Field("sku", "Sku", Kind.TEXT, ("sku", "itemsku"), item=True, wide="sku", identifier=True),
    Field(
        "quantity", "Quantity", Kind.WHOLE, ("quantity", "itemquantity"), item=True, wide="quantity"
    ),
    Field(
        "item_amount",
        "item Amount",
        Kind.MONEY,
        ("itemsubtotal",),
        item=True,
        wide="amount",
        item_file_aliases=("amount", "itemsubtotal"),
    ),
    Field("item_price", "ItemPrice", Kind.MONEY, ("itemprice",), item=True, wide="itemprice"),
    Field(
        "category", "Category", Kind.TEXT, ("category", "itemcategory"), item=True, wide="category"
    ),
)
FIELDS = {f.name: f for f in SCHEMA}
ITEM_FIELDS = tuple(f.name for f in SCHEMA if f.item)
IDENTIFIERS = tuple(f.name for f in SCHEMA if f.identifier)
WIDE_PARTS = {f.wide: f.name for f in SCHEMA if f.wide}
WIDE = re.compile(rf"^({'|'.join(WIDE_PARTS)})([0-9]{{1,3}})$")  # e.g. sku2, amount12

# Reported and ignored: a returns file cannot change the partner (re-attribution is the operator's).
PARTNER_HEADERS = ("partnerid", "mediapartnerid", "partner", "mediaid", "publisherid")
# The columns returnsd adds to a result file: ignored, so that a result fixed and sent back reads.
RESULT_HEADERS = (
    "Line",
    "Status",
    "ErrorType",
    "ErrorCode",
    "Message",
    "ResolvedActionId",
    "State",
    "OldAmount",
    "NewAmount",
    "OldPayout",
    "NewPayout",
)


def normalise(name: str) -> str:
    """Header spelling used for alias matching: lower case, no spaces, underscores or hyphens."""
    return re.sub(r"[\s_\-]", "", str(name).strip().lower().lstrip("\ufeff"))


RESULT_KEYS = frozenset(normalise(h) for h in RESULT_HEADERS)


def spellings(item_level: bool) -> dict[str, str]:
    """Normalised header spelling → canonical field, for an order-level or item-level file."""
    lookup: dict[str, str] = {}
    for f in SCHEMA:
        aliases = f.item_file_aliases if item_level and f.item_file_aliases is not None else None
        for spelling in f.aliases if aliases is None else aliases:
            lookup[spelling] = f.name
    return lookup


def is_item_level(keys: list[str]) -> bool:
    """Tell whether normalised header `keys` name a Sku column (plain or wide form)."""
    sku = FIELDS["sku"]
    return any(k in sku.aliases or ((m := WIDE.match(k)) and m.group(1) == sku.wide) for k in keys)


def known_spellings() -> frozenset[str]:
    """Every spelling of every field, in either kind of file."""
    return frozenset(s for item_level in (False, True) for s in spellings(item_level))
