"""What every format reader returns: the header and the cells as text, before any meaning."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


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
    """

    header: list[str]
    frame: pd.DataFrame
    lines: np.ndarray
    format: str  # "csv" | "xml" | "xlsx"
    encoding: str | None = None
    delimiter: str | None = None
    member: str | None = None  # name inside a .zip/.gz container
    warnings: list[str] = field(default_factory=list)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # (line, message); not in frame

    def __len__(self) -> int:
        return len(self.frame)
