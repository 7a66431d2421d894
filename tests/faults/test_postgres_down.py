"""PostgreSQL stopped mid-run: nothing is acknowledged that is not recorded; the daemon catches up.

A private PostgreSQL cluster (its own data folder, port and socket; the shared server on 5432 is
never touched) backs the real daemon (`returnsd run`, a child process), each test on a database of
its own. While the cluster is stopped (`pg_ctl stop -m fast`), the spool can write a file's bytes
but cannot record them, and a file that is not recorded must not be acknowledged: FTP must answer
451, SMTP 451 after DATA, HTTP 503, and nothing may be left in the spool. The daemon must stay up
(process alive, every port answering). Once the cluster is started again, the refused files are
sent again and every acknowledged file ends COMPLETE exactly once, with the ledger the union of
their changes — a file that was PROCESSING when the database went away included.
"""

from __future__ import annotations

import ftplib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from channels.base import ChannelContext
from channels.http_api import HttpApiChannel
from ingest.config import Settings
from ingest.results import ResultStore
from ingest.spool import Spool
from ingest.store import Store
from tests.conftest import need
from tests.faults.helpers import (
    HOST,
    RETURNSD,
    DaemonProcess,
    Db,
    Plan,
    PrivatePostgres,
    ReturnsFile,
    Secrets,
    campaign_doc,
    free_port,
    ftp_send,
    http_send,
    smtp_send,
    until,
    verify,
)

pytestmark = [pytest.mark.timeout(240)]
PADDING = 120_000  # ACTION_NOT_FOUND rows: keep the big file PROCESSING for a second or so
ACK = {"ftp": 226, "smtp": 250, "http": 202}
CATCH_UP = 20.0  # seconds a restarted database gives the daemon to finish every file
MID_FILE_CATCH_UP = 30.0  # the worker backs off 5 s after a database error; slack for load


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster for this module; destroyed at the end."""
    pg = PrivatePostgres()
    try:
        why = pg.init()
        if why:
            need("postgres-cluster", why)
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def database(cluster: PrivatePostgres) -> str:
    """A new database on the (running) private cluster; its URL."""
    if not cluster.running():
        cluster.start()
    name = f"returnsd_{secrets.token_hex(4)}"
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def daemon(database: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    """The daemon on its own database of the private cluster (stopped at the end)."""
    if not RETURNSD.exists():
        need("returnsd", f"{RETURNSD} is not installed (make test installs it)")
    d = DaemonProcess(tmp_path / "d", database_url=database)
    yield d
    d.stop()


def send(d: DaemonProcess, f: ReturnsFile) -> tuple[int, str]:
    """Send a file through its channel; (reply code, reply text). 0: no reply (connection)."""
    try:
        if f.channel == "ftp":
            try:
                reply = ftp_send(d.ports["ftp"], d.secrets.ftp_password, f.name, f.data)
            except ftplib.Error as exc:
                reply = str(exc)
            return int(reply[:3]), reply
        if f.channel == "smtp":
            return smtp_send(d.ports["smtp"], f.name, f.data)
        resp = http_send(d.ports["http"], d.secrets.api_token, f.name, f.data, timeout=30)
        return resp.status_code, resp.text
    except (OSError, EOFError, httpx.HTTPError) as exc:
        return 0, repr(exc)


def send_acked(d: DaemonProcess, files: list[ReturnsFile | None]) -> list[ReturnsFile]:
    """Send each file and require its acknowledgement."""
    sent = []
    for f in files:
        assert f is not None
        code, text = send(d, f)
        assert code == ACK[f.channel], f"{f.channel}: {text}"
        sent.append(f)
    return sent


def all_complete(db: Db, count: int) -> bool:
    """True when exactly `count` files are recorded and every one is COMPLETE."""
    return db.statuses() == {"COMPLETE": count}


def test_database_down_refuses_temporarily_then_catches_up(
    cluster: PrivatePostgres, daemon: DaemonProcess
) -> None:
    plan = Plan(200)
    daemon.import_actions(plan)
    daemon.start()
    db = Db(daemon.database_url)
    acked = send_acked(daemon, [plan.next_file(ch, 10) for ch in ACK])
    until(lambda: all_complete(db, 3), "the first files to be COMPLETE", 30)

    cluster.stop("fast")
    during = [plan.next_file(ch, 10) for ch in ACK]
    replies = {f.channel: send(daemon, f) for f in during if f is not None}
    time.sleep(1.5)  # the worker and the delivery loop meet the outage
    alive = daemon.alive() and daemon.answering()
    health = httpx.get(f"http://{HOST}:{daemon.ports['http']}/healthz", timeout=5).status_code
    spool = daemon.spool_dir
    stray = sorted(p.name for p in (spool / "tmp").iterdir())
    print("\nFAULTS postgres-down " + json.dumps({"replies": replies, "alive": alive}))
    assert alive and health == 200
    assert {ch: code for ch, (code, _) in replies.items()} == {"ftp": 451, "smtp": 451, "http": 503}
    assert stray == [], stray

    cluster.start()
    acked += send_acked(daemon, during)
    until(lambda: all_complete(db, 6), "every acknowledged file to be COMPLETE", CATCH_UP)
    recorded = {Path(r["spool_path"]).name for r in db.files()}
    assert {p.name for p in (spool / "acme").iterdir()} == recorded  # no unrecorded bytes left
    verdict = verify(db, plan, acked)
    assert (verdict.lost, verdict.applied_twice, verdict.wrong_ledger) == ([], [], [])
    assert daemon.stop() == 0


def test_file_in_processing_when_the_database_stops_is_finished_once_it_returns(
    cluster: PrivatePostgres, daemon: DaemonProcess
) -> None:
    plan = Plan(100)
    daemon.import_actions(plan)
    daemon.start()
    db = Db(daemon.database_url)
    acked = send_acked(daemon, [plan.next_file("http", 10, padding=PADDING)])
    until(lambda: db.statuses().get("PROCESSING"), "the big file to be PROCESSING", 60, 0.01)
    cluster.stop("fast")
    time.sleep(1.5)  # the worker meets the outage mid-file
    assert daemon.alive()
    cluster.start()
    acked += send_acked(daemon, [plan.next_file("ftp", 10)])
    try:
        until(lambda: all_complete(db, 2), "both files to be COMPLETE", MID_FILE_CATCH_UP)
    finally:
        print("\nFAULTS postgres-mid-file " + json.dumps(db.statuses()))
    big = next(r for r in db.files() if r["size"] > 1_000_000)
    assert big["attempts"] >= 2, "the database stopped too late: the big file was not interrupted"
    verdict = verify(db, plan, acked)
    assert (verdict.lost, verdict.applied_twice, verdict.wrong_ledger) == ([], [], [])


def test_database_down_503_does_not_reveal_the_database(
    make_settings: Callable[..., Settings],
) -> None:
    keys = Secrets()
    port = free_port()  # nothing listens there: the database is "down"
    settings = make_settings(
        database_url=f"postgresql://returnsd@{HOST}:{port}/returnsd",
        campaigns=[campaign_doc(keys)],
        channels={"http": {"port": 0}},
    )
    store = Store.open(settings)
    channel = HttpApiChannel(ChannelContext(settings, Spool(settings, store), ResultStore(store)))
    channel.start()
    try:
        resp = http_send(int(channel.port), keys.api_token, "r.csv", b"ActionId,Amount,Reason\n")
    finally:
        channel.stop()
        store.dispose()
    assert resp.status_code == 503
    assert str(port) not in resp.text and HOST not in resp.text, resp.text
