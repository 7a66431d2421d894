"""Map a file's columns onto the canonical returns table (`parsers.schema`), then validate it.

Header names match the schema's spellings in any case, without spaces, ``_`` or ``-``. A column
that maps to nothing is ignored with a warning: a partner column (a returns file cannot change the
partner), a nameless column, an unknown one; the columns returnsd adds to a result file
(`RESULT_HEADERS`) are ignored with one note, so that a result whose error rows were fixed can be
sent back as it is. Two columns giving one field reject the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from parsers.base import RawTable
from parsers.errors import DUPLICATE_COLUMN, NO_HEADER, NO_IDENTIFIER_COLUMN, FileRejected
from parsers.schema import (
    IDENTIFIERS,
    ITEM_FIELDS,
    PARTNER_HEADERS,
    RESULT_KEYS,
    SCHEMA,
    WIDE,
    WIDE_PARTS,
    Kind,
    is_item_level,
    known_spellings,
    normalise,
    spellings,
)
from parsers.validation import NUMBER_CELL, validate

__all__ = ["Canonical", "canonicalise", "normalise", "validate"]

Wide = dict[int, dict[str, int]]  # wide item form: item number → field → column position


@dataclass
class Canonical:
    """A validated returns table: one row per change (a wide item line gives several rows).

    Columns: `line` (int), then one per `parsers.schema.SCHEMA` field in its validated type
    (text; nullable integers; money in cents), bool `is_item`, and `error_code`/`error_message`
    set on invalid rows.
    """

    rows: pd.DataFrame
    raw: RawTable
    item_level: bool
    warnings: list[str] = field(default_factory=list)


def canonicalise(raw: RawTable, custom_codes: Mapping[str, str] | None = None) -> Canonical:
    """Map `raw` onto the canonical columns and validate every row."""
    columns = _map_columns(raw)
    frame = _canonical_frame(raw, columns)
    rows = validate(frame, dict(custom_codes or {}))
    rows = _add_bad_rows(rows, raw)
    warnings = [*raw.warnings, *columns.warnings]
    return Canonical(rows=rows, raw=raw, item_level=columns.item_level, warnings=warnings)


@dataclass
class _Columns:
    """Where each canonical field is in the file, and what was ignored."""

    item_level: bool
    mapping: dict[str, int] = field(default_factory=dict)  # field → column position
    wide: Wide = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    result_columns: list[str] = field(default_factory=list)


def _map_columns(raw: RawTable) -> _Columns:
    keys = [normalise(h) for h in raw.header]
    columns = _Columns(item_level=is_item_level(keys))
    lookup = spellings(columns.item_level)
    for pos, (key, header) in enumerate(zip(keys, raw.header, strict=True)):
        if key in lookup:
            _place(columns, lookup[key], pos, raw.header)
        elif columns.item_level and (m := WIDE.match(key)):
            slot = columns.wide.setdefault(int(m.group(2)), {})
            if WIDE_PARTS[m.group(1)] in slot:
                raise FileRejected(DUPLICATE_COLUMN, f"column {header!r} appears twice; keep one")
            slot[WIDE_PARTS[m.group(1)]] = pos
        else:
            _ignore(columns, key, pos, header)
    if columns.result_columns:
        names = ", ".join(columns.result_columns)
        columns.warnings.append(f"columns {names} ignored: returnsd writes them in its results")
    _check_identifiers(raw, columns.mapping, keys)
    for n, slot in sorted(columns.wide.items()):
        if "sku" not in slot:
            raise FileRejected(NO_IDENTIFIER_COLUMN, f"item columns numbered {n} lack Sku{n}")
    return columns


def _place(columns: _Columns, name: str, pos: int, header: list[str]) -> None:
    if name in columns.mapping:
        raise FileRejected(
            DUPLICATE_COLUMN,
            f"columns {header[columns.mapping[name]]!r} and {header[pos]!r} both give {name}; "
            "keep one",
        )
    columns.mapping[name] = pos


def _ignore(columns: _Columns, key: str, pos: int, header: str) -> None:
    if key in PARTNER_HEADERS:
        columns.warnings.append(
            f"column {header!r} ignored: a returns file cannot change the partner "
            "(re-attribution is done by the operator)"
        )
    elif key in RESULT_KEYS:
        columns.result_columns.append(header)
    elif key == "":
        columns.warnings.append(f"column {pos + 1} has no name and was ignored")
    else:
        columns.warnings.append(f"unknown column {header!r} ignored")


def _check_identifiers(raw: RawTable, mapping: dict[str, int], keys: list[str]) -> None:
    if "action_id" in mapping or ("order_id" in mapping and "tracker" in mapping):
        return
    known = known_spellings()
    if not any(k in known for k in keys):
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
    s = col.astype(Kind.TEXT.dtype).str.strip()
    return s.mask(s == "")


def _canonical_frame(raw: RawTable, columns: _Columns) -> pd.DataFrame:
    """One text column per schema field (missing where the file has none), `line` and `is_item`."""
    frame = _fields_at(raw, columns.mapping)
    if not columns.wide:
        frame["is_item"] = frame["sku"].notna() if columns.item_level else False
        return frame
    parts = [frame[frame["sku"].notna()]] if "sku" in columns.mapping else []
    for _, slot in sorted(columns.wide.items()):
        part = _fields_at(raw, {**columns.mapping, **dict.fromkeys(ITEM_FIELDS, -1), **slot})
        parts.append(part[part["sku"].notna()])
    no_items = frame[~frame["line"].isin(pd.concat(parts)["line"])] if parts else frame
    frame = pd.concat([*parts, no_items], ignore_index=True)
    frame["is_item"] = frame["sku"].notna()
    return frame.sort_values("line", kind="stable").reset_index(drop=True)


def _fields_at(raw: RawTable, mapping: Mapping[str, int]) -> pd.DataFrame:
    """The schema fields read from these column positions (absent or -1: missing), and `line`."""
    n = len(raw.frame)
    empty = pd.Series(pa.nulls(n, pa.string()), dtype=Kind.TEXT.dtype)

    def column(pos: int) -> pd.Series:
        return empty if pos < 0 else _clean(raw.frame.iloc[:, pos]).reset_index(drop=True)

    base = {f.name: column(mapping.get(f.name, -1)) for f in SCHEMA}
    base["line"] = pd.Series(np.asarray(raw.lines, dtype=np.int64))
    if raw.inexact_numbers:
        base[NUMBER_CELL] = _number_cells(raw, mapping, n)
    return pd.DataFrame(base)


def _number_cells(raw: RawTable, mapping: Mapping[str, int], n: int) -> pd.Series:
    """Per row, the first identifier field whose cell was a number with no exact text."""
    found = np.full(n, None, dtype=object)
    for name in reversed(IDENTIFIERS):
        mask = raw.inexact_numbers.get(mapping.get(name, -1))
        if mask is not None:
            found[mask] = name
    return pd.Series(found, dtype=object)


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
