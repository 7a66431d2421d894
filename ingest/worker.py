"""Spool workers: claim queued files, run the engine, park what cannot be processed."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from ingest import tables as t
from ingest.config import Settings
from ingest.engine import FileRecord, Progress, apply_file
from ingest.errors import FileRejected, Transient
from ingest.events import file_event
from ingest.spool import FAILED, FINISHED, PROCESSING, QUEUED
from ingest.store import Store

log = logging.getLogger("returnsd.worker")
STALE_AFTER = timedelta(hours=2)


def worker_name() -> str:
    """This process's worker tag: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(tag: str | None, started: datetime | None, now: datetime) -> bool:
    """Is the worker that claimed a file still running? (pid check on this host, age elsewhere)."""
    if not tag:
        return False
    host, _, pid = tag.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return started is not None and now - started < STALE_AFTER


def _quiet(stage: str, done: int, total: int) -> None:
    """No progress display."""


class Worker:
    """Processes spooled files one at a time; many workers may share a database."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_finished: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tag = worker_name()
        self.on_finished = on_finished
        self.wake = threading.Event()
        self.unreleased: set[str] = set()  # files to put back in the queue once the DB is back

    def recover(self) -> int:
        """Requeue files whose worker died mid-way (or fail them after max attempts)."""
        now = datetime.now(UTC)
        q = select(t.files.c.id, t.files.c.worker, t.files.c.started_at, t.files.c.attempts)
        with self.store.begin() as conn:
            rows = conn.execute(q.where(t.files.c.status == PROCESSING)).all()
            dead = [
                r for r in rows if r.worker != self.tag and not _alive(r.worker, r.started_at, now)
            ]
            for r in dead:
                values: dict[str, Any] = {"status": QUEUED, "worker": None}
                if r.attempts >= self.settings.max_attempts:
                    values = {
                        "status": FAILED,
                        "worker": None,
                        "finished_at": now,
                        "error_code": "INTERRUPTED",
                        "error_message": f"processing was interrupted {r.attempts} times; "
                        "the operator must look at it",
                    }
                conn.execute(update(t.files).where(t.files.c.id == r.id).values(**values))
        for r in dead:
            log.warning("file %s was interrupted (attempt %s); requeued", r.id, r.attempts)
        return len(dead)

    def claim(self, file_id: str | None = None) -> FileRecord | None:
        """Take the oldest queued file (or the given one) for this worker, or None."""
        with self.store.begin() as conn:
            q = select(t.files).where(t.files.c.status == QUEUED)
            q = q.where(t.files.c.id == file_id) if file_id else q.order_by(t.files.c.id)
            row = conn.execute(q.limit(1)).mappings().first()
            if row is None:
                return None
            done = conn.execute(
                update(t.files)
                .where(t.files.c.id == row["id"], t.files.c.status == QUEUED)
                .values(
                    status=PROCESSING,
                    attempts=t.files.c.attempts + 1,
                    worker=self.tag,
                    started_at=datetime.now(UTC),
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

    def process(self, rec: FileRecord, progress: Progress | None = None) -> None:
        """Run the engine on a claimed file; errors park or requeue it, never crash the worker."""
        started = time.perf_counter()
        try:
            summary = apply_file(self.store, self.settings, rec, progress=progress or _quiet)
        except Transient as exc:
            self._release(rec, f"{exc}")
            file_event(
                "retry",
                file_id=rec.id,
                channel=rec.channel,
                campaign=rec.campaign_id,
                name=rec.name,
                outcome=str(exc),
            )
            return
        except FileRejected as exc:
            self._fail(rec, exc.code, exc.message)
            summary = {"error": {"code": exc.code}}
        except Exception as exc:  # noqa: BLE001 - park the file with its traceback, keep running
            log.error("file %s failed unexpectedly:\n%s", rec.id, traceback.format_exc())
            self._fail(rec, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
            summary = {"error": {"code": "INTERNAL_ERROR"}}
        seconds = time.perf_counter() - started
        counts = summary.get("counts") or {}
        outcome = (
            f"FAILED {summary['error']['code']}"
            if "error" in summary
            else f"COMPLETE applied={counts.get('applied')} unchanged={counts.get('unchanged')} "
            f"errors={counts.get('errors')}"
        )
        file_event(
            "processed",
            file_id=rec.id,
            channel=rec.channel,
            campaign=rec.campaign_id,
            sender=rec.sender,
            name=rec.name,
            seconds=seconds,
            outcome=outcome,
        )
        if self.on_finished:
            self.on_finished(rec.id)

    def _release(self, rec: FileRecord, why: str) -> None:
        self.unreleased.add(rec.id)
        self._release_pending(why)

    def _release_pending(self, why: str = "requeued after a database outage") -> None:
        """Put files this worker gave up on back in the queue (retried until the DB answers)."""
        for file_id in sorted(self.unreleased):
            try:
                with self.store.begin() as conn:
                    conn.execute(
                        update(t.files)
                        .where(t.files.c.id == file_id, t.files.c.status == PROCESSING)
                        .values(status=QUEUED, worker=None, error_message=why)
                    )
            except Transient:
                log.warning("could not requeue %s yet (database down); will retry", file_id)
                return
            self.unreleased.discard(file_id)

    def _fail(self, rec: FileRecord, code: str, message: str) -> None:
        with self.store.begin() as conn:
            conn.execute(
                update(t.files)
                .where(t.files.c.id == rec.id)
                .values(
                    status=FAILED,
                    worker=None,
                    finished_at=datetime.now(UTC),
                    error_code=code,
                    error_message=message,
                )
            )

    def drain(self, stop: threading.Event | None = None) -> int:
        """Process queued files until none is left (or `stop` is set); return how many."""
        done = 0
        while not (stop and stop.is_set()) and (rec := self.claim()) is not None:
            self.process(rec)
            done += 1
        return done

    def status(self, file_id: str) -> str | None:
        """The current status of a file."""
        with self.store.read() as conn:
            return conn.scalar(select(t.files.c.status).where(t.files.c.id == file_id))

    def run(self, stop: threading.Event, idle_seconds: float = 1.0) -> None:
        """Loop until `stop` is set: process queued files, sleep until woken or idle time."""
        while not stop.is_set():
            try:
                if self.unreleased:
                    self._release_pending()
                if self.drain(stop) == 0:
                    self.wake.wait(idle_seconds)
                    self.wake.clear()
            except Transient as exc:
                log.warning("database unavailable, files stay queued: %s", exc)
                stop.wait(min(idle_seconds * 5, 10))

    def wait_finished(self, file_id: str, timeout: float = 3600) -> str | None:
        """Block until a file is finished (e.g. processed by another worker); return its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(file_id)
            if status in FINISHED or status is None:
                return status
            time.sleep(0.2)
        return self.status(file_id)
