"""Archives around one data file (.gz, .zip), opened in memory under hard size bounds.

A .gz is stream-decompressed and stops at `ParseLimits.max_uncompressed_bytes`, or as soon as its
output passes 1 MiB and 200 times the compressed bytes read so far (a gzip bomb is refused after
a few MiB, not after the bound). A .zip must hold
exactly one data file once directories, ``__MACOSX/``, dotfiles and desktop litter are ignored;
its members are read in memory and never extracted to disk. An archive inside an archive is
refused. A member that unpacks to more than 200 times its packed size is refused as a likely zip
bomb once it is over 1 MiB (small files compress that well innocently and cannot hurt). The inner
file is read by the `read_inner` callable the caller passes in (normally `parsers.readers`), and
the table it returns names the member in `RawTable.member`.
"""

from __future__ import annotations

import io
import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import PurePosixPath

from parsers.base import ParseLimits, RawTable
from parsers.errors import CORRUPT_ARCHIVE, ENCRYPTED, TOO_LARGE, UNSUPPORTED_FORMAT, FileRejected

ReadInner = Callable[[str, bytes], RawTable]

MAX_COMPRESSION_RATIO = 200
RATIO_CHECK_FLOOR = 1 << 20  # files under 1 MiB cannot be bombs, whatever their ratio
_CHUNK = 1 << 20
_ARCHIVE_SUFFIXES = (".zip", ".gz", ".tgz", ".tar", ".7z", ".rar", ".bz2", ".xz")
_LITTER = ("thumbs.db", "desktop.ini")
_LISTED = 10  # member names shown in a message
# Everything zipfile (and the codecs under it) raises on damaged or hostile input.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    ValueError,
    OSError,
    EOFError,
    KeyError,
    IndexError,
    OverflowError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)


def read_gzip(name: str, data: bytes, limits: ParseLimits, read_inner: ReadInner) -> RawTable:
    """Decompress a .gz under the size bound and read the file inside it."""
    return _read_member(_gzip_member_name(name), gunzip(data, limits), read_inner)


def read_zip(name: str, data: bytes, limits: ParseLimits, read_inner: ReadInner) -> RawTable:
    """Read the single data file of a .zip, in memory, under the size and ratio bounds."""
    with open_zip(data, repr(name)) as archive:
        member = _single_member(archive, limits)
        payload = _read_zip_member(archive, member, limits)
    return _read_member(member.filename, payload, read_inner)


def open_zip(data: bytes, what: str) -> zipfile.ZipFile:
    """Open zip bytes in memory, or reject them as damaged (`what` names them in the message)."""
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS as exc:
        raise FileRejected(CORRUPT_ARCHIVE, _damaged(what, exc)) from None


def gunzip(data: bytes, limits: ParseLimits) -> bytes:
    """Decompress every gzip member in `data`, stopping as soon as the output passes a bound."""
    out = bytearray()
    rest = data
    try:
        while rest:
            rest = _inflate_member(rest, out, limits.max_uncompressed_bytes, len(data) - len(rest))
            if not rest.strip(b"\x00"):
                break  # zero padding after the last member is harmless
            if not rest.startswith(b"\x1f\x8b"):
                raise FileRejected(CORRUPT_ARCHIVE, "the .gz file has junk after its data")
    except zlib.error as exc:
        raise FileRejected(
            CORRUPT_ARCHIVE, f"the .gz file is damaged ({exc}); send it again"
        ) from None
    return bytes(out)


