"""`validate`: type the canonical columns and mark each invalid row with its first error.

The checks are one table, `RULES`, of (column, check, code, message) rows tried in order; a row's
error is the first rule it breaks. A message is text, or a function of the failing rows when it
echoes their values. Typing follows the schema: text is upper-cased where a code is meant
(currency, standard reasons), money becomes exact cents (via decimal, never a float), whole
numbers become nullable integers; a value that does not fit is missing and its row has an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from parsers.reasons import REASON_CODES, unknown_reason_message
from parsers.schema import FIELDS, SCHEMA, Kind

Mask = np.ndarray
MALFORMED = "MALFORMED"
MISSING_IDENTIFIER = "MISSING_IDENTIFIER"
UNKNOWN_REASON = "UNKNOWN_REASON"
ROW_ERRORS = (MALFORMED, MISSING_IDENTIFIER, UNKNOWN_REASON)

# ASCII digits only: Unicode \d would let "٣" or "１２" through to the decimal cast.
MONEY = r"[0-9]{0,6}(\.[0-9]{1,2})?"
SCIENTIFIC = r"[+-]?[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+"
ID_SHAPE = r"[^\x00-\x1f\x7f]{1,64}"  # any printable text up to 64 characters
WHOLE = {"tracker": r"[0-9]{1,9}", "quantity": r"[0-9]{1,6}"}
MONEY_WHY = (
    (r"^-.*", "must not be negative"),
    (r"^[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?$", "has a thousands separator; write 1234.56"),
    (r"^[0-9]+,[0-9]{1,2}$", "uses a decimal comma; write a decimal point, e.g. 12.50"),
    (r"^[0-9]*\.[0-9]{3,}$", "has more than 2 decimal places"),
    (r"^[0-9]{7,}(\.[0-9]*)?$", "is too large (at most 999999.99)"),
)
SUGGESTED = 1_000  # distinct unknown reasons given a "did you mean" (~0.2 ms each); others not
NUMBER_CELL = "number_cell"  # frame column: the identifier field whose cell was an inexact number


def _m(series: pd.Series) -> Mask:
    """A pandas boolean Series (nullable) as a plain numpy mask, missing → False."""
    return np.asarray(series.fillna(False).to_numpy(dtype=bool), dtype=bool)


@dataclass
class Money:
    """One money column checked: cents where valid, and why each other present value is not."""

    cents: pd.Series
    bad: Mask
    why: np.ndarray  # the message on bad rows, None elsewhere


class Values:
    """The columns of one canonical frame as the rules see them; what several rules use, once."""

    def __init__(self, frame: pd.DataFrame, custom_codes: Mapping[str, str]) -> None:
        self.frame = frame
        self.codes = dict(custom_codes)
        self._money: dict[str, Money] = {}

    def text(self, name: str) -> pd.Series:
        """The column as text (trimmed; empty is missing)."""
        return self.frame[name]

    def has(self, name: str) -> Mask:
        """Rows where the column has a value."""
        return np.asarray(self.frame[name].notna().to_numpy(dtype=bool), dtype=bool)

    def full(self, name: str, pattern: str) -> Mask:
        """Rows whose value matches `pattern` whole."""
        return _m(self.frame[name].str.fullmatch(pattern))

    def longer(self, name: str, limit: int) -> Mask:
        """Rows whose value is over `limit` characters."""
        return _m(self.frame[name].str.len() > limit)

    def whole(self, name: str) -> Mask:
        """Rows whose value is a whole number of the column's shape."""
        return self.full(name, WHOLE[name])

    def number_cell(self, name: str) -> Mask:
        """Rows whose `name` cell was a number that cannot hold an id exactly (workbooks only)."""
        if NUMBER_CELL not in self.frame:
            return np.zeros(len(self.frame), bool)
        return _m(self.frame[NUMBER_CELL] == name)

    @cached_property
    def is_item(self) -> Mask:
        """Rows that change one item (one row per item)."""
        return np.asarray(self.frame["is_item"].to_numpy(dtype=bool), dtype=bool)

    @cached_property
    def custom(self) -> Mask:
        """Rows whose reason is one of the campaign's codes, exactly (they are case-sensitive)."""
        return _m(self.frame["reason"].isin(list(self.codes)))

    @cached_property
    def standard(self) -> Mask:
        """Rows whose reason is a standard code in any case (and not a custom code)."""
        standard: Mask = _m(self.frame["reason"].str.upper().isin(list(REASON_CODES)))
        return np.asarray(standard & ~self.custom, dtype=bool)

    @cached_property
    def reason(self) -> pd.Series:
        """The reason as the engine matches it: standard codes upper-cased, the rest as sent."""
        reason = self.frame["reason"]
        return reason.where(self.custom | ~self.standard, reason.str.upper())

    def money(self, name: str) -> Money:
        """The money column `name` checked (computed once)."""
        if name not in self._money:
            self._money[name] = _money(self.frame[name], FIELDS[name].label)
        return self._money[name]

    @cached_property
    def amount_free(self) -> Mask:
        """Rows whose reason takes no amount: RESET, APPROVED, a custom reverse/approve code."""
        codes = [c for c, effect in self.codes.items() if effect in ("reverse", "approve")]
        return _m(self.reason.isin(["RESET", "APPROVED", *codes]))


