"""The single entry point from file bytes to a RawTable: detect the format by content, then read.

Detection looks at the bytes, not the name: a zip holding ``xl/workbook.xml`` is an .xlsx, any
other zip a container; gzip magic is a container; an OLE2 compound file (a password-protected or
legacy .xls workbook) is refused; text whose first non-blank character is ``<`` is XML; anything
else is delimited text. When the name's extension says otherwise, the content wins and a warning
says so. Only `FileRejected` ever leaves `read_table`.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from functools import partial
from pathlib import PurePosixPath

from parsers.base import ParseLimits, RawTable
from parsers.containers import nested_message, open_zip, read_gzip, read_zip
from parsers.csvfile import read_csv
from parsers.errors import EMPTY_FILE, ENCRYPTED, UNSUPPORTED_FORMAT, FileRejected
from parsers.xlsxfile import read_xlsx
from parsers.xmlfile import read_xml

DataReader = Callable[[bytes, ParseLimits], RawTable]
ContainerReader = Callable[[str, bytes, ParseLimits, Callable[[str, bytes], RawTable]], RawTable]

DATA_READERS: dict[str, DataReader] = {"csv": read_csv, "xml": read_xml, "xlsx": read_xlsx}
CONTAINER_READERS: dict[str, ContainerReader] = {"zip": read_zip, "gzip": read_gzip}
DESCRIPTIONS = {
    "csv": "delimited text (CSV)",
    "xml": "XML",
    "xlsx": "an Excel .xlsx workbook",
    "zip": "a zip archive",
    "gzip": "a gzip file",
}
EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".psv": "csv",
    ".xml": "xml",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".zip": "zip",
    ".gz": "gzip",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(EXTENSIONS)


def is_supported_name(name: str) -> bool:
    """True when `name` ends in an extension the readers know (any case)."""
    return PurePosixPath(name).suffix.lower() in EXTENSIONS


OLE2_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
# Formats recognised only to be refused with a useful message.
REFUSED_MAGIC = (
    (b"%PDF-", "a PDF document"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)
WORKBOOK_MARKERS = (
    ("xl/workbook.bin", "a binary Excel workbook (.xlsb)"),
    ("content.xml", "an OpenDocument spreadsheet (.ods)"),
)


def read_table(name: str, data: bytes, limits: ParseLimits) -> RawTable:
    """Read any accepted file (CSV, XML, XLSX, or one of those in a .gz/.zip) as text cells."""
    return _read(name, data, limits, inside_archive=False)


def _read(name: str, data: bytes, limits: ParseLimits, *, inside_archive: bool) -> RawTable:
    if not data:
        raise FileRejected(EMPTY_FILE, "the file is empty (0 bytes)")
    kind = detect_format(name, data)
    warnings = _extension_warnings(name, kind)
    if kind in CONTAINER_READERS:
        if inside_archive:
            raise FileRejected(UNSUPPORTED_FORMAT, nested_message())
        inner = partial(_read, limits=limits, inside_archive=True)
        table = CONTAINER_READERS[kind](name, data, limits, inner)
    else:
        table = DATA_READERS[kind](data, limits)
    table.warnings[:0] = warnings
    return table


def detect_format(name: str, data: bytes) -> str:
    """Name the format of `data` from its content: csv, xml, xlsx, zip or gzip (or refuse it)."""
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(name, data)
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data.startswith(OLE2_MAGIC):
        raise FileRejected(
            ENCRYPTED,
            "the file is a password-protected or legacy .xls workbook; save it as .xlsx without "
            "a password or as CSV",
        )
    _refuse_known_binary(data)
    return "xml" if _looks_like_xml(data) else "csv"


def _zip_kind(name: str, data: bytes) -> str:
    with open_zip(data, repr(name)) as archive:
        names = set(archive.namelist())
    if "xl/workbook.xml" in names:
        return "xlsx"
    for marker, what in WORKBOOK_MARKERS:
        if marker in names:
            raise FileRejected(
                UNSUPPORTED_FORMAT, f"the file is {what}; save it as .xlsx or as CSV"
            )
    return "zip"


def _refuse_known_binary(data: bytes) -> None:
    what = next((what for magic, what in REFUSED_MAGIC if data.startswith(magic)), None)
    if data[257:262] == b"ustar":
        what = "a tar archive"
    if data.startswith(b"BZh") and data[4:10] == b"1AY&SY":
        what = "a bzip2 archive"
    if what:
        raise FileRejected(
            UNSUPPORTED_FORMAT,
            f"the file is {what}; send CSV, XML or .xlsx, optionally in a .zip or .gz",
        )


def _looks_like_xml(data: bytes) -> bool:
    head = data[:1024]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("utf-8", errors="ignore")
    return text.lstrip("\ufeff \t\r\n").startswith("<")


def _extension_warnings(name: str, kind: str) -> list[str]:
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    expected = EXTENSIONS.get(suffix)
    if expected is None or expected == kind:
        return []
    what = DESCRIPTIONS[kind]
    return [f"{name!r} is named {suffix} but its content is {what}; it was read as {what}"]
