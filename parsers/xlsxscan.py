"""The pre-scan of a workbook's parts, so that calamine never allocates beyond reason.

Before calamine sees the workbook, every part is checked, because calamine allocates from what a
file declares and a failed allocation in Rust aborts the whole process (no exception to catch):

- the declared member sizes against `ParseLimits.max_uncompressed_bytes`, each member's
  compression ratio (as for .zip members), and encryption;
- the grid: calamine lays a sheet out as a dense array spanning its first to its last cell, 32
  bytes a cell, so a 5 kB file with cells at A1 and XFD1048576 asks for 550 GB. Each part is
  scanned for its cells (placed as calamine places them, ``r`` attribute or not; a fast pass when
  every cell is written as Excel writes it, an exact emulation otherwise) and refused (TOO_LARGE)
  when that span is over `GRID_FLOOR` cells and either over `GRID_CAP` or more than `GRID_FILL`
  times the cells the part actually writes. The scan costs about half of calamine's own time;
- the shared-string table: calamine reserves room for the count its ``uniqueCount`` claims, so a
  claim far above the strings present is refused (UNREADABLE).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from parsers.base import ParseLimits
from parsers.containers import ZIP_ERRORS, check_ratio, open_zip
from parsers.errors import CORRUPT_ARCHIVE, ENCRYPTED, TOO_LARGE, UNREADABLE, FileRejected

GRID_FLOOR = 1 << 21  # any span up to this is fine (~100 MiB)
GRID_FILL = 16  # above it, at least 1 cell in 16 must be written (a sparse export still passes)
GRID_CAP = 32_000_000  # and never more (~1.5 GiB: what 2M dense rows of 16 columns need anyway)
SST_FLOOR = 1 << 20  # shared strings calamine may reserve room for, whatever the file holds
_SCAN_CHUNK = 4 << 20
_MAX_TAG = 1 << 20  # a longer tag is split between chunks (and then refused if it is a cell)
_PREFIX = rb"(?:[^\s<>/:=]+:)?"
# The form Excel, LibreOffice and openpyxl write: `r` first, then attributes not named r.
_CANONICAL_CELL = re.compile(
    rb'<c r="([A-Z]{1,3}[1-9][0-9]{0,6})"(?: (?!r=)[A-Za-z:]+="[^"<>]*")*/?>'
)
_PLAIN_CELL_START = re.compile(rb"<c[\s/>]")
_PREFIXED_CELL = re.compile(rb":c[\s/>]")
_CELL_START = re.compile(rb"<" + _PREFIX + rb"c[\s/>]")
_ROW_START = re.compile(rb"<" + _PREFIX + rb"row[\s/>]")
_TAG = re.compile(
    rb"<(/?)" + _PREFIX + rb"(row|c)(?=[\s/>])"
    rb"""((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(/?)>"""
)
_ATTRIBUTE = re.compile(rb"""([^\s=/>]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_REF = re.compile(rb"([A-Za-z]+)([0-9]+)")
_SST = re.compile(rb"<" + _PREFIX + rb"sst[\s/>][^>]*")
_UNIQUE_COUNT = re.compile(rb"""\suniqueCount\s*=\s*["']([0-9]+)["']""")
_SI = re.compile(rb"<" + _PREFIX + rb"si[\s/>]")


def check_parts(data: bytes, limits: ParseLimits) -> None:
    """Refuse a workbook whose parts would make calamine allocate beyond reason (see above)."""
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
        for info in infos:
            check_ratio(f"the workbook part {info.filename!r}", info.file_size, info.compress_size)
            try:
                _check_part(archive, info)
            except ZIP_ERRORS as exc:
                raise FileRejected(
                    CORRUPT_ARCHIVE, f"the workbook is damaged or truncated ({exc}); send it again"
                ) from None


def _check_part(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    scan = _PartScan()
    for piece in _pieces(archive, info):
        scan.feed(piece)
    # Some cell written in another form: place every cell as calamine does, in a slower pass.
    grid = scan.grid if scan.canonical else _emulated_grid(_pieces(archive, info))
    area = grid.area()
    if area > GRID_FLOOR and (area > GRID_CAP or area > GRID_FILL * grid.cells):
        raise FileRejected(
            TOO_LARGE,
            f"the sheet {info.filename!r} spans {grid.label()} ({area:,} cells) but holds "
            f"{grid.cells:,} cells; delete the stray cells far from the data (Ctrl+End in Excel "
            "goes to the last one) or send the returns as CSV",
        )
    if scan.claimed > max(SST_FLOOR, 2 * scan.strings):
        raise FileRejected(
            UNREADABLE,
            f"the workbook's shared-string table claims {scan.claimed:,} strings but holds "
            f"{scan.strings:,}; open it in Excel and save it again",
        )


@dataclass
class _Grid:
    """The span of the cells of one part, 0-based and inclusive, and how many cells it writes."""

    cells: int = 0
    top: int = 0
    left: int = 0
    bottom: int = -1
    right: int = -1

    def add(self, rows: np.ndarray | list[int], cols: np.ndarray | list[int]) -> None:
        """Take in cells at these positions."""
        if not len(rows):
            return
        first = not self.cells
        self.cells += len(rows)
        # numpy arrays from canonical references; lists of Python ints (of any size) otherwise
        r = rows if isinstance(rows, np.ndarray) else np.asarray(rows, dtype=object)
        c = cols if isinstance(cols, np.ndarray) else np.asarray(cols, dtype=object)
        top, bottom, left, right = r.min(), r.max(), c.min(), c.max()
        self.top = int(top) if first else min(self.top, int(top))
        self.left = int(left) if first else min(self.left, int(left))
        self.bottom, self.right = max(self.bottom, int(bottom)), max(self.right, int(right))

    def area(self) -> int:
        """How many cells the dense layout of this span holds."""
        return (self.bottom - self.top + 1) * (self.right - self.left + 1) if self.cells else 0

    def label(self) -> str:
        """The span as a spreadsheet range, e.g. A1:XFD1048576."""
        return (
            f"{column_letter(self.left)}{self.top + 1}:{column_letter(self.right)}{self.bottom + 1}"
        )


def _pieces(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """Stream a part in chunks that end just before a '<', so that no tag is split."""
    carry = b""
    with archive.open(info) as stream:
        while block := stream.read(_SCAN_CHUNK):
            buf = carry + block
            cut = buf.rfind(b"<")
            if cut <= 0 or len(buf) - cut > _MAX_TAG:
                cut = len(buf)
            yield buf[:cut]
            carry = buf[cut:]
    if carry:
        yield carry


@dataclass
class _PartScan:
    """One pass over a part: the grid of its canonical cells, and its shared-string claim."""

    grid: _Grid = field(default_factory=lambda: _Grid())
    canonical: bool = True  # every cell so far is in the canonical form
    claimed: int = 0  # the largest uniqueCount of an <sst> tag
    strings: int = 0  # <si> tags, counted once the claim is over SST_FLOOR

    def feed(self, piece: bytes) -> None:
        """Scan the next tag-aligned piece of the part."""
        if self.canonical:
            self.canonical = _add_canonical(self.grid, piece)
        if b"sst" in piece:
            for tag in _SST.findall(piece):
                self.claimed = max([self.claimed, *map(int, _UNIQUE_COUNT.findall(tag))])
        if self.claimed > SST_FLOOR:
            self.strings += len(_SI.findall(piece))


def _add_canonical(grid: _Grid, piece: bytes) -> bool:
    """Add the piece's cells to the grid if all are canonical; else return False."""
    refs = _CANONICAL_CELL.findall(piece)
    starts = piece.count(b"<c") - piece.count(b"<col")
    if starts != len(refs):
        starts = len(_PLAIN_CELL_START.findall(piece))
    if starts != len(refs) or (b":c" in piece and _PREFIXED_CELL.search(piece)):
        return False
    if refs:
        grid.add(*_positions(refs))
    return True


def _positions(refs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """0-based rows and columns of references such as b'AB12', vectorised."""
    chars = np.array(refs, dtype="S10").view(np.uint8).reshape(len(refs), 10).astype(np.int64)
    rows = np.zeros(len(refs), np.int64)
    cols = np.zeros(len(refs), np.int64)
    for j in range(10):
        c = chars[:, j]
        cols = np.where(c >= ord("A"), cols * 26 + c - (ord("A") - 1), cols)
        rows = np.where((c >= ord("0")) & (c <= ord("9")), rows * 10 + c - ord("0"), rows)
    return rows - 1, cols - 1


def _emulated_grid(pieces: Iterator[bytes]) -> _Grid:
    """Place every cell as calamine does: by its `r`, else after the previous cell of the row."""
    grid = _Grid()
    row = col = 0
    for piece in pieces:
        rows: list[int] = []
        cols: list[int] = []
        seen = 0
        for match in _TAG.finditer(piece):
            closing, name, attributes, empty = match.groups()
            if closing:
                row, col = (row + 1, 0) if name == b"row" else (row, col)
                continue
            seen += 1
            ref = _last_r(attributes)
            if name == b"row":
                row = max(int(ref) - 1, 0) if ref.isdigit() else row
                row, col = (row + 1, 0) if empty else (row, col)
                continue
            parsed = _REF.fullmatch(ref)
            at = (int(parsed[2]) - 1, _column(parsed[1])) if parsed else (row, col)
            rows.append(at[0])
            cols.append(at[1])
            col = at[1] + 1
        if seen != len(_CELL_START.findall(piece)) + len(_ROW_START.findall(piece)):
            raise FileRejected(
                UNREADABLE, "a cell of the workbook is written in a form that cannot be read"
            )
        grid.add(rows, cols)
    return grid


def _last_r(attributes: bytes) -> bytes:
    """The value of the last `r` attribute (calamine keeps the last of repeated ones), or b''."""
    found = b""
    for match in _ATTRIBUTE.finditer(attributes):
        if match[1] == b"r":
            found = match[2] if match[2] is not None else match[3]
    return found


def _column(letters: bytes) -> int:
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - (ord("A") - 1)
    return number - 1


def column_letter(index: int) -> str:
    """Return the spreadsheet name of a 0-based column index (0 → A, 26 → AA)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters
