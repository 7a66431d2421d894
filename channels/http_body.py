"""Reading an upload's body: raw bytes or multipart `file=`, streamed with the size limit enforced.

The body is never held whole in memory: up to 1 MiB stays in RAM, the rest goes to a temporary file
in the spool's tmp folder (same file system), and reading stops as soon as the limit is crossed.
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, cast

from channels.names import is_supported_name, supported_list

IN_MEMORY = 1024 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
RAW_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "text/csv": ".csv",
        "application/csv": ".csv",
        "text/plain": ".txt",
        "text/tab-separated-values": ".tsv",
        "application/xml": ".xml",
        "text/xml": ".xml",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
        "application/vnd.ms-excel.sheet.macroenabled.12": ".xlsm",
        "application/gzip": ".gz",
        "application/x-gzip": ".gz",
        "application/zip": ".zip",
        "application/x-zip-compressed": ".zip",
        "application/octet-stream": "",
    }
)
ACCEPTED = "send Content-Type text/csv, application/xml, xlsx, application/gzip, application/zip "
ACCEPTED += "or application/octet-stream with ?name=…, or multipart/form-data with a 'file' field"


class BodyError(Exception):
    """An upload that cannot be taken: HTTP status, error code, a message the client can act on."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Upload:
    """A received body: the file's name and its bytes in a (spooled) temporary file."""

    name: str
    file: BinaryIO
    size: int
    close_all: list[Any]

    def close(self) -> None:
        """Delete the temporary data."""
        for f in self.close_all:
            f.close()


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower-case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_name(name: str) -> str:
    """Return the file's base name, or raise 415 when its extension is not one returnsd reads."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not is_supported_name(base):
        raise BodyError(
            415, "UNSUPPORTED_FORMAT", f"file name {base!r} must end in one of {supported_list()}"
        )
    return base


def raw_name(media: str, name: str | None) -> str:
    """The name of a raw upload: `?name=`, else `upload<ext>` from the Content-Type; else 415."""
    if media not in RAW_TYPES:
        raise BodyError(
            415, "UNSUPPORTED_MEDIA_TYPE", f"Content-Type {media!r} refused: {ACCEPTED}"
        )
    if name:
        return check_name(name)
    if not RAW_TYPES[media]:
        raise BodyError(415, "NAME_REQUIRED", f"{media} needs ?name=<file name with extension>")
    return "upload" + RAW_TYPES[media]


def too_large(limit: int) -> BodyError:
    """The 413 error for a body over the limit."""
    return BodyError(413, "TOO_LARGE", f"file is over the {limit:,}-byte limit; split it")


async def read_raw(stream: AsyncIterator[bytes], name: str, limit: int, tmp: Path) -> Upload:
    """Copy a raw body to a temporary file, refusing it (413) once it passes `limit` bytes."""
    # Closed by Upload.close() (or below on error), not by a with-block: the caller owns it.
    out = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=IN_MEMORY, dir=str(tmp)))  # noqa: SIM115
    size = 0
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            out.write(chunk)
    except OSError as exc:
        out.close()
        raise _disk_error(exc) from exc
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return Upload(name, out, size, [out])


def _disk_error(exc: OSError) -> BodyError | OSError:
    """A full disk while buffering the body is the spool being full: 507, try later."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BodyError(507, "SPOOL_FULL", "no space left to receive the file; try again later")
    return exc


async def read_multipart(
    stream: AsyncIterator[bytes], content_type: str, limit: int, tmp: Path
) -> Upload:
    """Parse multipart/form-data as it streams in and return its `file` field (413, 415, 400)."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import FormParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BodyError(400, "BAD_MULTIPART", "multipart/form-data without a boundary")
    files: list[Any] = []
    config = {"MAX_MEMORY_FILE_SIZE": IN_MEMORY, "UPLOAD_DIR": str(tmp), "MAX_FIELDS": 16}
    parser = FormParser(
        "multipart/form-data", lambda _f: None, files.append, boundary=boundary, config=config
    )
    size = 0
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > limit + MULTIPART_OVERHEAD:
                raise too_large(limit)
            parser.write(chunk)
        parser.finalize()
        return _pick_file(files, limit)
    except FormParserError as exc:
        _close(files)
        raise BodyError(400, "BAD_MULTIPART", f"malformed multipart body: {exc}") from exc
    except OSError as exc:
        _close(files)
        raise _disk_error(exc) from exc
    except BaseException:
        _close(files)
        raise


def _pick_file(files: list[Any], limit: int) -> Upload:
    chosen = [f for f in files if f.field_name == b"file"]
    if not chosen:
        raise BodyError(400, "NO_FILE", "multipart body has no 'file' field with a file name")
    f = chosen[0]
    if f.size > limit:
        raise too_large(limit)
    name = check_name(f.file_name.decode("utf-8", "replace") if f.file_name else "")
    fileobj = f.file_object
    fileobj.seek(0)
    return Upload(name, fileobj, f.size, files)


def _close(files: list[Any]) -> None:
    for f in files:
        f.close()
