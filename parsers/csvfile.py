"""Delimited text → RawTable: encoding and delimiter detected, every cell kept as text.

Decisions:

- An empty cell (``a,,b`` or ``a,"",b``) is NA (``pd.NA``); every column has dtype
  `parsers.base.TEXT_DTYPE`. Cells and header names are kept exactly as written (no trimming).
- Encoding: detected by `parsers.charset` (a byte-order mark decides; else UTF-8, Windows-1252 or
  Latin-1, with a warning for anything but UTF-8); `RawTable.bom` says whether there was a mark.
- Delimiter: the most frequent of ``,`` ``;`` tab ``|`` outside quotes in the header record; a tie
  or none → comma.
- Line: the record number, header = 1 (blank lines before the header are ignored). Blank records
  and records whose every cell is empty are skipped but counted; a quoted newline does not count.
- A record with more or fewer fields than the header goes to `RawTable.bad_rows`, as does a record
  whose quoting is broken; a quote that is never closed swallows the rest of the file into one bad
  record.
- Fast path: pyarrow.csv, single-threaded (so skipped rows get their record numbers). It is used
  only when every quote sits where RFC 4180 allows it; otherwise Python's csv module (strict) reads
  the file, slower (about 3-6 s per million rows) but exact. Both give identical results on files
  both can read. The exact path cannot hold a value over 131,072 characters (the csv module's
  limit): such a record, and the rest of the file, becomes one bad row; such a header name rejects
  the file.
- A header of more than `parsers.base.MAX_COLUMNS` columns rejects the file (TOO_LARGE) before any
  row is read: each column costs time and memory in every later step, and no returns file needs
  that many.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from parsers.base import ParseLimits, RawTable, check_width, text_frame
from parsers.charset import decode_text
from parsers.errors import EMPTY_FILE, NO_HEADER, TOO_MANY_ROWS, UNREADABLE, FileRejected

DELIMITERS = (",", ";", "\t", "|")
_LEADING_BLANK_LINES = re.compile(rb"(?:[ \t]*(?:\r\n|\r|\n))*")
_QUOTE_OR_NEWLINE = re.compile(rb'["\r\n]')
_NOT_SPACE = re.compile(rb"\S")
_NOT_NEWLINE = re.compile(rb"[^\r\n]")
_BLOCK_SIZE = 8 << 20  # a record longer than this sends the file to the exact path


@dataclass
class _Rows:
    """Data rows as arrow string columns, with their line numbers and the records left out."""

    columns: list[pa.Array | pa.ChunkedArray]
    lines: np.ndarray
    bad_rows: list[tuple[int, str]] = field(default_factory=list)


def read_csv(data: bytes, limits: ParseLimits, *, fast: bool = True) -> RawTable:
    """Read delimited text; `fast=False` forces the exact (Python csv) path, for tests."""
    decoded = decode_text(data)
    utf8 = decoded.utf8
    start, end, delimiter = _find_header(utf8)
    header = _parse_header(utf8[start:end].decode("utf-8"), delimiter)
    check_width(len(header))
    body = utf8[end:]
    rows = _read_fast(body, len(header), delimiter, limits) if fast else None
    if rows is None:
        rows = _read_exact(body.decode("utf-8"), len(header), delimiter, limits)
    return RawTable(
        header=header,
        frame=text_frame(rows.columns),
        lines=rows.lines + 1,  # record number in the body → line, header being line 1
        format="csv",
        encoding=decoded.encoding,
        delimiter=delimiter,
        bom=decoded.bom,
        warnings=decoded.warnings,
        bad_rows=rows.bad_rows,
    )


# --- header -------------------------------------------------------------------------------------


def _find_header(utf8: bytes) -> tuple[int, int, str]:
    """Return where the header record starts and ends, and the delimiter counted in it."""
    start = _LEADING_BLANK_LINES.match(utf8).end()  # type: ignore[union-attr]  # always matches
    if not _NOT_SPACE.search(utf8, start):
        raise FileRejected(EMPTY_FILE, "the file holds no records (only blank lines)")
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted, segment = False, start
    for match in _QUOTE_OR_NEWLINE.finditer(utf8, start):
        if match.group() == b'"':
            if not quoted:
                _count_delimiters(utf8[segment : match.start()], counts)
            quoted, segment = not quoted, match.end()
        elif not quoted:
            _count_delimiters(utf8[segment : match.start()], counts)
            return start, _end_of_line(utf8, match.end()), _pick_delimiter(counts)
    if quoted:
        raise FileRejected(
            UNREADABLE, "the header has a quote that is never closed; check the quotes at line 1"
        )
    _count_delimiters(utf8[segment:], counts)
    return start, len(utf8), _pick_delimiter(counts)


def _end_of_line(utf8: bytes, after: int) -> int:
    crlf = utf8[after - 1 : after] == b"\r" and utf8[after : after + 1] == b"\n"
    return after + 1 if crlf else after


def _count_delimiters(segment: bytes, counts: dict[str, int]) -> None:
    for delimiter in counts:
        counts[delimiter] += segment.count(delimiter.encode())


def _pick_delimiter(counts: dict[str, int]) -> str:
    best = max(counts.values())
    winners = [d for d, n in counts.items() if n == best]
    return winners[0] if best and len(winners) == 1 else ","


def _parse_header(text: str, delimiter: str) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        if "field larger than" in str(exc):
            raise FileRejected(
                UNREADABLE,
                f"a column name in the header (line 1) is longer than {csv.field_size_limit():,} "
                "characters; the first line must be the header (ActionId,…)",
            ) from None
        raise FileRejected(
            UNREADABLE,
            "the header has a misplaced quote; check the quotes at line 1 "
            '(a quote inside a quoted name must be doubled: "")',
        ) from None
    if not any(header):
        raise FileRejected(
            NO_HEADER, "the first line has no column names; it must be the header (ActionId,…)"
        )
    return header


# --- fast path: pyarrow -------------------------------------------------------------------------


def _read_fast(body: bytes, width: int, delimiter: str, limits: ParseLimits) -> _Rows | None:
    """Read with pyarrow, or return None when only the exact path can read this body faithfully."""
    if not _NOT_NEWLINE.search(body):
        return _Rows([pa.array([], pa.string())] * width, np.empty(0, np.int64))
    has_quotes = b'"' in body
    if has_quotes and not _quotes_are_clean(body, delimiter):
        return None
    misfits = _Misfits(width, delimiter)
    try:
        reader = _open_arrow(body, width, delimiter, has_quotes, misfits.on_invalid_row)
        return _collect_batches(reader, misfits, limits)
    except pa.ArrowException:
        return None


def _quotes_are_clean(body: bytes, delimiter: str) -> bool:
    """Tell whether every quote opens a field, closes one, or is half of an escaped "" pair."""
    chars = np.frombuffer(body, np.uint8)
    quotes = np.flatnonzero(chars == ord('"'))
    if len(quotes) % 2:
        return False
    boundary = np.zeros(256, bool)
    boundary[[ord(delimiter), ord("\n"), ord("\r")]] = True
    opens, closes = quotes[0::2], quotes[1::2]
    open_ok = boundary[chars[opens - 1]] | (opens == 0)
    open_ok[1:] |= closes[:-1] == opens[1:] - 1
    close_ok = boundary[chars[np.minimum(closes + 1, len(chars) - 1)]] | (closes == len(chars) - 1)
    close_ok[:-1] |= opens[1:] == closes[:-1] + 1
    return bool(open_ok.all() and close_ok.all())


@dataclass
class _Misfits:
    """The records arrow skipped because their field count differs from the header's."""

    width: int
    delimiter: str
    records: list[int] = field(default_factory=list)  # every skipped record, for numbering
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # those that are not all empty

    def on_invalid_row(self, row: pacsv.InvalidRow) -> str:
        """Note a record arrow cannot fit to the header, and tell arrow to skip it."""
        self.records.append(row.number)
        reader = csv.reader(io.StringIO(row.text, newline=""), delimiter=self.delimiter)
        try:
            fields = next(reader, [])
        except csv.Error:  # a value over the csv module's size limit: count fields roughly
            fields = row.text.split(self.delimiter)
        if any(fields):
            message = width_message(len(fields), self.width, self.delimiter)
            self.bad_rows.append((row.number + 1, message))
        return "skip"


