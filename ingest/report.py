"""Line outcomes of a file and the result CSV: the original columns followed by what happened."""

from __future__ import annotations

import codecs
import dataclasses
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ingest.domain import STATE_NAMES, error_type, money_texts
from ingest.results import RESULT_COLUMNS
from ingest.rules import ERROR, ActionArrays
from parsers.base import BYTE_ORDER_MARKS, RawTable
from parsers.schema import RESULT_KEYS, normalise

FORMULA_START = r"^[=+\-@\t\r]"


@dataclass
class LineOutcomes:
    """Per file line: status, error, resolved action and old/new values (-1 = none)."""

    line: npt.NDArray[np.int64]
    status: npt.NDArray[np.object_]
    code: npt.NDArray[np.object_]
    message: npt.NDArray[np.object_]
    action_pos: npt.NDArray[np.int64]
    state: npt.NDArray[np.int8]
    old_amount: npt.NDArray[np.int64]
    new_amount: npt.NDArray[np.int64]
    old_payout: npt.NDArray[np.int64]
    new_payout: npt.NDArray[np.int64]

    @classmethod
    def empty(cls, lines: npt.NDArray[np.int64], n: int) -> LineOutcomes:
        """Outcomes for `n` lines, nothing decided yet."""

        def neg() -> npt.NDArray[np.int64]:
            return np.full(n, -1, dtype=np.int64)

        return cls(
            line=lines,
            status=np.full(n, ERROR, dtype=object),
            code=np.full(n, None, object),
            message=np.full(n, None, object),
            action_pos=neg(),
            state=np.full(n, -1, dtype=np.int8),
            old_amount=neg(),
            new_amount=neg(),
            old_payout=neg(),
            new_payout=neg(),
        )

    def mark_errors(self, code: npt.NDArray[Any], message: npt.NDArray[Any]) -> None:
        """Record validation and matching errors."""
        self.code[:] = code
        self.message[:] = message

    def take(self, sel: npt.NDArray[np.int64], d: Any) -> None:
        """Store a round's decision for the lines at `sel`."""
        self.status[sel], self.code[sel], self.message[sel] = d.status, d.code, d.message
        self.state[sel] = np.where(d.status == ERROR, d.old_state, d.new_state)
        self.old_amount[sel], self.old_payout[sel] = d.old_amount, d.old_payout
        keep = d.status == ERROR
        self.new_amount[sel] = np.where(keep, d.old_amount, d.new_amount)
        self.new_payout[sel] = np.where(keep, d.old_payout, d.new_payout)

    def counts(self) -> dict[str, Any]:
        """Counts by status and by error code."""
        by_status = Counter(self.status.tolist())
        by_code = Counter(c for c in self.code.tolist() if c)
        return {
            "lines": len(self.line),
            "applied": by_status.get("APPLIED", 0),
            "unchanged": by_status.get("UNCHANGED", 0),
            "errors": by_status.get("ERROR", 0),
            "by_error_code": dict(sorted(by_code.items())),
        }


def neutralise(column: pa.Array) -> pa.Array:
    """Prefix cells a spreadsheet would run as a formula (=, +, -, @, tab, CR) with a quote."""
    column = pc.cast(column, pa.string())
    risky = pc.fill_null(pc.match_substring_regex(column, FORMULA_START), False)
    quoted = pc.binary_join_element_wise(pa.scalar("'"), column, "")
    return pc.if_else(risky, quoted, column)


def outcome_columns(out: LineOutcomes, arrays: ActionArrays) -> list[pa.Array]:
    """The result columns (Line … NewPayout) as text arrays, in RESULT_COLUMNS order."""
    has_pos = out.action_pos >= 0
    ids = np.where(
        has_pos, arrays.ids[np.maximum(out.action_pos, 0)] if len(arrays.ids) else "", ""
    )
    states = np.where(out.state >= 0, STATE_NAMES[np.maximum(out.state, 0)], "")
    codes = pd.Series(out.code, dtype=object)
    types = codes.map({c: error_type(c) for c in codes.dropna().unique()})
    return [
        pc.cast(pa.array(out.line), pa.string()),
        _text(out.status),
        _text(types.to_numpy(dtype=object)),
        _text(out.code),
        neutralise(_text(out.message)),
        neutralise(_text(ids)),
        _text(states),
        money_texts(out.old_amount),
        money_texts(out.new_amount),
        money_texts(out.old_payout),
        money_texts(out.new_payout),
    ]


