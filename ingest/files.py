"""The file record's one owner: its status, and every write to the `files`/`results` rows.

QUEUED → PROCESSING → COMPLETE | FAILED, or DUPLICATE at intake; back to QUEUED on release
(database outage), recovery (dead worker) or an operator's reprocess. The engine returns a
`Completed` outcome that `complete` records in the engine's own transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from ingest import tables as t
from ingest.events import file_event
from ingest.store import Store


class FileStatus(StrEnum):
    """Where a received file is in its life (the strings stored in `files.status`)."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    DUPLICATE = "DUPLICATE"

    @property
    def finished(self) -> bool:
        """True for the end states: COMPLETE, FAILED, DUPLICATE."""
        return self in FINISHED


FINISHED = frozenset({FileStatus.COMPLETE, FileStatus.FAILED, FileStatus.DUPLICATE})
# Failures of returnsd itself, not of the file: the same bytes sent again are processed anew.
RETRYABLE = ("INTERNAL_ERROR", "INTERRUPTED")
INTERNAL_ERROR, INTERRUPTED, DUPLICATE_CODE = "INTERNAL_ERROR", "INTERRUPTED", "DUPLICATE"


@dataclass(frozen=True)
class FileRecord:
    """A claimed file as the engine reads it."""

    id: str
    campaign_id: str
    channel: str
    name: str
    sender: str | None
    spool_path: Path


@dataclass(frozen=True)
class NewFile:
    """A file the spool has stored durably and wants recorded."""

    id: str
    campaign_id: str
    channel: str
    name: str
    size: int
    sha256: str
    spool_path: Path
    received_at: datetime
    sender: str | None = None
    peer: str | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The `files` row without its status."""
        return {
            "id": self.id,
            "campaign_id": self.campaign_id,
            "channel": self.channel,
            "name": self.name,
            "sender": self.sender,
            "peer": self.peer,
            "size": self.size,
            "sha256": self.sha256,
            "spool_path": str(self.spool_path),
            "attempts": 0,
            "meta": dict(self.meta),
            "received_at": self.received_at,
        }


@dataclass(frozen=True)
class Admitted:
    """What `admit` decided: the id that holds these bytes, its status, the first copy's id."""

    file_id: str
    status: FileStatus
    duplicate_of: str | None = None


@dataclass(frozen=True)
class Completed:
    """The engine's outcome for a file it processed: its result CSV and JSON summary."""

    result_path: Path
    summary: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        """Counts by status and error code."""
        counts: dict[str, Any] = self.summary["counts"]
        return counts


def _now() -> datetime:
    return datetime.now(UTC)


def admit(conn: Connection, new: NewFile) -> Admitted:
    """Record a stored file as QUEUED, or as a DUPLICATE of the first file with its bytes.

    A first copy that FAILED for a reason of returnsd's own (RETRYABLE) hands its hash over to
    the new file; a first copy still QUEUED or PROCESSING answers with that file's id (a resend
    after a lost acknowledgement). Raises IntegrityError when another copy was recorded at the
    same moment (the caller looks again).
    """
    first = _first_with_hash(conn, new.campaign_id, new.sha256)
    if first is None:
        conn.execute(
            t.file_hashes.insert(),
            {"campaign_id": new.campaign_id, "sha256": new.sha256, "file_id": new.id},
        )
        return _queue(conn, new)
    first_id, first_status, first_error = first
    if first_status == FileStatus.FAILED and first_error in RETRYABLE:
        _move_hash(conn, new)
        return _queue(conn, new)
    if first_status in (FileStatus.QUEUED, FileStatus.PROCESSING):
        return Admitted(first_id, FileStatus(first_status))
    duplicate(conn, new, first_id)
    return Admitted(new.id, FileStatus.DUPLICATE, first_id)


def _queue(conn: Connection, new: NewFile) -> Admitted:
    conn.execute(t.files.insert(), {**new.row(), "status": FileStatus.QUEUED})
    return Admitted(new.id, FileStatus.QUEUED)


def _move_hash(conn: Connection, new: NewFile) -> None:
    h = t.file_hashes.c
    conn.execute(
        t.file_hashes.update()
        .where(h.campaign_id == new.campaign_id, h.sha256 == new.sha256)
        .values(file_id=new.id)
    )