def _inflate_member(data: bytes, out: bytearray, bound: int, read_before: int) -> bytes:
    """Append one gzip member's output to `out`; return the bytes that follow the member.

    `read_before` is how many compressed bytes earlier members used, for the ratio check.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    pending = data
    while not inflater.eof:
        chunk = inflater.decompress(pending, _CHUNK)
        out += chunk
        if len(out) > bound:
            raise FileRejected(TOO_LARGE, _too_large("the .gz file", bound))
        pending = inflater.unconsumed_tail
        check_ratio("the .gz file", len(out), read_before + len(data) - len(pending))
        if not chunk and not pending and not inflater.eof:  # eof here: an empty member
            raise FileRejected(
                CORRUPT_ARCHIVE, "the .gz file ends early (it is truncated); send it again"
            )
    return inflater.unused_data


def _gzip_member_name(name: str) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    suffix = path.suffix.lower()
    if suffix == ".tgz":
        return path.with_suffix(".tar").name
    return path.stem if suffix == ".gz" else path.name


def _single_member(archive: zipfile.ZipFile, limits: ParseLimits) -> zipfile.ZipInfo:
    """Return the one data member, refusing an archive with none, several, or a bad one."""
    entries = archive.infolist()
    if len(entries) > limits.max_archive_members:
        raise FileRejected(
            UNSUPPORTED_FORMAT,
            f"the zip archive has {len(entries)} entries (at most {limits.max_archive_members} "
            "are accepted); send a zip holding one .csv, .xml or .xlsx file",
        )
    members = [entry for entry in entries if not _is_ignorable(entry)]
    if len(members) != 1:
        raise FileRejected(UNSUPPORTED_FORMAT, _member_count_message(members, entries))
    _check_member(members[0], limits)
    return members[0]


def _is_ignorable(entry: zipfile.ZipInfo) -> bool:
    parts = PurePosixPath(entry.filename.replace("\\", "/")).parts
    return (
        entry.is_dir()
        or not parts
        or parts[0] == "__MACOSX"
        or any(part.startswith(".") and part not in (".", "..") for part in parts)
        or parts[-1].lower() in _LITTER
    )


def _member_count_message(members: list[zipfile.ZipInfo], entries: list[zipfile.ZipInfo]) -> str:
    if not members:
        listing = _names(entries) or "nothing"
        return (
            f"the zip archive holds no data file (it holds {listing}); "
            "put one .csv, .xml or .xlsx file in it"
        )
    return (
        f"the zip archive holds {len(members)} data files ({_names(members)}); "
        "send one file per archive, or send the files separately"
    )


def _names(entries: list[zipfile.ZipInfo]) -> str:
    shown = ", ".join(repr(entry.filename) for entry in entries[:_LISTED])
    more = len(entries) - _LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _check_member(member: zipfile.ZipInfo, limits: ParseLimits) -> None:
    """Refuse a member that is encrypted, a link, an archive, or declared too big to unpack."""
    label = repr(member.filename)
    if member.flag_bits & 0x1:
        raise FileRejected(
            ENCRYPTED, f"the zip member {label} is password-protected; send it without a password"
        )
    if stat.S_ISLNK(member.external_attr >> 16):
        raise FileRejected(
            UNSUPPORTED_FORMAT,
            f"the zip member {label} is a symbolic link; put the file itself in the zip",
        )
    if member.filename.lower().endswith(_ARCHIVE_SUFFIXES):
        message = f"in {member.filename!r} inside the archive: {nested_message()}"
        raise FileRejected(UNSUPPORTED_FORMAT, message)
    _check_size(label, member.file_size, member.compress_size, limits)


def _check_size(label: str, size: int, compressed: int, limits: ParseLimits) -> None:
    if size > limits.max_uncompressed_bytes:
        raise FileRejected(
            TOO_LARGE, _too_large(f"the zip member {label}", limits.max_uncompressed_bytes)
        )
    check_ratio(f"the zip member {label}", size, compressed)


def check_ratio(what: str, size: int, compressed: int) -> None:
    """Refuse output over 1 MiB that is more than 200 times the compressed bytes behind it."""
    ratio = size / max(compressed, 1)
    if size > RATIO_CHECK_FLOOR and ratio > MAX_COMPRESSION_RATIO:
        raise FileRejected(
            TOO_LARGE,
            f"{what} unpacks {ratio:,.0f} times larger than it is packed (the "
            f"limit is {MAX_COMPRESSION_RATIO}:1, against zip bombs); send the file itself",
        )


def _read_zip_member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, limits: ParseLimits
) -> bytes:
    """Read a member into memory, never more than the bound even if its header lies."""
    bound = limits.max_uncompressed_bytes
    try:
        with archive.open(member) as stream:
            payload = stream.read(bound + 1)
    except NotImplementedError as exc:  # e.g. Deflate64, which zipfile cannot unpack
        raise FileRejected(
            UNSUPPORTED_FORMAT,
            f"the zip member {member.filename!r} is packed with a method that cannot be unpacked "
            f"({exc}); zip it again with the standard method (Deflate)",
        ) from None
    except ZIP_ERRORS as exc:
        raise FileRejected(CORRUPT_ARCHIVE, _damaged(repr(member.filename), exc)) from None
    if len(payload) > bound:
        raise FileRejected(TOO_LARGE, _too_large(f"the zip member {member.filename!r}", bound))
    _check_size(repr(member.filename), len(payload), member.compress_size, limits)
    return payload


def _read_member(member: str, payload: bytes, read_inner: ReadInner) -> RawTable:
    """Read the inner file, naming the member in the table and in any rejection."""
    try:
        table = read_inner(member, payload)
    except FileRejected as exc:
        raise FileRejected(exc.code, f"in {member!r} inside the archive: {exc.message}") from None
    table.member = member
    return table


def nested_message() -> str:
    """Explain that a file inside an archive is itself an archive, which is not accepted."""
    return "it is itself an archive; nested archives are not accepted; send the inner file"


def _damaged(what: str, exc: BaseException) -> str:
    return f"{what} is damaged or truncated (not a readable zip: {exc}); send it again"


def _too_large(what: str, bound: int) -> str:
    return f"{what} unpacks to more than {bound:,} bytes; split it into smaller files"
