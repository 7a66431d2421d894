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
    _purge_orphans(settings, cutoff)
    if old:
        log.info("retention: removed results and spooled bytes of %d files", len(old))
    return len(old)


def _purge_orphans(settings: Settings, cutoff: datetime) -> None:
    """Remove temporary spool files left by a crash before they were recorded."""
    tmp = settings.path(settings.spool_dir) / "tmp"
    if not tmp.is_dir():
        return
    for p in tmp.iterdir():
        if datetime.fromtimestamp(p.stat().st_mtime, UTC) < cutoff:
            p.unlink(missing_ok=True)
