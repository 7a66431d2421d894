"""What the scheduled pull remembers: remote files already fetched, and when each job last ran."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ingest import tables as t
from ingest.store import Store


class PullLedger:
    """The `pulled` and `job_runs` tables, as the pull channel and the scheduler need them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def seen(self, campaign: str, path: str, size: int, mtime: int) -> bool:
        """True when this exact remote file (path, size, mtime) was fetched before."""
        p = t.pulled.c
        q = select(p.file_id).where(
            p.campaign_id == campaign, p.remote_path == path, p.size == size, p.mtime == mtime
        )
        with self.store.read() as conn:
            return conn.execute(q).first() is not None

    def record(
        self, campaign: str, path: str, size: int, mtime: int, sha256: str, file_id: str
    ) -> None:
        """Remember a fetched remote file (a second record of the same file is ignored)."""
        row = {"campaign_id": campaign, "remote_path": path, "size": size, "mtime": mtime,
               "sha256": sha256, "file_id": file_id, "at": datetime.now(UTC)}  # fmt: skip
        try:
            with self.store.begin() as conn:
                conn.execute(t.pulled.insert(), row)
        except IntegrityError:
            pass  # two runs fetched the same file at once; the spool already made it one file

    def last_run(self, job_id: str) -> datetime | None:
        """When the job last completed, or None if never."""
        q = select(t.job_runs.c.last_run_at).where(t.job_runs.c.job_id == job_id)
        with self.store.read() as conn:
            return conn.execute(q).scalar()

    def set_last_run(self, job_id: str, at: datetime) -> None:
        """Record that the job completed at `at` (time-zone aware)."""
        runs = t.job_runs
        with self.store.begin() as conn:
            done = conn.execute(
                runs.update().where(runs.c.job_id == job_id).values(last_run_at=at)
            ).rowcount
            if not done:
                conn.execute(runs.insert(), {"job_id": job_id, "last_run_at": at})
