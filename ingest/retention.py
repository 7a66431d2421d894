"""Retention: results and spooled bytes older than `retention_days` are removed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.config import Settings
from ingest.files import FileLifecycle
from ingest.store import Store

log = logging.getLogger("returnsd.retention")


def purge(settings: Settings, store: Store, now: datetime | None = None) -> int:
    """Delete result files and spooled bytes of files finished before the retention window."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    lifecycle = FileLifecycle(store)
    old = lifecycle.purgeable(cutoff)
    for file_id, spool_path, result_path in old:
        for p in (spool_path, result_path):
            if p:
                Path(p).unlink(missing_ok=True)
        lifecycle.purge(file_id)
    sweep_orphans(settings, store, now)
    if old:
        log.info("retention: removed results and spooled bytes of %d files", len(old))
    return len(old)


ORPHAN_AGE = timedelta(hours=1)


def sweep_orphans(settings: Settings, store: Store, now: datetime | None = None) -> int:
    """Remove spool bytes that were never recorded (a crash or an outage between the rename and
    the record: the sender got no acknowledgement and sends again) and stale temporary files."""
    cutoff = (now or datetime.now(UTC)) - ORPHAN_AGE
    root = settings.path(settings.spool_dir)
    if not root.is_dir():
        return 0
    old = [p for p in root.glob("*/*") if p.is_file() and _mtime(p) < cutoff]
    temporary = [p for p in old if p.parent.name == "tmp"]
    spooled = {p.name: p for p in old if p.parent.name != "tmp"}
    known = FileLifecycle(store).known(sorted(spooled))
    orphans = [*temporary, *(p for name, p in spooled.items() if name not in known)]
    for p in orphans:
        p.unlink(missing_ok=True)
    if orphans:
        log.info("retention: removed %d unrecorded spool files", len(orphans))
    return len(orphans)


def _mtime(p: Path) -> datetime:
    return datetime.fromtimestamp(p.stat().st_mtime, UTC)