def _open_arrow(
    body: bytes,
    width: int,
    delimiter: str,
    has_quotes: bool,
    on_invalid_row: Callable[[pacsv.InvalidRow], str],
) -> pacsv.CSVStreamingReader:
    names = [str(i) for i in range(width)]
    return pacsv.open_csv(
        pa.BufferReader(body),
        read_options=pacsv.ReadOptions(
            column_names=names, use_threads=False, block_size=_BLOCK_SIZE
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=delimiter,
            quote_char='"',
            double_quote=True,
            escape_char=False,
            newlines_in_values=has_quotes,
            ignore_empty_lines=False,  # a blank line becomes an all-null row, so it is counted
            invalid_row_handler=on_invalid_row,
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            check_utf8=False,  # parsers.charset.decode_text already made sure
        ),
    )


def _collect_batches(
    reader: pacsv.CSVStreamingReader, misfits: _Misfits, limits: ParseLimits
) -> _Rows:
    """Keep the rows that are not all empty, numbering them around the records arrow skipped."""
    batches: list[pa.RecordBatch] = []
    kept: list[np.ndarray] = [np.empty(0, np.int64)]
    emitted = rows = 0
    for batch in reader:
        keep = ~_all_null(batch)
        batches.append(batch.filter(pa.array(keep)))
        kept.append(np.flatnonzero(keep) + emitted)
        emitted += batch.num_rows
        rows += batches[-1].num_rows
        _check_row_limit(rows + len(misfits.bad_rows), limits)
    _check_row_limit(rows + len(misfits.bad_rows), limits)  # no batch at all if every row misfits
    table = pa.Table.from_batches(batches, schema=reader.schema)
    skipped = np.sort(np.array(misfits.records, np.int64))
    lines = _record_numbers(np.concatenate(kept), skipped)
    return _Rows(list(table.columns), lines, sorted(misfits.bad_rows))