def _text(values: npt.NDArray[Any]) -> pa.Array:
    """An object array of str/None as an arrow string array, None → ''."""
    return pc.fill_null(pa.array(values, type=pa.string(), from_pandas=True), "")


def without_result_columns(raw: RawTable) -> RawTable:
    """The table without columns named like returnsd's result columns (a result sent back).

    They are written anew in the result, so a result can be sent again as it is: its outcome
    columns are neither applied, nor reported as unknown, nor repeated.
    """
    keep = [i for i, h in enumerate(raw.header) if normalise(h) not in RESULT_KEYS]
    if len(keep) == len(raw.header):
        return raw
    dropped = [str(h) for i, h in enumerate(raw.header) if i not in set(keep)]
    frame = raw.frame.iloc[:, keep].copy()
    frame.columns = pd.RangeIndex(len(keep))
    changes: dict[str, Any] = {
        "header": [raw.header[i] for i in keep],
        "frame": frame,
        "warnings": [
            *raw.warnings,
            f"result columns ignored (returnsd writes them anew): {', '.join(dropped)}",
        ],
    }
    inexact = getattr(raw, "inexact_numbers", None)
    if inexact:  # masks are keyed by column position
        changes["inexact_numbers"] = {keep.index(i): m for i, m in inexact.items() if i in keep}
    return dataclasses.replace(raw, **changes)


def write_result(path: Path, raw: RawTable, out: LineOutcomes, arrays: ActionArrays) -> Path:
    """Write the result CSV atomically (temp name, fsync, rename) and return its path.

    The result answers in the input's dialect: its delimiter, its encoding (a byte-order mark
    when the input had one; UTF-16 always has one). Workbooks and XML get UTF-8 with commas.
    """
    # Each result line takes its original cells from the raw row with the same line number;
    # lines that never made it into the table (ragged rows) get empty cells.
    where = pd.Index(np.asarray(raw.lines, dtype=np.int64)).get_indexer(out.line)
    header = neutralise(pa.array([str(h) for h in raw.header], pa.string())).to_pylist()
    names = [*header, *RESULT_COLUMNS]
    cells = [
        pa.array(raw.frame.iloc[:, i], type=pa.string(), from_pandas=True)
        for i in range(len(raw.header))
    ]  # arrow text: compact, taken from slice by slice
    schema = pa.schema([pa.field(f"c{i}", pa.string()) for i in range(len(names))])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    delimiter = raw.delimiter if raw.format == "csv" and raw.delimiter else ","
    options = pacsv.WriteOptions(quoting_style="needed", delimiter=delimiter, include_header=False)
    with (
        pa.OSFile(str(tmp), "wb") as sink,
        pacsv.CSVWriter(sink, schema, write_options=options) as w,
    ):
        w.write_table(
            pa.Table.from_arrays([pa.array([n], pa.string()) for n in names], schema=schema)
        )
        for start in range(0, len(out.line), RESULT_CHUNK):  # bounded: one slice of text at a time
            part = slice(start, start + RESULT_CHUNK)
            columns = [*_original(cells, where[part]), *outcome_columns(_sliced(out, part), arrays)]
            w.write_table(pa.Table.from_arrays(columns, schema=schema))
    _to_dialect(tmp, raw)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


RESULT_CHUNK = 100_000  # result lines turned into text at a time


def _original(cells: list[pa.Array], where: npt.NDArray[np.int64]) -> list[pa.Array]:
    """The input's cells of these rows (-1: none), neutralised, as text columns."""
    take = pa.array(where, mask=where < 0)
    return [neutralise(pc.fill_null(column.take(take), "")) for column in cells]


def _sliced(out: LineOutcomes, part: slice) -> LineOutcomes:
    """The outcomes of a slice of the lines."""
    return LineOutcomes(**{f.name: getattr(out, f.name)[part] for f in dataclasses.fields(out)})


def _to_dialect(path: Path, raw: RawTable) -> None:
    """Re-encode the UTF-8 CSV at `path` in the input's encoding, with its byte-order mark.

    Characters the encoding lacks become `?` (the input's own cells all fit, being read from it).
    """
    if raw.format != "csv":
        return
    encoding = codecs.lookup(raw.encoding or "utf-8").name
    bom = BYTE_ORDER_MARKS.get(encoding, b"") if raw.bom or "16" in encoding else b""
    if encoding == "utf-8" and not bom:
        return
    data = path.read_bytes()
    if encoding != "utf-8":
        data = data.decode("utf-8").encode(encoding, errors="replace")
    path.write_bytes(bom + data)
