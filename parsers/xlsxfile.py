"""Excel .xlsx → RawTable: the first sheet, read with python-calamine, every cell turned to text.

Cells become text as follows: strings as they are; whole numbers → ``str(int)`` (``12.0`` →
``"12"``); other numbers → ``repr(float)`` (shortest round-trip form); booleans → ``TRUE`` /
``FALSE``; dates, datetimes and times → ISO 8601; durations → ISO 8601 ``PT…S``; an empty cell →
NA. The first row with any value is the header; its width ends at its last non-empty cell, and a
data row with a value right of that goes to `RawTable.bad_rows`. Line = the spreadsheet row number.
Rows whose every cell is empty are skipped.

A number cell that is not an exact integer (a fraction, or beyond 2**53, where 123456789012345678
is already stored as 123456789012345680) is marked in `RawTable.inexact_numbers`, so that an id
column can refuse it instead of matching digits the sender never typed.

Before calamine sees the workbook, `parsers.xlsxscan.check_parts` checks every part, because
calamine allocates from what a file declares and a failed allocation in Rust aborts the whole
process (no exception to catch).
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import numpy as np
import pyarrow as pa

from parsers.base import ParseLimits, RawTable, check_width, text_frame
from parsers.errors import (
    CORRUPT_ARCHIVE,
    EMPTY_FILE,
    ENCRYPTED,
    TOO_MANY_ROWS,
    UNREADABLE,
    FileRejected,
)
from parsers.xlsxscan import check_parts, column_letter

Cell = str | None
# Beyond 2**53 a binary float no longer holds every integer: 2**53 + 1 is stored as 2**53.
EXACT_INTEGERS = float(1 << 53)


def read_xlsx(data: bytes, limits: ParseLimits) -> RawTable:
    """Read the first sheet of an .xlsx workbook as text cells."""
    check_parts(data, limits)
    (first_row, first_col), values = _load_first_sheet(data)
    rows = [[cell_text(cell) for cell in row] for row in values]
    at = next((i for i, row in enumerate(rows) if any(row)), None)
    if at is None:
        raise FileRejected(EMPTY_FILE, "the first sheet is empty; put the returns on it")
    header = _trim(rows[at])
    check_width(len(header))
    first_line = first_row + at + 2  # 0-based sheet row of the header, +1, then the next row
    body, lines, wide_rows = _data_rows(rows[at + 1 :], first_line, len(header), limits)
    bad_rows = [(line, _beyond_header(row, len(header), first_col)) for line, row in wide_rows]
    columns = [pa.array([row[i] for row in body], pa.string()) for i in range(len(header))]
    kept = np.array(lines, np.int64) - first_line + at + 1  # each kept row's index in `values`
    return RawTable(
        header=[cell or "" for cell in header],
        frame=text_frame(columns),
        lines=np.array(lines, np.int64),
        format="xlsx",
        bad_rows=bad_rows,
        inexact_numbers=inexact_numbers(values, kept, len(header)),
    )


def _load_first_sheet(data: bytes) -> tuple[tuple[int, int], list[list[Any]]]:
    """Return the 0-based sheet position of the first cell given, and calamine's cell values."""
    import python_calamine

    try:
        workbook = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        sheet = workbook.get_sheet_by_index(0)
        start = sheet.start
        values: list[list[Any]] = sheet.to_python()
    except python_calamine.PasswordError:
        raise FileRejected(
            ENCRYPTED, "the workbook is password-protected; save it without a password"
        ) from None
    except python_calamine.ZipError as exc:
        raise FileRejected(
            CORRUPT_ARCHIVE, f"the workbook is damaged or truncated ({exc}); send it again"
        ) from None
    except Exception as exc:  # noqa: BLE001 - calamine's error types are not exhaustive; translate all here
        raise FileRejected(UNREADABLE, _unreadable(exc)) from None
    except BaseException as exc:  # a Rust panic surfaces as pyo3's PanicException(BaseException)
        if type(exc).__name__ != "PanicException":
            raise
        raise FileRejected(UNREADABLE, _unreadable(exc)) from None
    return (start or (0, 0)), values


def _unreadable(exc: BaseException) -> str:
    return f"the workbook could not be read ({exc}); open it in Excel and save it again as .xlsx"


def cell_text(value: Any) -> Cell:
    """Turn one calamine cell value into text (None for an empty cell)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"PT{value.total_seconds():g}S"
    return None if value is None else str(value)


def is_exact_integer(value: float) -> bool:
    """Tell whether a number cell's value is an integer its text gives back exactly."""
    return value.is_integer() and -EXACT_INTEGERS < value < EXACT_INTEGERS


def inexact_numbers(values: list[list[Any]], kept: np.ndarray, width: int) -> dict[int, np.ndarray]:
    """Per column, a mask over the kept rows of the number cells that are not exact integers.

    `kept` holds the kept rows' indices in `values`, increasing; columns past `width` are ignored.
    """
    found: dict[int, list[int]] = {}
    for r, c in (
        (r, c)
        for r, row in enumerate(values)
        for c, value in enumerate(row[:width])
        if value.__class__ is float and not is_exact_integer(value)
    ):
        found.setdefault(c, []).append(r)
    masks: dict[int, np.ndarray] = {}
    for c, rows in found.items():
        at = np.searchsorted(kept, rows)
        inside = at < len(kept)
        hit = at[inside][kept[at[inside]] == np.asarray(rows)[inside]]
        if len(hit):
            masks[c] = np.zeros(len(kept), bool)
            masks[c][hit] = True
    return masks


def _trim(header: list[Cell]) -> list[Cell]:
    width = max(i for i, cell in enumerate(header) if cell) + 1
    return header[:width]


def _data_rows(
    rows: list[list[Cell]], first_line: int, width: int, limits: ParseLimits
) -> tuple[list[list[Cell]], list[int], list[tuple[int, list[Cell]]]]:
    """Split rows into kept ones (padded or cut to the header's width) and bad ones."""
    kept: list[list[Cell]] = []
    lines: list[int] = []
    bad_rows: list[tuple[int, list[Cell]]] = []
    for line, row in enumerate(rows, start=first_line):
        if not any(row):
            continue
        if any(row[width:]):
            bad_rows.append((line, row))
        else:
            kept.append(row[:width] + [None] * (width - len(row)))
            lines.append(line)
        if len(kept) + len(bad_rows) > limits.max_rows:
            raise FileRejected(
                TOO_MANY_ROWS,
                f"the sheet has more than {limits.max_rows:,} data rows; split it",
            )
    return kept, lines, bad_rows


def _beyond_header(row: list[Cell], width: int, first_col: int) -> str:
    extra = next(i for i in range(width, len(row)) if row[i])
    return (
        f"row has a value in column {column_letter(first_col + extra)} but the header ends at "
        f"column {column_letter(first_col + width - 1)}; add a header for it or delete the value"
    )
