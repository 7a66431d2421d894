"""Cluster mode: bytes every node reads, in the database (`spool_chunks`, 1 MiB `bytea` chunks).

Chunked `bytea` rather than large objects: the chunks are written in the same transaction as the
file record (one commit makes both durable, nothing to fsync or rename), deleted by a plain
DELETE (large objects need `lo_unlink` and leave orphans when a row goes without it), carried by
pg_dump with their table, and need no privilege beyond the table's. A file is at most
`limits.max_file_bytes` (200 MiB by default), far below `bytea`'s 1 GB per value, and 1 MiB
chunks keep each row small. A spooled file's `spool_path` is `db:<file id>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import ColumnElement, Connection, and_, delete, exists, select

from ingest import tables as t

SPOOL, RESULT = "spool", "result"
DB_PREFIX = "db:"
CHUNK = 1024 * 1024


def db_path(file_id: str) -> Path:
    """The `spool_path` of bytes kept in the database."""
    return Path(DB_PREFIX + file_id)


def held_id(path: str | Path) -> str | None:
    """The file id whose bytes a `db:` spool path names, or None for a local path."""
    text = str(path)
    return text.removeprefix(DB_PREFIX) if text.startswith(DB_PREFIX) else None


def put(conn: Connection, file_id: str, kind: str, source: Path) -> None:
    """Store the bytes of `source` as `kind` of `file_id` (replacing earlier ones)."""
    conn.execute(delete(t.spool_chunks).where(_of(file_id, kind)))
    rows = [
        {"file_id": file_id, "kind": kind, "seq": seq, "data": data}
        for seq, data in enumerate(_read(source))
    ]
    for i in range(0, len(rows), 16):
        conn.execute(t.spool_chunks.insert(), rows[i : i + 16])


def get(conn: Connection, file_id: str, kind: str) -> bytes | None:
    """The stored bytes of `kind` of `file_id`, or None when there are none."""
    c = t.spool_chunks.c
    q = select(c.data).where(_of(file_id, kind)).order_by(c.seq)
    parts = [bytes(p) for p in conn.scalars(q)]
    return b"".join(parts) if parts else None


def held(conn: Connection, file_id: str, kind: str) -> bool:
    """True when bytes of `kind` of `file_id` are stored."""
    return bool(conn.scalar(select(exists().where(_of(file_id, kind)))))


def drop(conn: Connection, file_id: str) -> None:
    """Forget every stored byte of `file_id`."""
    conn.execute(delete(t.spool_chunks).where(t.spool_chunks.c.file_id == file_id))


def _of(file_id: str, kind: str) -> ColumnElement[bool]:
    c = t.spool_chunks.c
    return and_(c.file_id == file_id, c.kind == kind)


def _read(source: Path) -> Iterator[bytes]:
    with open(source, "rb") as f:
        yield from iter(lambda: f.read(CHUNK), b"")
