"""Map a file's columns onto the canonical returns table; validate every value in one place."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from parsers.base import RawTable
from parsers.errors import DUPLICATE_COLUMN, NO_HEADER, NO_IDENTIFIER_COLUMN, FileRejected

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

# Canonical field → accepted header spellings (compared lower-case, without spaces/underscores).
ORDER_ALIASES: dict[str, tuple[str, ...]] = {
    "action_id": ("actionid",),
    "order_id": ("oid", "orderid"),
    "tracker": ("actiontrackerid",),
    "amount": ("amount",),
    "currency": ("currencycode", "currency"),
    "customer_status": ("customerstatus",),
    "reason": ("reason", "dispositioncode"),
}
ITEM_ALIASES: dict[str, tuple[str, ...]] = {
    "sku": ("sku", "itemsku"),
    "quantity": ("quantity", "itemquantity"),
    "item_amount": ("itemsubtotal",),
    "item_price": ("itemprice",),
    "category": ("category", "itemcategory"),
}
PARTNER_HEADERS = ("partnerid", "mediapartnerid", "partner", "mediaid", "publisherid")
WIDE = re.compile(r"^(sku|quantity|amount|category|itemprice)([0-9]{1,3})$")

TEXT_FIELDS = ("action_id", "order_id", "currency", "customer_status", "reason", "sku", "category")
# ASCII digits only: Unicode \d would let "٣" or "１２" through to the decimal cast.
MONEY = re.compile(r"^[0-9]{0,6}(\.[0-9]{1,2})?$")
SCIENTIFIC = r"^[+-]?[0-9]+(\.[0-9]+)?[eE][+-]?[0-9]+$"
ID_SHAPE = r"^[^\x00-\x1f\x7f]{1,64}$"  # any printable text up to 64 characters
MAX_CENTS = 99_999_999


@dataclass
class Canonical:
    """A validated returns table: one row per change (a wide item line gives several rows).

    Columns: `line` (int), text `action_id`, `order_id`, `currency`, `customer_status`, `reason`,
    `sku`, `category`; integer (nullable) `tracker`, `amount` (cents), `quantity`, `item_amount`,
    `item_price` (cents); bool `is_item`; `error_code`/`error_message` set on invalid rows.
    """

    rows: pd.DataFrame
    raw: RawTable
    item_level: bool
    warnings: list[str] = field(default_factory=list)


def normalise(name: str) -> str:
    """Header spelling used for alias matching: lower case, no spaces or underscores."""
    return re.sub(r"[\s_\-]", "", str(name).strip().lower().lstrip("\ufeff"))


def canonicalise(raw: RawTable, custom_codes: Mapping[str, str] | None = None) -> Canonical:
    """Map `raw` onto the canonical columns and validate every row."""
    mapping, wide, warnings, item_level = _map_columns(raw)
    frame = _canonical_frame(raw, mapping, wide, item_level)
    rows = validate(frame, dict(custom_codes or {}))
    rows = _add_bad_rows(rows, raw)
    return Canonical(rows=rows, raw=raw, item_level=item_level, warnings=[*raw.warnings, *warnings])


def _map_columns(
    raw: RawTable,
) -> tuple[dict[str, int], dict[int, dict[str, int]], list[str], bool]:
    keys = [normalise(h) for h in raw.header]
    item_level = any(k in ITEM_ALIASES["sku"] for k in keys) or any(
        (m := WIDE.match(k)) and m.group(1) == "sku" for k in keys
    )
    aliases = {**ORDER_ALIASES, **ITEM_ALIASES}
    if item_level:
        aliases = {**aliases, "amount": (), "item_amount": ("amount", "itemsubtotal")}
    lookup = {spelling: name for name, spellings in aliases.items() for spelling in spellings}
    mapping: dict[str, int] = {}
    wide: dict[int, dict[str, int]] = {}
    warnings: list[str] = []
    for pos, (key, header) in enumerate(zip(keys, raw.header, strict=True)):
        if key in lookup:
            name = lookup[key]
            if name in mapping:
                raise FileRejected(
                    DUPLICATE_COLUMN,
                    f"columns {raw.header[mapping[name]]!r} and {header!r} both give {name}; "
                    "keep one",
                )
            mapping[name] = pos
        elif item_level and (m := WIDE.match(key)):
            part = {"amount": "item_amount", "itemprice": "item_price"}.get(m.group(1), m.group(1))
            slot = wide.setdefault(int(m.group(2)), {})
            if part in slot:
                raise FileRejected(DUPLICATE_COLUMN, f"column {header!r} appears twice; keep one")
            slot[part] = pos
        elif key in PARTNER_HEADERS:
            warnings.append(
                f"column {header!r} ignored: a returns file cannot change the partner "
                "(re-attribution is done by the operator)"
            )
        elif key == "":
            warnings.append(f"column {pos + 1} has no name and was ignored")
        else:
            warnings.append(f"unknown column {header!r} ignored")
    _check_identifiers(raw, mapping, keys)
    for n, slot in sorted(wide.items()):
        if "sku" not in slot:
            raise FileRejected(NO_IDENTIFIER_COLUMN, f"item columns numbered {n} lack Sku{n}")
    return mapping, wide, warnings, item_level


def _check_identifiers(raw: RawTable, mapping: dict[str, int], keys: list[str]) -> None:
    if "action_id" in mapping or ("order_id" in mapping and "tracker" in mapping):
        return
    known = set(ORDER_ALIASES.values()) | set(ITEM_ALIASES.values())
    if not any(k in spelling for spelling in known for k in keys):
        raise FileRejected(
            NO_HEADER,
            "the first row is not a header: it must name the columns, e.g. "
            f"ActionId,Amount,Reason (found {', '.join(map(repr, raw.header[:6]))})",
        )
    raise FileRejected(
        NO_IDENTIFIER_COLUMN,
        "the header must include ActionId, or both Oid and ActionTrackerId "
        f"(found {', '.join(map(repr, raw.header[:12]))})",
    )


def _clean(col: pd.Series) -> pd.Series:
    """Strip surrounding white space; empty → missing."""
    s = col.astype("string[pyarrow]").str.strip()
    return s.mask(s == "")


def _canonical_frame(
    raw: RawTable, mapping: dict[str, int], wide: dict[int, dict[str, int]], item_level: bool
) -> pd.DataFrame:
    n = len(raw.frame)
    empty = pd.Series(pa.nulls(n, pa.string()), dtype="string[pyarrow]")
    fields = (
        "action_id",
        "order_id",
        "tracker",
        "amount",
        "currency",
        "customer_status",
        "reason",
        "sku",
        "quantity",
        "item_amount",
        "item_price",
        "category",
    )

    def column(pos: int | None) -> pd.Series:
        if pos is None:
            return empty
        return _clean(raw.frame.iloc[:, pos]).reset_index(drop=True)

    base = {f: column(mapping.get(f)) for f in fields}
    base["line"] = pd.Series(np.asarray(raw.lines, dtype=np.int64))
    frame = pd.DataFrame(base)
    if not wide:
        frame["is_item"] = frame["sku"].notna() if item_level else False
        return frame
    parts = [frame[frame["sku"].notna()]] if "sku" in mapping else []
    for _, slot in sorted(wide.items()):
        part = frame.copy()
        for name in ("sku", "quantity", "item_amount", "item_price", "category"):
            part[name] = column(slot.get(name))
        parts.append(part[part["sku"].notna()])
    no_items = frame[~frame["line"].isin(pd.concat(parts)["line"])] if parts else frame
    frame = pd.concat([*parts, no_items], ignore_index=True)
    frame["is_item"] = frame["sku"].notna()
    return frame.sort_values("line", kind="stable").reset_index(drop=True)


Mask = np.ndarray


def _m(series: pd.Series) -> Mask:
    """A pandas boolean Series (nullable) as a plain numpy mask, missing → False."""
    return np.asarray(series.fillna(False).to_numpy(dtype=bool), dtype=bool)


def _full(s: pd.Series, pattern: str) -> Mask:
    return _m(s.str.fullmatch(pattern))


def _has(s: pd.Series) -> Mask:
    return np.asarray(s.notna().to_numpy(dtype=bool), dtype=bool)


Check = tuple[Mask, str, "str | np.ndarray"]


def _first_error(checks: list[Check], n: int) -> tuple[np.ndarray, np.ndarray]:
    code = np.full(n, None, dtype=object)
    message = np.full(n, None, dtype=object)
    for mask, err, msg in reversed(checks):
        code[mask] = err
        message[mask] = msg if isinstance(msg, str) else msg[mask]
    return code, message


MONEY_WHY = (
    (r"^-.*", "must not be negative"),
    (r"^[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?$", "has a thousands separator; write 1234.56"),
    (r"^[0-9]+,[0-9]{1,2}$", "uses a decimal comma; write a decimal point, e.g. 12.50"),
    (r"^[0-9]*\.[0-9]{3,}$", "has more than 2 decimal places"),
    (r"^[0-9]{7,}(\.[0-9]*)?$", "is too large (at most 999999.99)"),
)


def _money(s: pd.Series, column: str) -> tuple[pd.Series, list[Check]]:
    present = _has(s)
    ok = _full(s, MONEY.pattern) & _m(s != ".") & present
    cents = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        values = pa.array(s[ok].to_numpy(dtype=object), type=pa.string())
        dec = pc.cast(values, pa.decimal128(10, 2))
        scaled = pc.cast(pc.multiply(dec, pa.scalar(100, pa.decimal128(5, 0))), pa.int64())
        cents[ok] = scaled.to_numpy()
    bad = present & ~ok
    message = np.full(len(s), None, dtype=object)
    if bad.any():
        bad_values = s[bad].tolist()
        reasons = []
        for value in bad_values:
            why = next(
                (w for pattern, w in MONEY_WHY if re.match(pattern, value)),
                "is not a number like 123.45",
            )
            reasons.append(f"{column} {value!r} {why}")
        message[bad] = np.array(reasons, dtype=object)
    result = pd.Series(pd.array(np.where(ok, cents, 0), dtype="Int64"))
    result[~ok] = pd.NA
    return result, [(bad, "MALFORMED", message)]


def _whole_numbers(s: pd.Series, ok: Mask) -> pd.Series:
    """Digits-only text (already checked: `ok`) as nullable integers; the rest missing."""
    values = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        values[ok] = s[ok].astype(np.int64).to_numpy()
    return pd.Series(pd.arrays.IntegerArray(values, ~ok))


def validate(frame: pd.DataFrame, custom_codes: Mapping[str, str]) -> pd.DataFrame:
    """Type the canonical columns and mark each invalid row with its first error."""
    n = len(frame)
    out = frame.copy()
    checks: list[Check] = []
    for name, label in (("action_id", "ActionId"), ("order_id", "Oid")):
        s = out[name]
        checks.append(
            (
                _full(s, SCIENTIFIC),
                "MALFORMED",
                f"{label} looks like a number a "
                "spreadsheet turned into scientific notation; format the column as text "
                "and export again",
            )
        )
        checks.append(
            (
                _has(s) & ~_full(s, ID_SHAPE),
                "MALFORMED",
                f"{label} must be at most 64 characters, without control characters",
            )
        )
    tr = out["tracker"]
    tracker_ok = _full(tr, r"[0-9]{1,9}")
    checks.append((_has(tr) & ~tracker_ok, "MALFORMED", "ActionTrackerId must be a whole number"))
    has_action, has_order, has_tracker = _has(out["action_id"]), _has(out["order_id"]), _has(tr)
    checks.append(
        (
            ~has_action & (has_order ^ has_tracker),
            "MISSING_IDENTIFIER",
            "Oid and ActionTrackerId must be given together (or give ActionId)",
        )
    )
    checks.append(
        (
            ~has_action & ~has_order & ~has_tracker,
            "MISSING_IDENTIFIER",
            "give ActionId, or Oid and ActionTrackerId",
        )
    )

    reason = out["reason"]
    custom = _m(reason.isin(list(custom_codes)))
    upper = reason.str.upper()
    standard = _m(upper.isin(list(REASON_CODES))) & ~custom
    out["reason"] = reason.where(custom | ~standard, upper)
    checks.append(
        (~_has(reason), "MALFORMED", "Reason is required: give a reason code such as ITEM_RETURNED")
    )
    checks.append(
        (
            _has(reason) & ~custom & ~standard,
            "UNKNOWN_REASON",
            "Reason is not a reason code (e.g. ITEM_RETURNED, CONS_FRAUD, ORDER_UPDATE, "
            "RESET, APPROVED) nor a disposition code of this campaign",
        )
    )

    cur = out["currency"]
    checks.append(
        (
            _has(cur) & ~_full(cur, r"[A-Za-z]{3}"),
            "MALFORMED",
            "currencyCode must be a 3-letter ISO code such as USD",
        )
    )
    out["currency"] = cur.str.upper()
    cs = out["customer_status"]
    checks.append((_m(cs.str.len() > 64), "MALFORMED", "CustomerStatus is over 64 characters"))

    for name, label in (
        ("amount", "Amount"),
        ("item_amount", "item Amount"),
        ("item_price", "ItemPrice"),
    ):
        cents, money_checks = _money(out[name], label)
        out[name] = cents
        checks.extend(money_checks)
    q = out["quantity"]
    q_ok = _full(q, r"[0-9]{1,6}")
    checks.append((_has(q) & ~q_ok, "MALFORMED", "Quantity must be a whole number ≥ 0"))
    out["quantity"] = _whole_numbers(q, q_ok)
    out["tracker"] = _whole_numbers(tr, tracker_ok)
    item = np.asarray(out["is_item"].to_numpy(dtype=bool), dtype=bool)
    checks.append((item & ~_has(q), "MALFORMED", "Quantity is required on item rows"))
    checks.append(
        (
            item & _has(out["item_amount"]) & _has(out["item_price"]),
            "MALFORMED",
            "give the item Amount or ItemPrice, not both",
        )
    )
    checks.append((_m(out["sku"].str.len() > 128), "MALFORMED", "Sku is over 128 characters"))
    no_amount = [c for c, effect in custom_codes.items() if effect in ("reverse", "approve")]
    special = _m(out["reason"].isin(["RESET", "APPROVED", *no_amount]))
    checks.append(
        (
            ~item & ~special & ~_has(out["amount"]) & ~_has(cs) & _has(reason),
            "MALFORMED",
            "Amount is required: the new total sale amount (0 reverses the action)",
        )
    )
    code, message = _first_error(checks, n)
    out["error_code"] = pd.Series(code, dtype=object)
    out["error_message"] = pd.Series(message, dtype=object)
    return out


def _add_bad_rows(rows: pd.DataFrame, raw: RawTable) -> pd.DataFrame:
    bad = getattr(raw, "bad_rows", None) or []
    if not bad:
        return rows
    extra = pd.DataFrame(
        {
            "line": np.array([line for line, _ in bad], dtype=np.int64),
            "error_code": pd.array(["MALFORMED"] * len(bad), dtype="string[pyarrow]"),
            "error_message": pd.array([msg for _, msg in bad], dtype="string[pyarrow]"),
            "is_item": False,
        }
    )
    merged = pd.concat([rows, extra], ignore_index=True)
    return merged.sort_values("line", kind="stable").reset_index(drop=True)
