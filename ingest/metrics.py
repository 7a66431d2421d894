"""What `/metrics` serves: the queue and the nodes in the Prometheus text format (version 0.0.4).

Every figure is read from the database, so each node of a cluster answers for the whole cluster.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from ingest import tables as t
from ingest.cluster import nodes
from ingest.config import Settings
from ingest.files import FINISHED, FileStatus
from ingest.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(settings: Settings, store: Store) -> str:
    """The metrics text (raises Transient while the database is down)."""
    f = t.files.c
    by_status = select(f.channel, f.status, func.count()).group_by(f.channel, f.status)
    oldest = select(func.min(f.received_at)).where(f.status == FileStatus.QUEUED)
    pending = select(func.count()).where(f.status.in_(sorted(FINISHED)), f.delivered_at.is_(None))
    with store.read() as conn:
        counts = [(str(c), str(s), int(n)) for c, s, n in conn.execute(by_status)]
        oldest_at = conn.scalar(oldest)
        undelivered = int(conn.scalar(pending) or 0)
    lease = timedelta(seconds=settings.cluster.lease_seconds)
    views = nodes(store, lease)
    status_total = {s.value: 0 for s in FileStatus}
    for _, status, n in counts:
        status_total[status] = status_total.get(status, 0) + n
    age = (datetime.now(UTC) - oldest_at).total_seconds() if oldest_at else 0.0
    out: list[str] = []
    _gauge(out, "returnsd_files", "Files by channel and status.", [
        ({"channel": c, "status": s}, n) for c, s, n in sorted(counts)
    ])  # fmt: skip
    _gauge(out, "returnsd_files_by_status", "Files by status.", [
        ({"status": s}, n) for s, n in sorted(status_total.items())
    ])  # fmt: skip
    _gauge(out, "returnsd_queue_depth", "Files waiting to be processed.", [
        ({}, status_total[FileStatus.QUEUED])
    ])  # fmt: skip
    _gauge(out, "returnsd_oldest_queued_seconds", "Age of the oldest queued file.", [({}, age)])
    _gauge(out, "returnsd_claims_in_flight", "Files being processed (claimed), by node.", [
        ({"node": v.id}, v.holding) for v in views
    ] or [({}, status_total[FileStatus.PROCESSING])])  # fmt: skip
    _gauge(out, "returnsd_nodes_alive", "Cluster nodes with a fresh heartbeat.", [
        ({}, sum(v.alive for v in views))
    ])  # fmt: skip
    _gauge(out, "returnsd_node_heartbeat_age_seconds", "Seconds since each node's heartbeat.", [
        ({"node": v.id}, (datetime.now(UTC) - v.heartbeat_at).total_seconds()) for v in views
    ])  # fmt: skip
    _gauge(out, "returnsd_deliveries_pending", "Finished files whose result is not back yet.", [
        ({}, undelivered)
    ])  # fmt: skip
    return "\n".join(out) + "\n"


def _gauge(
    out: list[str], name: str, help_text: str, samples: list[tuple[dict[str, str], float]]
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} gauge")
    for labels, value in samples:
        label = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        out.append(f"{name}{{{label}}} {_number(value)}" if label else f"{name} {_number(value)}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
