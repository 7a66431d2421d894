"""Retention: results and spooled bytes older than `retention_days` are removed."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, update

from ingest import tables as t
from ingest.config import Settings
from ingest.spool import FINISHED
from ingest.store import Store

log = logging.getLogger("returnsd.retention")


def purge(settings: Settings, store: Store, now: datetime | None = None) -> int:
    """Delete result files and spooled bytes of files finished before the retention window."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    q = (
        select(t.files.c.id, t.files.c.spool_path, t.results.c.path)
        .outerjoin(t.results, t.results.c.file_id == t.files.c.id)
        .where(
            t.files.c.status.in_(FINISHED),
            t.files.c.finished_at < cutoff,
            t.files.c.spool_path != "",
        )
    )
    with store.read() as conn:
        old = conn.execute(q).all()
    for file_id, spool_path, result_path in old:
        for p in (spool_path, result_path):
            if p:
                Path(p).unlink(missing_ok=True)
        with store.begin() as conn:
            conn.execute(delete(t.results).where(t.results.c.file_id == file_id))
            conn.execute(update(t.files).where(t.files.c.id == file_id).values(spool_path=""))
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
    known: set[str] = set()
    names = sorted(spooled)
    with store.read() as conn:
        for i in range(0, len(names), 500):
            q = select(t.files.c.id).where(t.files.c.id.in_(names[i : i + 500]))
            known.update(conn.scalars(q))
    orphans = [*temporary, *(p for name, p in spooled.items() if name not in known)]
    for p in orphans:
        p.unlink(missing_ok=True)
    if orphans:
        log.info("retention: removed %d unrecorded spool files", len(orphans))
    return len(orphans)


def _mtime(p: Path) -> datetime:
    return datetime.fromtimestamp(p.stat().st_mtime, UTC)
