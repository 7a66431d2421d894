"""Files: filtered keyset pages, one file, today's figures, a file's line errors."""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Select, func, select

from ingest import tables as t
from ingest.queries.types import (
    MAX_PAGE,
    FileFilter,
    FileRow,
    LineError,
    Page,
    decode_cursor,
    encode_cursor,
)

# --- files ---------------------------------------------------------------------------------


def _file_query() -> Select[Any]:
    return select(t.files, t.results.c.path.label("result_path")).outerjoin(
        t.results, t.results.c.file_id == t.files.c.id
    )


def _file_row(r: Any) -> FileRow:
    m = r._mapping
    return FileRow(
        id=m["id"], campaign_id=m["campaign_id"], channel=m["channel"], name=m["name"],
        sender=m["sender"], peer=m["peer"], size=m["size"], status=m["status"],
        received_at=m["received_at"], finished_at=m["finished_at"], error_code=m["error_code"],
        error_message=m["error_message"], duplicate_of=m["duplicate_of"],
        counts=_json(m["counts"]) or {}, meta=_json(m["meta"]) or {},
        result_path=Path(m["result_path"]) if m["result_path"] else None,
    )  # fmt: skip


def list_files(
    conn: Connection,
    f: FileFilter,
    campaigns: Sequence[str] | None = None,
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[FileRow]:
    """One page of received files, newest first, of `campaigns` (None: all) matching `f`."""
    limit = max(1, min(limit, MAX_PAGE))
    c = t.files.c
    q = _file_query()
    if campaigns is not None:
        q = q.where(c.campaign_id.in_(list(campaigns)))
    if f.campaign_id:
        q = q.where(c.campaign_id == f.campaign_id)
    if f.statuses:
        q = q.where(c.status.in_(f.statuses))
    if f.channel:
        q = q.where(c.channel == f.channel)
    if f.received_from:
        q = q.where(c.received_at >= f.received_from)
    if f.received_to:
        q = q.where(c.received_at < f.received_to)
    after = decode_cursor(cursor) if cursor else None
    if after is not None:
        q = q.where(c.id < after[1])  # ids sort by reception time
    rows = [_file_row(r) for r in conn.execute(q.order_by(c.id.desc()).limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor("", rows[-1].id) if more and rows else None)


def get_file(
    conn: Connection, file_id: str, campaigns: Sequence[str] | None = None
) -> FileRow | None:
    """One received file; None when absent or outside `campaigns`."""
    q = _file_query().where(t.files.c.id == file_id)
    if campaigns is not None:
        q = q.where(t.files.c.campaign_id.in_(list(campaigns)))
    found = conn.execute(q).first()
    return _file_row(found) if found else None


def file_stats(
    conn: Connection, campaigns: Sequence[str] | None, since: datetime
) -> dict[str, Any]:
    """Files received since `since` by status, error lines, queue depth and oldest queued file."""
    c = t.files.c
    scope = [c.campaign_id.in_(list(campaigns))] if campaigns is not None else []
    by_status: dict[str, int] = dict(
        conn.execute(
            select(c.status, func.count()).where(c.received_at >= since, *scope).group_by(c.status)
        ).all()
    )
    queued = conn.execute(
        select(func.count(), func.min(c.received_at)).where(c.status == "QUEUED", *scope)
    ).one()
    lines = errors = 0
    for (counts,) in conn.execute(select(c.counts).where(c.received_at >= since, *scope)):
        doc = _json(counts) or {}
        lines += int(doc.get("lines", 0))
        errors += int(doc.get("errors", 0))
    return {
        "by_status": {k: int(v) for k, v in by_status.items()},
        "files": int(sum(by_status.values())),
        "queued": int(queued[0] or 0),
        "oldest_queued": queued[1],
        "lines": lines,
        "error_lines": errors,
        "undelivered": int(
            conn.scalar(
                select(func.count()).where(
                    c.delivered_at.is_(None), c.status.in_(("COMPLETE", "FAILED", "DUPLICATE")),
                    c.received_at >= since - timedelta(days=7), *scope,
                )
            ) or 0
        ),
    }  # fmt: skip


def line_errors(
    result_path: Path | None, kind: str | None = None, limit: int = 500
) -> tuple[list[LineError], int]:
    """The error lines of a result CSV file (`kind`: 'Validation' or 'Contract' only), and how
    many error lines of that kind there are in all."""
    if result_path is None or not result_path.exists():
        return [], 0
    return result_errors(result_path.read_bytes(), kind, limit)


def result_errors(
    result_csv: bytes, kind: str | None = None, limit: int = 500
) -> tuple[list[LineError], int]:
    """The error lines of a result CSV's bytes (e.g. a dry run's), and how many in all."""
    found: list[LineError] = []
    total = 0
    for cells in _result_rows(result_csv):
        if cells.get("Status") != "ERROR" or (kind and cells.get("ErrorType") != kind):
            continue
        total += 1
        if len(found) < limit:
            found.append(_line_error(cells))
    return found, total


def spool_path(conn: Connection, file_id: str) -> Path | None:
    """Where a file's received bytes are kept (a duplicate's: its first copy's), if still kept."""
    c = t.files.c
    row = conn.execute(select(c.spool_path, c.duplicate_of).where(c.id == file_id)).first()
    if row is None:
        return None
    raw = row[0]
    if not raw and row[1]:
        raw = conn.scalar(select(c.spool_path).where(c.id == row[1]))
    path = Path(raw) if raw else None
    return path if path is not None and path.exists() else None


def _line_error(cells: dict[str, str]) -> LineError:
    own = {k: v for k, v in cells.items() if k not in _RESULT_NAMES}
    return LineError(
        line=int(cells.get("Line") or 0),
        error_type=cells.get("ErrorType", ""),
        code=cells.get("ErrorCode", ""),
        message=cells.get("Message", ""),
        action_id=cells.get("ResolvedActionId", ""),
        cells=own,
    )


_RESULT_NAMES = frozenset(
    {"Line", "Status", "ErrorType", "ErrorCode", "Message", "ResolvedActionId", "State",
     "OldAmount", "NewAmount", "OldPayout", "NewPayout"}
)  # fmt: skip


def _result_rows(raw: bytes) -> Iterator[dict[str, str]]:
    """Rows of a result CSV in whatever dialect it answers (encoding with or without BOM)."""
    text = _decode(raw)
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t|", key=first.count)
    yield from csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)


def _decode(raw: bytes) -> str:
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if raw.startswith(bom):
            return raw.decode("utf-16" if name == "utf-16" else "utf-8-sig")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
