"""What every format reader returns: the header and the cells as text, before any meaning."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from parsers.errors import TOO_LARGE, FileRejected

TEXT_DTYPE = pd.StringDtype("pyarrow")  # every RawTable column; missing cells are pd.NA
# Room for the wide item form with hundreds of items; far beyond any real returns file.
MAX_COLUMNS = 5_000
BYTE_ORDER_MARKS = {
    "utf-8": codecs.BOM_UTF8,
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
}
# Characters returnsd's own messages use that single-byte encodings lack, and what replaces them.
_PLAIN = str.maketrans({"≥": ">=", "≤": "<=", "→": "->", "–": "-", "—": "-", "…": "..."})


@dataclass(frozen=True)
class ParseLimits:
    """Bounds a reader must enforce while reading (file-level failures beyond them)."""

    max_rows: int = 2_000_000
    max_uncompressed_bytes: int = 1024 * 1024 * 1024
    max_archive_members: int = 100


@dataclass
class RawTable:
    """A file's cells as text: `frame` has one column per header cell, positional (0..n-1).

    Every cell is a Python/arrow string or missing (NA); nothing is converted. `lines` gives, for
    each data row, its row number in the file counting the header row as 1 (so the first data row
    is 2), which is what result files call `Line`.

    `encoding` (a Python codec name), `delimiter` and `bom` (the text began with a byte-order mark)
    are the dialect the file was written in, so that an answer can be written the same way (see
    `encode_text`). Delimited text reports what was detected; XML and workbooks, which have no
    delimiter of their own, report UTF-8, comma, no byte-order mark.

    `inexact_numbers` maps a column position to a mask over the rows: True where the cell was
    stored as a number that is not an exact integer (a fraction, or beyond 2**53, where a binary
    float no longer holds every integer), so its text may not be what the sender typed. Only
    workbooks have number cells.
    """

    header: list[str]
    frame: pd.DataFrame
    lines: np.ndarray
    format: str  # "csv" | "xml" | "xlsx"
    encoding: str = "utf-8"
    delimiter: str = ","
    bom: bool = False
    member: str | None = None  # name inside a .zip/.gz container
    warnings: list[str] = field(default_factory=list)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (line, message); not in frame
    inexact_numbers: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    def encode_text(self, text: str) -> bytes:
        """`text` in this file's encoding, after its byte-order mark when it had one.

        A character the encoding cannot hold (a `≥` in a message, for a Windows-1252 file) is
        spelled in ASCII where returnsd knows how, else replaced by `?`.
        """
        if self.encoding not in BYTE_ORDER_MARKS:
            text = text.translate(_PLAIN)
        body = text.encode(self.encoding, errors="replace")
        return BYTE_ORDER_MARKS.get(self.encoding, b"") + body if self.bom else body


def check_width(width: int) -> None:
    """Refuse a table with more than `MAX_COLUMNS` columns (every reader calls this early)."""
    if width > MAX_COLUMNS:
        raise FileRejected(
            TOO_LARGE,
            f"the file has {width:,} columns (at most {MAX_COLUMNS:,} are accepted); keep the "
            "returns columns (ActionId, Amount, Reason, …) and delete the others",
        )


def text_frame(columns: Sequence[pa.Array | pa.ChunkedArray]) -> pd.DataFrame:
    """Build a RawTable frame from one arrow string column per header cell (labels 0..n-1)."""
    table = pa.table({str(i): column for i, column in enumerate(columns)})
    frame = table.to_pandas(types_mapper=lambda t: TEXT_DTYPE if t == pa.string() else None)
    frame.columns = pd.RangeIndex(len(columns))
    return frame
