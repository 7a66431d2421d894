"""The file-record transitions that open their own transaction: claim, renew, release, recover,
fail, deliver, reprocess, purge — and a file's status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update

from ingest import blobs
from ingest import tables as t
from ingest.events import file_event
from ingest.files.record import (
    FINISHED,
    INTERRUPTED,
    FileRecord,
    FileStatus,
    _bytes_kept,
    _json,
    _now,
    _spool_path,
    fail,
)
from ingest.store import Store


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

    def claim(
        self, worker: str, file_id: str | None = None, lease: timedelta | None = None
    ) -> FileRecord | None:
        """Move the oldest QUEUED file (or the given one) to PROCESSING for `worker`.

        `lease`: the claim is good that long unless renewed (cluster mode). On PostgreSQL the row
        is taken FOR UPDATE SKIP LOCKED: rows another node is claiming are passed over, not waited
        on (SQLite serialises writers with BEGIN IMMEDIATE instead).
        """
        f = t.files.c
        with self.store.begin() as conn:
            q = select(t.files).where(f.status == FileStatus.QUEUED)
            q = q.where(f.id == file_id) if file_id else q.order_by(f.id)
            q = q.limit(1).with_for_update(skip_locked=True)
            row = conn.execute(q).mappings().first()
            if row is None:
                return None
            now = _now()
            done = conn.execute(
                update(t.files)
                .where(f.id == row["id"], f.status == FileStatus.QUEUED)
                .values(
                    status=FileStatus.PROCESSING,
                    attempts=f.attempts + 1,
                    worker=worker,
                    started_at=now,
                    lease_until=now + lease if lease else None,
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
            worker,
        )

    def renew(self, worker: str, lease: timedelta) -> int:
        """Extend the lease of every file `worker` holds; return how many it holds."""
        f = t.files.c
        q = (
            update(t.files)
            .where(f.status == FileStatus.PROCESSING, f.worker == worker)
            .values(lease_until=_now() + lease)
        )
        with self.store.begin() as conn:
            return conn.execute(q).rowcount

    def release(self, file_id: str, why: str, worker: str = "") -> None:
        """Put a PROCESSING file back in the queue (raises Transient while the DB is down).

        With `worker`, only while that worker still holds the file's claim.
        """
        f = t.files.c
        q = update(t.files).where(f.id == file_id, f.status == FileStatus.PROCESSING)
        if worker:
            q = q.where(f.worker == worker)
        with self.store.begin() as conn:
            conn.execute(
                q.values(status=FileStatus.QUEUED, worker=None, lease_until=None, error_message=why)
            )

    def recover(
        self,
        worker: str,
        alive: Callable[[str | None, datetime | None], bool],
        max_attempts: int,
        *,
        mine_too: bool = False,
    ) -> list[tuple[str, int]]:
        """Requeue PROCESSING files of dead workers, or fail them after `max_attempts`.

        A claim with a lease is dead once its lease has run out; one without (single node) when
        `alive` says its worker is gone. `worker`'s own claims count as dead only with `mine_too`
        (at start, before it holds anything). Rows another node is recovering are skipped.
        Returns (file id, attempts) of each file taken back.
        """
        f = t.files.c
        q = select(f.id, f.worker, f.started_at, f.attempts, f.lease_until).where(
            f.status == FileStatus.PROCESSING
        )
        now = _now()

        def dead(r: Any) -> bool:
            if r.worker == worker:
                return mine_too
            if r.lease_until is not None:
                return bool(r.lease_until < now)
            return not alive(r.worker, r.started_at)

        with self.store.begin() as conn:
            rows = [r for r in conn.execute(q.with_for_update(skip_locked=True)) if dead(r)]
            for r in rows:
                if r.attempts >= max_attempts:
                    why = f"processing was interrupted {r.attempts} times; the operator must look"
                    fail(conn, r.id, INTERRUPTED, why + " at it")
                else:
                    conn.execute(
                        update(t.files)
                        .where(f.id == r.id)
                        .values(status=FileStatus.QUEUED, worker=None, lease_until=None)
                    )
        return [(r.id, r.attempts) for r in rows]

    def fail(
        self, file_id: str, code: str, message: str, timings: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """Record a file-level failure in its own transaction; return the summary."""
        with self.store.begin() as conn:
            return fail(conn, file_id, code, message, timings)

    def deliver(self, file_id: str) -> None:
        """Record that the sender got the result (and free a delivery claim)."""
        q = update(t.files).where(t.files.c.id == file_id)
        with self.store.begin() as conn:
            conn.execute(q.values(delivered_at=_now(), worker=None, lease_until=None))

    def claim_delivery(self, file_id: str, node: str, lease: timedelta) -> bool:
        """Cluster mode: True when `node` may give the file's result back now.

        A finished file's `worker` and `lease_until` hold the delivery claim (they are free once
        a file is finished): one node delivers a result, and another takes over only when that
        node's claim ran out without the delivery being recorded.
        """
        f, now = t.files.c, _now()
        q = (
            update(t.files)
            .where(
                f.id == file_id,
                f.delivered_at.is_(None),
                f.status.in_(sorted(FINISHED)),
                or_(f.worker.is_(None), f.worker == node, f.lease_until < now),
            )
            .values(worker=node, lease_until=now + lease)
        )
        with self.store.begin() as conn:
            return conn.execute(q).rowcount == 1

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
            if not path or not _bytes_kept(conn, path):
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
            blobs.drop(conn, file_id)
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