def _all_null(batch: pa.RecordBatch) -> np.ndarray:
    mask = np.ones(batch.num_rows, bool)
    for column in batch.columns:
        mask &= pc.is_null(column).to_numpy(zero_copy_only=False)
    return mask


def _record_numbers(emitted_index: np.ndarray, skipped_records: np.ndarray) -> np.ndarray:
    """Map arrow's output row index (0-based) to the 1-based record number in the body."""
    rows_before_skip = skipped_records - np.arange(1, len(skipped_records) + 1)
    shift = np.searchsorted(rows_before_skip, emitted_index, side="right")
    return (emitted_index + 1 + shift).astype(np.int64)


# --- exact path: Python's csv module ------------------------------------------------------------


def _read_exact(text: str, width: int, delimiter: str, limits: ParseLimits) -> _Rows:
    """Read record by record with Python's strict csv reader; slower, but exact on any quoting."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    records: list[int] = []
    bad_rows: list[tuple[int, str]] = []
    record = 0
    while True:
        record += 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad_rows.append((record + 1, quote_message(record + 1, exc)))
            if "field larger than" in str(exc):
                break  # inside a runaway quote: what follows is not a record boundary
            continue
        if not any(row):
            continue
        if len(row) == width:
            rows.append(row)
            records.append(record)
        else:
            bad_rows.append((record + 1, width_message(len(row), width, delimiter)))
        _check_row_limit(len(rows) + len(bad_rows), limits)
    return _Rows(_text_columns(rows, width), np.array(records, np.int64), bad_rows)


def _text_columns(rows: list[list[str]], width: int) -> list[pa.Array | pa.ChunkedArray]:
    if not rows:
        return [pa.array([], pa.string())] * width
    null = pa.scalar(None, pa.string())
    columns = (pa.array([row[i] for row in rows], pa.string()) for i in range(width))
    return [pc.if_else(pc.equal(column, ""), null, column) for column in columns]


def quote_message(line: int, exc: csv.Error) -> str:
    """Say what is wrong with the quoting of the record at `line`, in terms a sender can fix."""
    reason = str(exc)
    if "unexpected end of data" in reason:
        return (
            "a quote opened in this record is never closed, so the rest of the file was read as "
            f"one value; check the quotes at line {line}"
        )
    if "expected after" in reason:
        return (
            f"a closing quote is followed by more text; check the quotes at line {line} "
            '(a quote inside a quoted value must be doubled: "")'
        )
    if "field larger than" in reason:
        return (
            f"a value is longer than {csv.field_size_limit():,} characters, usually a quote that "
            f"is never closed; the rest of the file was not read; check the quotes at line {line}"
        )
    return f"the record could not be split into fields ({reason}); check the quotes at line {line}"


def width_message(fields: int, width: int, delimiter: str) -> str:
    """Say why a record with `fields` fields does not fit a header of `width` columns."""
    shown = "tab" if delimiter == "\t" else f"'{delimiter}'"
    head = f"row has {_count(fields, 'field')} but the header has {_count(width, 'column')}"
    if fields > width:
        return f"{head}; check for an unquoted {shown} inside a value (put such values in quotes)"
    return f"{head}; add the missing {shown} separators (empty trailing fields still need them)"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _check_row_limit(rows: int, limits: ParseLimits) -> None:
    if rows > limits.max_rows:
        raise FileRejected(
            TOO_MANY_ROWS,
            f"the file has more than {limits.max_rows:,} data rows; split it into smaller files",
        )
