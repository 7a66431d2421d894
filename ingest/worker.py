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

from ingest import blobs, files, salesforce
from ingest.config import Settings
from ingest.engine import Progress, parse_file, run_file
from ingest.errors import FileRejected, Transient
from ingest.events import file_event
from ingest.files import FINISHED, INTERNAL_ERROR, FileLifecycle, FileRecord, FileStatus
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


def process_file(
    store: Store,
    settings: Settings,
    rec: FileRecord,
    *,
    progress: Progress = _quiet,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Process a claimed file to COMPLETE or FAILED and return its JSON summary.

    The engine's changes and the COMPLETE record commit in one transaction: a crash before the
    commit leaves the actions untouched and the file to be processed again.
    """
    started = time.perf_counter()
    try:
        if rec.channel == salesforce.CHANNEL:  # a SOAP message, not a returns file
            return salesforce.process_message(store, settings, rec, now=now)
        job = parse_file(settings, rec, progress, now=now)
    except FileRejected as exc:
        timings = {"parse": round(time.perf_counter() - started, 4)}
        return FileLifecycle(store).fail(rec.id, exc.code, exc.message, timings)
    with store.begin() as conn:
        outcome = run_file(conn, store.sql, job)
        files.complete(conn, rec.id, outcome, rec.claimed_by)
        if settings.cluster.enabled and outcome.result_path.is_file():
            blobs.put(conn, rec.id, blobs.RESULT, outcome.result_path)  # any node serves it
    return outcome.summary


def fetch_bytes(store: Store, settings: Settings, rec: FileRecord) -> FileRecord:
    """A claimed file whose bytes are in the database, with them copied to a local file."""
    held = blobs.held_id(rec.spool_path)
    if held is None:
        return rec
    with store.read() as conn:
        data = blobs.get(conn, held, blobs.SPOOL)
    if data is None:
        raise FileNotFoundError(f"the bytes of file {held} are no longer kept")
    local = settings.path(settings.spool_dir) / "tmp" / f"{rec.id}.claimed"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return FileRecord(
        rec.id, rec.campaign_id, rec.channel, rec.name, rec.sender, local, rec.claimed_by
    )


def _outcome_text(summary: dict[str, Any]) -> str:
    if "error" in summary:
        return f"FAILED {summary['error']['code']}"
    counts = summary.get("counts") or {}
    return (
        f"COMPLETE applied={counts.get('applied')} unchanged={counts.get('unchanged')} "
        f"errors={counts.get('errors')}"
    )


class Worker:
    """Processes spooled files one at a time; many workers may share a database."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        on_finished: Callable[[str], None] | None = None,
        tag: str | None = None,
        lease: timedelta | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tag = tag or worker_name()
        self.lease = lease  # cluster mode: claims carry a lease the node's heartbeat renews
        self.on_finished = on_finished
        self.wake = threading.Event()
        self.unreleased: set[str] = set()  # files to put back in the queue once the DB is back
        self.files = FileLifecycle(store)

    def recover(self, *, mine_too: bool = False) -> int:
        """Requeue files whose worker died mid-way (or fail them after max attempts)."""
        now = datetime.now(UTC)
        dead = self.files.recover(
            self.tag,
            lambda tag, started: _alive(tag, started, now),
            self.settings.max_attempts,
            mine_too=mine_too,
        )
        for file_id, attempts in dead:
            log.warning("file %s was interrupted (attempt %s); requeued", file_id, attempts)
        return len(dead)

    def claim(self, file_id: str | None = None) -> FileRecord | None:
        """Take the oldest queued file (or the given one) for this worker, or None."""
        return self.files.claim(self.tag, file_id, self.lease)

    def process(self, rec: FileRecord, progress: Progress | None = None) -> None:
        """Run the engine on a claimed file; errors park or requeue it, never crash the worker."""
        started = time.perf_counter()
        local: Path | None = None
        try:
            rec = fetch_bytes(self.store, self.settings, rec)
            local = rec.spool_path if rec.spool_path.name.endswith(".claimed") else None
            summary = process_file(self.store, self.settings, rec, progress=progress or _quiet)
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
        except Exception as exc:  # noqa: BLE001 - park the file with its traceback, keep running
            log.error("file %s failed unexpectedly:\n%s", rec.id, traceback.format_exc())
            summary = self.files.fail(rec.id, INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            if local is not None:
                local.unlink(missing_ok=True)
        file_event(
            "processed",
            file_id=rec.id,
            channel=rec.channel,
            campaign=rec.campaign_id,
            sender=rec.sender,
            name=rec.name,
            seconds=time.perf_counter() - started,
            outcome=_outcome_text(summary),
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
                self.files.release(file_id, why, self.tag)
            except Transient:
                log.warning("could not requeue %s yet (database down); will retry", file_id)
                return
            self.unreleased.discard(file_id)

    def drain(self, stop: threading.Event | None = None) -> int:
        """Process queued files until none is left (or `stop` is set); return how many."""
        done = 0
        while not (stop and stop.is_set()) and (rec := self.claim()) is not None:
            self.process(rec)
            done += 1
        return done

    def status(self, file_id: str) -> FileStatus | None:
        """The current status of a file."""
        return self.files.status(file_id)

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

    def wait_finished(self, file_id: str, timeout: float = 3600) -> FileStatus | None:
        """Block until a file is finished (e.g. processed by another worker); return its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(file_id)
            if status in FINISHED or status is None:
                return status
            time.sleep(0.2)
        return self.status(file_id)
