"""Delimited text's character encoding: decided by a byte-order mark, else detected, never guessed.

A UTF-8 or UTF-16 byte-order mark decides; else UTF-8 if the bytes are valid UTF-8, else
Windows-1252 if they decode strictly, else Latin-1. Anything but UTF-8 adds a warning naming the
encoding used. A NUL byte rejects the file: it is binary, or UTF-16 without a byte-order mark.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from parsers.errors import UNREADABLE, FileRejected


@dataclass
class Decoded:
    """The text as UTF-8 bytes without a byte-order mark, and how the file was written."""

    utf8: bytes
    encoding: str  # a Python codec name
    bom: bool = False
    warnings: list[str] = field(default_factory=list)


def decode_text(data: bytes) -> Decoded:
    """Detect the encoding of `data` and return its text as UTF-8 bytes."""
    if data.startswith(codecs.BOM_UTF8):
        return Decoded(_checked_utf8(data[len(codecs.BOM_UTF8) :]), "utf-8", bom=True)
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return _from_utf16(data[len(bom) :], encoding)
    _reject_nul(data)
    if data.isascii() or _is_utf8(data):
        return Decoded(data, "utf-8")
    try:
        text, encoding = data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"
    note = f"the file is not valid UTF-8; it was read as {encoding} (save it as UTF-8 to be sure)"
    return Decoded(text.encode("utf-8"), encoding, warnings=[note])


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _checked_utf8(data: bytes) -> bytes:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected(
            UNREADABLE,
            f"the file starts with a UTF-8 byte-order mark but byte {exc.start + 3} is not UTF-8; "
            "save it again as 'CSV UTF-8'",
        ) from None
    _reject_nul(data)
    return data


def _from_utf16(data: bytes, encoding: str) -> Decoded:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise FileRejected(
            UNREADABLE,
            "the file starts with a UTF-16 byte-order mark but is not valid UTF-16; "
            "save it as 'CSV UTF-8'",
        ) from None
    utf8 = text.encode("utf-8", errors="surrogatepass")
    _reject_nul(utf8)
    if not _is_utf8(utf8):
        raise FileRejected(UNREADABLE, "the UTF-16 text holds unpaired surrogates; save as UTF-8")
    note = f"the file is {encoding.upper()}; it was read as such (UTF-8 is best)"
    return Decoded(utf8, encoding, bom=True, warnings=[note])


def _reject_nul(data: bytes) -> None:
    at = data.find(b"\x00")
    if at >= 0:
        raise FileRejected(
            UNREADABLE,
            f"the file holds a NUL byte (at byte {at}), so it is binary (or UTF-16 without a "
            "byte-order mark), not CSV text; export the returns as CSV (UTF-8)",
        )