def duplicate(conn: Connection, new: NewFile, first_id: str) -> None:
    """Record `new` as a DUPLICATE of `first_id` (its bytes are not kept)."""
    conn.execute(
        t.files.insert(),
        {
            **new.row(),
            "spool_path": "",
            "status": FileStatus.DUPLICATE,
            "duplicate_of": first_id,
            "error_code": DUPLICATE_CODE,
            "error_message": f"the same bytes were already received as {first_id}",
            "finished_at": new.received_at,
        },
    )


def _first_with_hash(
    conn: Connection, campaign: str, digest: str
) -> tuple[str, str, str | None] | None:
    q = (
        select(t.files.c.id, t.files.c.status, t.files.c.error_code)
        .join(t.file_hashes, t.file_hashes.c.file_id == t.files.c.id)
        .where(t.file_hashes.c.campaign_id == campaign, t.file_hashes.c.sha256 == digest)
    )
    found = conn.execute(q).first()
    return (found[0], found[1], found[2]) if found else None


def complete(conn: Connection, file_id: str, outcome: Completed) -> None:
    """Record a processed file's result and COMPLETE status (in the engine's transaction)."""
    _set_result(conn, file_id, str(outcome.result_path), outcome.summary)
    _finish(conn, file_id, FileStatus.COMPLETE, counts=outcome.counts)


def _set_result(conn: Connection, file_id: str, path: str, summary: dict[str, Any]) -> None:
    conn.execute(t.results.delete().where(t.results.c.file_id == file_id))
    conn.execute(
        t.results.insert(),
        {"file_id": file_id, "path": path, "summary": summary, "created_at": _now()},
    )


def _finish(
    conn: Connection,
    file_id: str,
    status: FileStatus,
    *,
    counts: dict[str, Any] | None = None,
    error: tuple[str | None, str | None] = (None, None),
) -> None:
    q = update(t.files).where(t.files.c.id == file_id)
    values = {"status": status, "finished_at": _now(), "counts": counts, "worker": None}
    conn.execute(q.values(**values, error_code=error[0], error_message=error[1]))