Message = str | Callable[[Values, Mask], Sequence[str]]


@dataclass(frozen=True)
class Rule:
    """One check: rows where `check` is True get `code` and `message`, if no earlier rule did."""

    column: str
    check: Callable[[Values], Mask]
    code: str
    message: Message


def _money(s: pd.Series, label: str) -> Money:
    present = np.asarray(s.notna().to_numpy(dtype=bool), dtype=bool)
    ok = _m(s.str.fullmatch(MONEY)) & _m(s != ".") & present
    cents = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        values = pa.array(s[ok].to_numpy(dtype=object), type=pa.string())
        dec = pc.cast(values, pa.decimal128(10, 2))
        scaled = pc.cast(pc.multiply(dec, pa.scalar(100, pa.decimal128(5, 0))), pa.int64())
        cents[ok] = scaled.to_numpy()
    bad = present & ~ok
    why = np.full(len(s), None, dtype=object)
    if bad.any():
        why[bad] = np.array([f"{label} {v!r} {_money_why(v)}" for v in s[bad]], dtype=object)
    return Money(pd.Series(pd.arrays.IntegerArray(cents, ~ok)), bad, why)


def _money_why(value: str) -> str:
    return next((w for p, w in MONEY_WHY if re.match(p, value)), "is not a number like 123.45")


def _whole_numbers(s: pd.Series, ok: Mask) -> pd.Series:
    """Digits-only text (already checked: `ok`) as nullable integers; the rest missing."""
    values = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        values[ok] = s[ok].astype(np.int64).to_numpy()
    return pd.Series(pd.arrays.IntegerArray(values, ~ok))


def _unknown_reasons(v: Values, rows: Mask) -> list[str]:
    reasons = v.text("reason")[rows]
    said = {
        value: unknown_reason_message(value, v.codes, suggest=i < SUGGESTED)
        for i, value in enumerate(dict.fromkeys(reasons))
    }
    return [said[value] for value in reasons]


def _number_cells(name: str) -> Rule:
    label = FIELDS[name].label

    def message(v: Values, rows: Mask) -> list[str]:
        return [
            f"{label} was a number cell (read as {value}), not text, and a number cell does not "
            "keep an id's digits exactly (only whole numbers up to 9007199254740991); format the "
            f"{label} column as Text and enter the ids again"
            for value in v.text(name)[rows]
        ]

    return Rule(name, lambda v: v.number_cell(name), MALFORMED, message)


def _identifier(name: str) -> tuple[Rule, ...]:
    label = FIELDS[name].label
    return (
        _number_cells(name),
        Rule(
            name,
            lambda v: v.full(name, SCIENTIFIC),
            MALFORMED,
            f"{label} looks like a number a spreadsheet turned into scientific notation; format "
            "the column as text and export again",
        ),
        Rule(
            name,
            lambda v: v.has(name) & ~v.full(name, ID_SHAPE),
            MALFORMED,
            f"{label} must be at most 64 characters, without control characters",
        ),
    )


def _money_rule(name: str) -> Rule:
    def message(v: Values, rows: Mask) -> list[str]:
        return list(v.money(name).why[rows])

    return Rule(name, lambda v: v.money(name).bad, MALFORMED, message)


