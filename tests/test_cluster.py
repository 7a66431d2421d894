"""Cluster mode on a real PostgreSQL: claims with leases, requeue after a death, fenced commits,
spooled bytes and results in the database, one run per job period, the nodes table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import text, update

from ingest import tables as t
from ingest.cluster import JobClaims, Node, nodes
from ingest.config import Settings
from ingest.errors import ConfigError
from ingest.files import FileLifecycle, FileStatus, LostClaim, complete
from ingest.results import ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from ingest.worker import Worker
from scheduler import period_of
from tests.conftest import _reset_pg

CSV = b"ActionId,Amount,Reason\r\nNO-SUCH-1,1.00,ITEM_RETURNED\r\n"
LEASE = timedelta(seconds=30)


@pytest.fixture
def cluster_settings(make_settings: Callable[..., Settings], pg_database: str) -> Settings:
    """Settings with cluster mode on over a fresh PostgreSQL database."""
    _reset_pg(pg_database)
    cluster = {"enabled": True, "lease_seconds": 30, "heartbeat_seconds": 5}
    return make_settings(database_url=pg_database, cluster=cluster)


@pytest.fixture
def pg_store(cluster_settings: Settings) -> Iterator[Store]:
    """A migrated PostgreSQL store."""
    s = prepare(cluster_settings)
    yield s
    s.dispose()


def _queue(settings: Settings, store: Store, n: int) -> list[str]:
    spool = Spool(settings, store)
    return [
        spool.accept("acme", "http", f"r{i}.csv", CSV + b"#%d\r\n" % i).file_id for i in range(n)
    ]


def _expire(store: Store, file_id: str) -> None:
    with store.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        conn.execute(update(t.files).where(t.files.c.id == file_id).values(lease_until=past))


def _row(store: Store, file_id: str) -> Any:
    with store.read() as conn:
        return conn.execute(t.files.select().where(t.files.c.id == file_id)).first()


def test_claim_skips_a_row_another_node_is_taking(
    cluster_settings: Settings, pg_store: Store
) -> None:
    first, second = _queue(cluster_settings, pg_store, 2)
    with pg_store.engine.connect() as other:
        other.execute(text("BEGIN"))
        other.execute(text("SELECT id FROM files WHERE id = :i FOR UPDATE"), {"i": first})
        rec = FileLifecycle(pg_store).claim("node-b", lease=LEASE)  # not blocked by node a
        other.execute(text("ROLLBACK"))
    assert rec is not None and rec.id == second and rec.claimed_by == "node-b"
    row = _row(pg_store, second)
    assert row.status == FileStatus.PROCESSING and row.lease_until > datetime.now(UTC)


def test_expired_lease_is_requeued_counted_and_capped(
    cluster_settings: Settings, pg_store: Store
) -> None:
    (file_id,) = _queue(cluster_settings, pg_store, 1)
    lifecycle = FileLifecycle(pg_store)
    for attempt in range(1, 4):
        assert lifecycle.claim("node-a", lease=LEASE) is not None
        assert lifecycle.recover("node-b", lambda *_: True, 3) == []  # lease still good
        _expire(pg_store, file_id)
        assert lifecycle.recover("node-b", lambda *_: True, 3) == [(file_id, attempt)]
    row = _row(pg_store, file_id)
    assert row.status == FileStatus.FAILED and row.error_code == "INTERRUPTED"


def test_renewed_lease_is_not_requeued(cluster_settings: Settings, pg_store: Store) -> None:
    (file_id,) = _queue(cluster_settings, pg_store, 1)
    lifecycle = FileLifecycle(pg_store)
    lifecycle.claim("node-a", lease=LEASE)
    _expire(pg_store, file_id)
    assert lifecycle.renew("node-a", LEASE) == 1
    assert lifecycle.recover("node-b", lambda *_: True, 3) == []


def test_a_node_that_lost_its_claim_cannot_complete(
    cluster_settings: Settings, pg_store: Store
) -> None:
    (file_id,) = _queue(cluster_settings, pg_store, 1)
    lifecycle = FileLifecycle(pg_store)
    stale = lifecycle.claim("node-a", lease=LEASE)
    assert stale is not None
    _expire(pg_store, file_id)
    lifecycle.recover("node-b", lambda *_: True, 3)
    assert lifecycle.claim("node-b", lease=LEASE) is not None
    worker_a = Worker(cluster_settings, pg_store, tag="node-a", lease=LEASE)
    worker_a.process(stale)  # node a woke up: its commit is refused, nothing is applied
    row = _row(pg_store, file_id)
    assert row.status == FileStatus.PROCESSING and row.worker == "node-b"
    with pytest.raises(LostClaim), pg_store.begin() as conn:
        complete(conn, file_id, None, "node-a")  # type: ignore[arg-type]


def test_spooled_bytes_and_results_live_in_the_database(
    cluster_settings: Settings, pg_store: Store
) -> None:
    (file_id,) = _queue(cluster_settings, pg_store, 1)
    row = _row(pg_store, file_id)
    assert row.spool_path == f"db:{file_id}"
    spool_dir = cluster_settings.path(cluster_settings.spool_dir)
    assert not [p for p in spool_dir.rglob("*") if p.is_file()], "no local copy is kept"
    assert Worker(cluster_settings, pg_store, tag="node-a", lease=LEASE).drain() == 1
    outcome = ResultStore(pg_store).outcome(file_id)
    assert outcome is not None and outcome.status == FileStatus.COMPLETE
    assert outcome.result_path is not None
    local = outcome.result_csv()
    outcome.result_path.unlink()  # another node: the result CSV is not on its disk
    assert ResultStore(pg_store).outcome(file_id).result_csv() == local  # type: ignore[union-attr]
    assert local and b"ACTION_NOT_FOUND" in local
    assert not [p for p in spool_dir.rglob("*") if p.is_file()], "the working copy is removed"


def test_job_period_runs_once_across_nodes(pg_store: Store) -> None:
    period = datetime(2026, 12, 1, 12, 15, tzinfo=UTC)
    a, b = JobClaims(pg_store, "node-a"), JobClaims(pg_store, "node-b")
    assert a.claim("lock", period) is True
    assert b.claim("lock", period) is False
    assert b.claim("lock", period + timedelta(minutes=15)) is True


def test_period_of_is_the_latest_fire_time() -> None:
    every15 = CronTrigger.from_crontab("*/15 * * * *", timezone=UTC)
    now = datetime(2026, 12, 1, 12, 29, 59, tzinfo=UTC)
    assert period_of(every15, now) == datetime(2026, 12, 1, 12, 15, tzinfo=UTC)
    daily = CronTrigger.from_crontab("30 3 * * *", timezone=UTC)
    assert period_of(daily, now) == datetime(2026, 12, 1, 3, 30, tzinfo=UTC)
    monthly = CronTrigger.from_crontab("0 0 1 * *", timezone=UTC)
    assert period_of(monthly, now) == datetime(2026, 12, 1, tzinfo=UTC)


def test_nodes_heartbeat_and_a_live_id_is_refused(
    cluster_settings: Settings, pg_store: Store
) -> None:
    node = Node(cluster_settings, pg_store)
    node.join()
    FileLifecycle(pg_store).claim(node.id, lease=LEASE)
    _queue(cluster_settings, pg_store, 1)
    FileLifecycle(pg_store).claim(node.id, lease=LEASE)
    assert node.beat() == 1
    with pytest.raises(ConfigError, match="in use by a live node"):
        Node(cluster_settings, pg_store).join()
    (view,) = nodes(pg_store, LEASE)
    assert view.id == node.id and view.alive and view.holding == 1
    node.leave()
    assert not nodes(pg_store, LEASE)[0].alive
    Node(cluster_settings, pg_store).join()  # a cleanly stopped id may start again


def test_cluster_needs_postgresql(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="needs a PostgreSQL database_url"):
        make_settings(cluster={"enabled": True})


def test_metrics_text(cluster_settings: Settings, pg_store: Store) -> None:
    from ingest.metrics import render

    _queue(cluster_settings, pg_store, 2)
    node = Node(cluster_settings, pg_store)
    node.join()
    FileLifecycle(pg_store).claim(node.id, lease=LEASE)
    text = render(cluster_settings, pg_store)
    assert "returnsd_queue_depth 1\n" in text
    assert 'returnsd_files{channel="http",status="QUEUED"} 1' in text
    assert f'returnsd_claims_in_flight{{node="{node.id}"}} 1' in text
    assert "returnsd_nodes_alive 1\n" in text
    assert "# TYPE returnsd_deliveries_pending gauge" in text
