"""Excel .xlsx → RawTable: the first sheet, read with python-calamine, every cell turned to text.

Cells become text as follows: strings as they are; whole numbers → ``str(int)`` (``12.0`` →
``"12"``); other numbers → ``repr(float)`` (shortest round-trip form); booleans → ``TRUE`` /
``FALSE``; dates, datetimes and times → ISO 8601; durations → ISO 8601 ``PT…S``; an empty cell →
NA. The first row with any value is the header; its width ends at its last non-empty cell, and a
data row with a value right of that goes to `RawTable.bad_rows`. Line = the spreadsheet row number.
Rows whose every cell is empty are skipped. The zip's declared member sizes are checked against
`ParseLimits.max_uncompressed_bytes` before calamine unpacks anything.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.errors import (
    CORRUPT_ARCHIVE,
    EMPTY_FILE,
    ENCRYPTED,
    TOO_LARGE,
    TOO_MANY_ROWS,
    UNREADABLE,
    FileRejected,
)
from parsers.base import ParseLimits, RawTable
from parsers.containers import open_zip
from parsers.csvfile import text_frame

Cell = str | None


def read_xlsx(data: bytes, limits: ParseLimits) -> RawTable:
    """Read the first sheet of an .xlsx workbook as text cells."""
    _check_declared_size(data, limits)
    (first_row, first_col), rows = _load_first_sheet(data)
    at = next((i for i, row in enumerate(rows) if any(row)), None)
    if at is None:
        raise FileRejected(EMPTY_FILE, "the first sheet is empty; put the returns on it")
    header = _trim(rows[at])
    first_line = first_row + at + 2  # 0-based sheet row of the header, +1, then the next row
    body, lines, wide_rows = _data_rows(rows[at + 1 :], first_line, len(header), limits)
    bad_rows = [(line, _beyond_header(row, len(header), first_col)) for line, row in wide_rows]
    columns = [pa.array([row[i] for row in body], pa.string()) for i in range(len(header))]
    return RawTable(
        header=[cell or "" for cell in header],
        frame=text_frame(columns),
        lines=np.array(lines, np.int64),
        format="xlsx",
        bad_rows=bad_rows,
    )


def _check_declared_size(data: bytes, limits: ParseLimits) -> None:
    with open_zip(data, "the workbook") as archive:
        infos = archive.infolist()
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_uncompressed_bytes:
        raise FileRejected(
            TOO_LARGE,
            f"the workbook unpacks to {declared:,} bytes (the limit is "
            f"{limits.max_uncompressed_bytes:,}); split it or send it as CSV",
        )
    if any(info.flag_bits & 0x1 for info in infos):
        raise FileRejected(ENCRYPTED, "the workbook is encrypted; save it without a password")


def _load_first_sheet(data: bytes) -> tuple[tuple[int, int], list[list[Cell]]]:
    """Return the 0-based sheet position of the first cell given, and the rows as text cells."""
    import python_calamine

    try:
        workbook = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data))
        sheet = workbook.get_sheet_by_index(0)
        start = sheet.start
        rows = [[cell_text(cell) for cell in row] for row in sheet.to_python()]
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
    return (start or (0, 0)), rows


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


def column_letter(index: int) -> str:
    """Return the spreadsheet name of a 0-based column index (0 → A, 26 → AA)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters
