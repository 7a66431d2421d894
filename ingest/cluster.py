"""Cluster mode: the nodes over one PostgreSQL database, their heartbeats, and jobs run once.

Each node has a row in `nodes` that its heartbeat refreshes every `heartbeat_seconds`; the same
beat renews the leases of the files it holds. A node is alive while its last heartbeat is younger
than `lease_seconds`. A scheduled job runs once per period across the nodes: the node whose insert
of the (job, period) row into `job_claims` wins runs it (`INSERT … ON CONFLICT DO NOTHING`, which
holds behind a transaction-pooling PgBouncer, unlike a session advisory lock).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ingest import tables as t
from ingest.config import Settings
from ingest.errors import ConfigError
from ingest.files import FileLifecycle, FileStatus
from ingest.store import Store
from ingest.worker import worker_name

log = logging.getLogger("returnsd.cluster")
CLAIMS_KEPT = timedelta(days=40)  # job claims older than this before a new one are deleted


def returnsd_version() -> str:
    """The installed returnsd version."""
    try:
        return version("returnsd")
    except PackageNotFoundError:
        return "unknown"


def _now() -> datetime:
    return datetime.now(UTC)


class Node:
    """This daemon as one node of a cluster: its row, its heartbeat, the leases it renews."""

    def __init__(self, settings: Settings, store: Store) -> None:
        opts = settings.cluster
        self.id = opts.node_id or worker_name()
        self.lease = timedelta(seconds=opts.lease_seconds)
        self.heartbeat_seconds = opts.heartbeat_seconds
        self.store = store
        self.files = FileLifecycle(store)

    def join(self) -> None:
        """Record this node as started; refuse an id a live node already uses."""
        n = t.nodes.c
        now = _now()
        with self.store.begin() as conn:
            row = conn.execute(select(t.nodes).where(n.id == self.id).with_for_update()).first()
            if row is not None and _live(row, now, self.lease):
                raise ConfigError(
                    f"cluster node id {self.id!r} is in use by a live node (heartbeat at "
                    f"{row.heartbeat_at:%H:%M:%S} UTC); give each node its own cluster.node_id"
                )
            conn.execute(t.nodes.delete().where(n.id == self.id))
            conn.execute(
                t.nodes.insert(),
                {
                    "id": self.id,
                    "version": returnsd_version(),
                    "process": worker_name(),
                    "started_at": now,
                    "heartbeat_at": now,
                    "stopped_at": None,
                },
            )
        log.info("cluster node %s joined (lease %gs)", self.id, self.lease.total_seconds())

    def beat(self) -> int:
        """Refresh this node's heartbeat and the leases of its files; return how many it holds."""
        with self.store.begin() as conn:
            q = update(t.nodes).where(t.nodes.c.id == self.id)
            conn.execute(q.values(heartbeat_at=_now(), stopped_at=None))
        return self.files.renew(self.id, self.lease)

    def leave(self) -> None:
        """Record a clean stop (the node holds nothing any more)."""
        with self.store.begin() as conn:
            q = update(t.nodes).where(t.nodes.c.id == self.id).values(stopped_at=_now())
            conn.execute(q)


def _live(row: Any, now: datetime, lease: timedelta) -> bool:
    """Is the run of a node recorded in `row` still alive? (a dead pid on this host is not)."""
    if row.stopped_at is not None or now - row.heartbeat_at >= lease:
        return False
    host, _, pid = str(row.process).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False  # killed a moment ago: its restart need not wait for the lease
        except PermissionError:
            return True
    return True


class JobClaims:
    """Once-per-period runs of scheduled jobs across the nodes of one database."""

    def __init__(self, store: Store, node_id: str) -> None:
        self.store = store
        self.node_id = node_id

    def claim(self, job_id: str, period: datetime) -> bool:
        """True when this node is the one to run `job_id` for the period starting at `period`."""
        row = {"job_id": job_id, "period": period, "node_id": self.node_id, "claimed_at": _now()}
        q = pg_insert(t.job_claims).values(row).on_conflict_do_nothing()
        j = t.job_claims.c
        with self.store.begin() as conn:
            won = conn.execute(q.returning(j.job_id)).first() is not None
            if won:  # the claims of long-gone periods are of no use any more
                old = (j.job_id == job_id) & (j.period < period - CLAIMS_KEPT)
                conn.execute(t.job_claims.delete().where(old))
        if not won:
            log.info("job %s for %s already ran on another node", job_id, period.isoformat())
        return won


@dataclass(frozen=True)
class NodeView:
    """One node as operators see it."""

    id: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    alive: bool
    holding: int  # files it has PROCESSING
    last_job: str | None = None  # the scheduled job it ran last: "<job> <period>"


def nodes(store: Store, lease: timedelta) -> list[NodeView]:
    """Every node that ever joined, newest heartbeat first, with what each holds."""
    f = t.files.c
    held_q = (
        select(f.worker, func.count()).where(f.status == FileStatus.PROCESSING).group_by(f.worker)
    )
    now = _now()
    j = t.job_claims.c
    jobs_q = select(j.node_id, j.job_id, j.period).order_by(j.claimed_at.desc()).limit(1000)
    with store.read() as conn:
        held = {w: int(n) for w, n in conn.execute(held_q)}
        rows = conn.execute(select(t.nodes).order_by(t.nodes.c.heartbeat_at.desc())).all()
        last: dict[str, str] = {}
        for node_id, job_id, period in conn.execute(jobs_q):
            last.setdefault(node_id, f"{job_id} {period:%Y-%m-%d %H:%M}")
    return [
        NodeView(
            r.id,
            r.version,
            r.started_at,
            r.heartbeat_at,
            r.stopped_at,
            r.stopped_at is None and now - r.heartbeat_at < lease,
            held.get(r.id, 0),
            last.get(r.id),
        )
        for r in rows
    ]
