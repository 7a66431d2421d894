"""The file record's one owner: its status, and every write to the `files`/`results` rows.

QUEUED → PROCESSING → COMPLETE | FAILED, or DUPLICATE at intake; back to QUEUED on release
(database outage), recovery (dead worker) or an operator's reprocess. The engine returns a
`Completed` outcome that `complete` records in the engine's own transaction.

Several nodes over one PostgreSQL database: a claim takes the oldest queued row `FOR UPDATE SKIP
LOCKED` (two nodes never wait on or take the same row) and carries a lease (`lease_until`) that the
claimer's heartbeat renews; `recover` requeues the files whose lease ran out; `complete` records
only while the claim is still the claimer's, so a node that lost its claim (stalled past its lease)
rolls its whole transaction back instead of applying a file that another node now holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select, update

from ingest import blobs
from ingest import tables as t
from ingest.errors import Transient


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
    claimed_by: str = ""  # the worker that holds the claim ("" outside a claim)


class LostClaim(Transient):
    """The file's claim passed to another worker (this one outlived its lease): roll back."""


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


def complete(conn: Connection, file_id: str, outcome: Completed, claimed_by: str = "") -> None:
    """Record a processed file's result and COMPLETE status (in the engine's transaction).

    With `claimed_by`, raises LostClaim (the caller's transaction must roll back) unless the file
    is still PROCESSING under that worker's claim.
    """
    if claimed_by:
        _hold(conn, file_id, claimed_by)
    _set_result(conn, file_id, str(outcome.result_path), outcome.summary)
    _finish(conn, file_id, FileStatus.COMPLETE, counts=outcome.counts)


def _hold(conn: Connection, file_id: str, worker: str) -> None:
    """Lock the file's row and check that `worker` still holds its claim."""
    f = t.files.c
    q = select(f.worker).where(f.id == file_id, f.status == FileStatus.PROCESSING)
    if conn.scalar(q.with_for_update()) != worker:
        raise LostClaim(f"file {file_id} is no longer claimed by {worker}; another worker has it")


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
    values = {
        "status": status,
        "finished_at": _now(),
        "counts": counts,
        "worker": None,
        "lease_until": None,
    }
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


def _bytes_kept(conn: Connection, path: str) -> bool:
    held = blobs.held_id(path)
    return blobs.held(conn, held, blobs.SPOOL) if held else Path(path).exists()


def _spool_path(conn: Connection, file_id: str | None) -> str:
    if not file_id:
        return ""
    return conn.scalar(select(t.files.c.spool_path).where(t.files.c.id == file_id)) or ""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # SQLite returns JSON text