def fail(
    conn: Connection,
    file_id: str,
    code: str,
    message: str,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Record a file-level failure: a result row with the error, status FAILED; the summary."""
    summary = {"error": {"code": code, "message": message}, "timings": timings or {}}
    _set_result(conn, file_id, "", summary)
    _finish(conn, file_id, FileStatus.FAILED, error=(code, message))
    return summary


class FileLifecycle:
    """The transitions that open their own transaction: claim, release, recover, fail, deliver,
    reprocess, purge; and the status of a file."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def status(self, file_id: str) -> FileStatus | None:
        """The current status of a file (None: no such file)."""
        with self.store.read() as conn:
            found = conn.scalar(select(t.files.c.status).where(t.files.c.id == file_id))
        return FileStatus(found) if found else None

    def claim(self, worker: str, file_id: str | None = None) -> FileRecord | None:
        """Move the oldest QUEUED file (or the given one) to PROCESSING for `worker`."""
        f = t.files.c
        with self.store.begin() as conn:
            q = select(t.files).where(f.status == FileStatus.QUEUED)
            q = q.where(f.id == file_id) if file_id else q.order_by(f.id)
            row = conn.execute(q.limit(1)).mappings().first()
            if row is None:
                return None
            done = conn.execute(
                update(t.files)
                .where(f.id == row["id"], f.status == FileStatus.QUEUED)
                .values(
                    status=FileStatus.PROCESSING,
                    attempts=f.attempts + 1,
                    worker=worker,
                    started_at=_now(),
                )
            )
            if done.rowcount != 1:
                return None
        return FileRecord(
            row["id"],
            row["campaign_id"],
            row["channel"],
            row["name"],
            row["sender"],
            Path(row["spool_path"]),
        )

    def release(self, file_id: str, why: str) -> None:
        """Put a PROCESSING file back in the queue (raises Transient while the DB is down)."""
        f = t.files.c
        with self.store.begin() as conn:
            conn.execute(
                update(t.files)
                .where(f.id == file_id, f.status == FileStatus.PROCESSING)
                .values(status=FileStatus.QUEUED, worker=None, error_message=why)
            )

    def recover(
        self, worker: str, alive: Callable[[str | None, datetime | None], bool], max_attempts: int
    ) -> list[tuple[str, int]]:
        """Requeue PROCESSING files of dead workers, or fail them after `max_attempts`.

        Returns (file id, attempts) of each file taken back.
        """
        f = t.files.c
        q = select(f.id, f.worker, f.started_at, f.attempts).where(
            f.status == FileStatus.PROCESSING
        )
        with self.store.begin() as conn:
            rows = conn.execute(q).all()
            dead = [r for r in rows if r.worker != worker and not alive(r.worker, r.started_at)]
            for r in dead:
                if r.attempts >= max_attempts:
                    why = f"processing was interrupted {r.attempts} times; the operator must look"
                    fail(conn, r.id, INTERRUPTED, why + " at it")
                else:
                    conn.execute(
                        update(t.files)
                        .where(f.id == r.id)
                        .values(status=FileStatus.QUEUED, worker=None)
                    )
        return [(r.id, r.attempts) for r in dead]

    def fail(
        self, file_id: str, code: str, message: str, timings: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """Record a file-level failure in its own transaction; return the summary."""
        with self.store.begin() as conn:
            return fail(conn, file_id, code, message, timings)

    def deliver(self, file_id: str) -> None:
        """Record that the sender got the result."""
        q = update(t.files).where(t.files.c.id == file_id).values(delivered_at=_now())
        with self.store.begin() as conn:
            conn.execute(q)

    def reprocess(self, file_id: str, actor: str) -> FileStatus | None:
        """Queue a FAILED or DUPLICATE file again on an operator's request; return its old status.

        A DUPLICATE takes its first copy's spooled bytes (a duplicate keeps none). The request is
        kept in the file's `meta` (`reprocessed`: who, when, from which status). Returns None when
        there is no such file; raises ValueError when the file cannot be processed again.
        """
        with self.store.begin() as conn:
            row = conn.execute(select(t.files).where(t.files.c.id == file_id)).mappings().first()
            if row is None:
                return None
            old = FileStatus(row["status"])
            if old not in (FileStatus.FAILED, FileStatus.DUPLICATE):
                raise ValueError(f"file {file_id} is {old}: only FAILED or DUPLICATE files")
            path = row["spool_path"] or _spool_path(conn, row["duplicate_of"])
            if not path or not Path(path).exists():
                raise ValueError(f"the bytes of file {file_id} are no longer kept")
            meta = dict(_json(row["meta"]) or {})
            history = [*meta.get("reprocessed", [])]
            history.append({"by": actor, "at": _now().isoformat(), "from": str(old)})
            meta["reprocessed"] = history
            conn.execute(t.results.delete().where(t.results.c.file_id == file_id))
            conn.execute(
                update(t.files)
                .where(t.files.c.id == file_id)
                .values(
                    status=FileStatus.QUEUED,
                    spool_path=path,
                    worker=None,
                    error_code=None,
                    error_message=None,
                    finished_at=None,
                    delivered_at=None,
                    counts=None,
                    attempts=0,
                    meta=meta,
                )
            )
        file_event("reprocess", file_id=file_id, outcome=f"{old} → QUEUED", actor=actor)
        return old

    def purgeable(self, cutoff: datetime) -> list[tuple[str, str, str | None]]:
        """(id, spool path, result path) of finished files older than `cutoff` with bytes."""
        q = (
            select(t.files.c.id, t.files.c.spool_path, t.results.c.path)
            .outerjoin(t.results, t.results.c.file_id == t.files.c.id)
            .where(
                t.files.c.status.in_(sorted(FINISHED)),
                t.files.c.finished_at < cutoff,
                t.files.c.spool_path != "",
            )
        )
        with self.store.read() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(q)]

    def purge(self, file_id: str) -> None:
        """Forget a file's result and spooled bytes (the record itself stays)."""
        with self.store.begin() as conn:
            conn.execute(t.results.delete().where(t.results.c.file_id == file_id))
            q = update(t.files).where(t.files.c.id == file_id).values(spool_path="")
            conn.execute(q)

    def known(self, ids: list[str]) -> set[str]:
        """Which of these file ids have a record."""
        found: set[str] = set()
        with self.store.read() as conn:
            for i in range(0, len(ids), 500):
                q = select(t.files.c.id).where(t.files.c.id.in_(ids[i : i + 500]))
                found.update(conn.scalars(q))
        return found


def _spool_path(conn: Connection, file_id: str | None) -> str:
    if not file_id:
        return ""
    return conn.scalar(select(t.files.c.spool_path).where(t.files.c.id == file_id)) or ""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # SQLite returns JSON text