RULES: tuple[Rule, ...] = (
    *_identifier("action_id"),
    *_identifier("order_id"),
    Rule(
        "tracker",
        lambda v: v.has("tracker") & ~v.whole("tracker"),
        MALFORMED,
        "ActionTrackerId must be a whole number",
    ),
    Rule(
        "order_id",
        lambda v: ~v.has("action_id") & (v.has("order_id") ^ v.has("tracker")),
        MISSING_IDENTIFIER,
        "Oid and ActionTrackerId must be given together (or give ActionId)",
    ),
    Rule(
        "action_id",
        lambda v: ~v.has("action_id") & ~v.has("order_id") & ~v.has("tracker"),
        MISSING_IDENTIFIER,
        "give ActionId, or Oid and ActionTrackerId",
    ),
    Rule(
        "reason",
        lambda v: ~v.has("reason"),
        MALFORMED,
        "Reason is required: give a reason code such as ITEM_RETURNED",
    ),
    Rule(
        "reason",
        lambda v: v.has("reason") & ~v.custom & ~v.standard,
        UNKNOWN_REASON,
        _unknown_reasons,
    ),
    Rule(
        "currency",
        lambda v: v.has("currency") & ~v.full("currency", r"[A-Za-z]{3}"),
        MALFORMED,
        "currencyCode must be a 3-letter ISO code such as USD",
    ),
    Rule(
        "customer_status",
        lambda v: v.longer("customer_status", 64),
        MALFORMED,
        "CustomerStatus is over 64 characters",
    ),
    _money_rule("amount"),
    _money_rule("item_amount"),
    _money_rule("item_price"),
    Rule(
        "quantity",
        lambda v: v.has("quantity") & ~v.whole("quantity"),
        MALFORMED,
        "Quantity must be a whole number ≥ 0",
    ),
    Rule(
        "quantity",
        lambda v: v.is_item & ~v.has("quantity"),
        MALFORMED,
        "Quantity is required on item rows",
    ),
    Rule(
        "item_price",
        lambda v: v.is_item & v.has("item_amount") & v.has("item_price"),
        MALFORMED,
        "give the item Amount or ItemPrice, not both",
    ),
    _number_cells("sku"),
    Rule("sku", lambda v: v.longer("sku", 128), MALFORMED, "Sku is over 128 characters"),
    Rule(
        "amount",
        lambda v: (
            ~v.is_item
            & ~v.amount_free
            & ~v.has("amount")
            & ~v.has("customer_status")
            & v.has("reason")
        ),
        MALFORMED,
        "Amount is required: the new total sale amount (0 reverses the action)",
    ),
)


def validate(frame: pd.DataFrame, custom_codes: Mapping[str, str]) -> pd.DataFrame:
    """Type the canonical columns and mark each invalid row with its first error."""
    values = Values(frame, custom_codes)
    code, message = first_errors(values, RULES)
    out = typed(values)
    out["error_code"] = pd.Series(code, dtype=object)
    out["error_message"] = pd.Series(message, dtype=object)
    return out


def first_errors(values: Values, rules: Sequence[Rule]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first broken rule: its code and message (None where no rule is broken)."""
    n = len(values.frame)
    code = np.full(n, None, dtype=object)
    message = np.full(n, None, dtype=object)
    open_rows = np.ones(n, bool)
    for rule in rules:
        hit = rule.check(values) & open_rows
        if not hit.any():
            continue
        code[hit] = rule.code
        if isinstance(rule.message, str):
            message[hit] = rule.message
        else:
            message[hit] = np.array(list(rule.message(values, hit)), dtype=object)
        open_rows &= ~hit
    return code, message


def typed(values: Values) -> pd.DataFrame:
    """The frame with each schema column in its validated type (see the module docstring)."""
    out = values.frame.drop(columns=NUMBER_CELL, errors="ignore")
    for f in SCHEMA:
        if f.kind is Kind.MONEY:
            out[f.name] = values.money(f.name).cents
        elif f.kind is Kind.WHOLE:
            out[f.name] = _whole_numbers(values.text(f.name), values.whole(f.name))
    out["reason"] = values.reason
    out["currency"] = values.text("currency").str.upper()
    return out
