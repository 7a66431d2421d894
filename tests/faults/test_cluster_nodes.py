"""Two real nodes over one PostgreSQL: any node takes any file, a killed node's file is finished
by the other, nothing is lost or applied twice, every result is served by every node, and a
scheduled job runs once per period across the nodes.

Two `returnsd run` processes (own ports, own spool and results folders, cluster mode, a 3 s lease)
share a fresh PostgreSQL database. FTP, HTTP and SMTP clients send returns files to both, big ones
among them so that a node is caught PROCESSING one; that node gets SIGKILL. The survivor must
requeue the file once the lease has run out and complete it; more files go to the survivor only.
Then: every acknowledged file COMPLETE exactly once, the ledger what applying each file once
gives, the files received by the dead node read back from the survivor's HTTP API, the killed node
starts again under its own id, and each period of the lock job (every minute) and the owed
retention run ran on exactly one node.
"""

from __future__ import annotations

import json
import os
import re
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import _reset_pg
from tests.faults.helpers import (
    HOST,
    LONG,
    DaemonProcess,
    Db,
    Plan,
    ReturnsFile,
    ftp_send,
    http_send,
    smtp_send,
    until,
    verify,
)

pytestmark = [pytest.mark.timeout(300)]
LEASE = 3.0
FILES_BEFORE, FILES_AFTER = 18, 6
BIG_EVERY, PADDING = 3, 40_000  # every third file is big: a long PROCESSING window
ROUNDS = int(os.environ.get("RETURNSD_CLUSTER_ROUNDS", "20" if LONG else "2"))
PER_ROUND = (6, 2)  # files to both nodes, then to the survivor


def _node(folder: Path, url: str, node_id: str) -> DaemonProcess:
    extra: dict[str, Any] = {
        "cluster": {
            "enabled": True,
            "node_id": node_id,
            "lease_seconds": LEASE,
            "heartbeat_seconds": 0.5,
        },
        "lock_schedule": "* * * * *",
    }
    return DaemonProcess(folder, database_url=url, settings=extra)


def _send(node: DaemonProcess, f: ReturnsFile) -> str | None:
    """Send one file to `node` through its channel; the file id the acknowledgement names."""
    if f.channel == "ftp":
        reply = ftp_send(node.ports["ftp"], node.secrets.ftp_password, f.name, f.data)
        assert reply.startswith("226"), reply
        found = re.search(r"(?:Received as|same bytes as) (\w+)", reply)
        return found.group(1) if found else None
    if f.channel == "http":
        answer = http_send(node.ports["http"], node.secrets.api_token, f.name, f.data)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["file_id"])
    code, text = smtp_send(node.ports["smtp"], f.name, f.data)
    assert code == 250, text
    return None


def _send_round(plan: Plan, nodes: list[DaemonProcess], count: int, acked: list[Any]) -> None:
    channels = ("ftp", "http", "smtp")
    for i in range(count):
        big = i % BIG_EVERY == 0
        f = plan.next_file(channels[i % 3], 8, PADDING if big else 0)
        assert f is not None
        node = nodes[i % len(nodes)]
        acked.append((f, node, _send(node, f)))


def test_two_nodes_one_postgres(tmp_path: Path, pg_database: str) -> None:
    _reset_pg(pg_database)
    a = _node(tmp_path / "a", pg_database, "node-a")
    b = _node(tmp_path / "b", pg_database, "node-b")
    db = Db(pg_database)
    plan = Plan(400)
    acked: list[tuple[ReturnsFile, DaemonProcess, str | None]] = []
    try:
        a.import_actions(plan)
        a.start()
        b.start()
        _send_round(plan, [a, b], FILES_BEFORE, acked)
        held = until(
            lambda: db.query(
                "SELECT id FROM files WHERE status = 'PROCESSING' AND worker = 'node-a'"
            ),
            "node a to hold a file",
            120,
            0.01,
        )
        a.kill9()
        victim = held[0]["id"]
        interrupted = db.query(f"SELECT status FROM files WHERE id = '{victim}'")[0]["status"]
        _send_round(plan, [b], FILES_AFTER, acked)
        until(lambda: not db.query(
            "SELECT id FROM files WHERE status IN ('QUEUED', 'PROCESSING')"
        ), "the queue to drain", 180, 0.2)  # fmt: skip
        verdict = verify(db, plan, [f for f, _, _ in acked])
        assert not verdict.lost and not verdict.applied_twice, verdict
        assert not verdict.wrong_ledger and not verdict.not_finished, verdict
        victim_row = db.query(f"SELECT status, attempts FROM files WHERE id = '{victim}'")[0]
        if interrupted == "PROCESSING":  # node a died with it: node b finished it after the lease
            assert victim_row == {"status": "COMPLETE", "attempts": 2}
        by_node = db.query("SELECT channel, count(*) AS n FROM files GROUP BY channel")
        assert {r["channel"] for r in by_node} == {"ftp", "http", "smtp"}
        _results_from_the_survivor(b, [(f, n, i) for f, n, i in acked if n is a and i])
        _result_mails_once(db, [a, b])
        a.start()  # the killed node rejoins under its own id
        _operators_see_both(a, b)
        _jobs_ran_once(db, [a, b])
        print(
            "\nCLUSTER "
            + json.dumps(
                {
                    "acknowledged": len(acked),
                    "lost": len(verdict.lost),
                    "applied_twice": len(verdict.applied_twice),
                    "failovers": 1 if interrupted == "PROCESSING" else 0,
                    "lease_seconds": LEASE,
                }
            )
        )
    finally:
        for node in (a, b):
            node.stop()


def _results_from_the_survivor(
    survivor: DaemonProcess, received_by_dead: list[tuple[ReturnsFile, DaemonProcess, str | None]]
) -> None:
    """Files the dead node received: their result CSVs, read from the survivor's HTTP API."""
    assert received_by_dead, "node a acknowledged files with ids"
    token = survivor.secrets.api_token
    for f, _, file_id in received_by_dead:
        url = f"http://{HOST}:{survivor.ports['http']}/v1/files/{file_id}/result"
        got = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
        assert got.status_code == 200, (f.name, got.status_code, got.text[:300])
        assert f.changes[0][0].encode() in got.content


def _operators_see_both(a: DaemonProcess, b: DaemonProcess) -> None:
    """`returnsd nodes` lists both nodes alive; each node's /metrics counts the whole cluster."""
    listed = json.loads(b.cli("nodes", "--json").stdout)
    assert {n["id"]: n["alive"] for n in listed} == {"node-a": True, "node-b": True}
    text = b.cli("nodes").stdout
    assert "node-a" in text and "2 of 2 alive" in text
    for node in (a, b):
        got = httpx.get(f"http://{HOST}:{node.ports['http']}/metrics", timeout=15)
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
        assert "returnsd_nodes_alive 2" in got.text
        assert "returnsd_queue_depth 0" in got.text
        assert (
            f'returnsd_files_by_status{{status="COMPLETE"}} {FILES_BEFORE + FILES_AFTER}'
            in got.text
        )


def _result_mails_once(db: Db, nodes: list[DaemonProcess]) -> None:
    """Each file that came by mail got exactly one result mail, from one of the nodes."""
    mailed = [r["id"] for r in db.query("SELECT id FROM files WHERE channel = 'smtp'")]
    until(
        lambda: len(db.query("SELECT id FROM files WHERE delivered_at IS NULL")) == 0,
        "every result to be given back",
        60,
        0.2,
    )
    results: dict[str, int] = {}
    for node in nodes:
        for path in (node.folder / "var" / "outbox").glob("*.eml"):
            msg = message_from_bytes(path.read_bytes())
            if "result for" in str(msg["Subject"]):
                file_id = str(msg["X-Returnsd-File-Id"])
                results[file_id] = results.get(file_id, 0) + 1
    assert results == dict.fromkeys(mailed, 1), results


def _jobs_ran_once(db: Db, nodes: list[DaemonProcess]) -> None:
    """Each (job, period) claimed once, and run exactly as often as it was claimed."""
    first = db.query("SELECT min(claimed_at) AS t FROM job_claims")[0]["t"]
    wait = max(0.0, 65 - (time.time() - first.timestamp()))
    time.sleep(wait)  # at least one more period of the every-minute lock job
    claims = db.query("SELECT job_id, period, node_id FROM job_claims ORDER BY period")
    lock = [c for c in claims if c["job_id"] == "lock"]
    retention = [c for c in claims if c["job_id"] == "retention"]
    assert len(lock) >= 2 and len(retention) == 1, claims
    logs = "".join(n.log() for n in nodes)
    assert logs.count("lock job:") == len(lock), (logs.count("lock job:"), lock)
    assert logs.count("files purged") == 1


@pytest.mark.timeout(300 + 90 * ROUNDS)
def test_kill9_rounds(tmp_path: Path, pg_database: str) -> None:
    """Round after round, the node holding a file is killed and restarted at once."""
    _reset_pg(pg_database)
    a = _node(tmp_path / "a", pg_database, "node-a")
    b = _node(tmp_path / "b", pg_database, "node-b")
    db = Db(pg_database)
    plan = Plan(8 * sum(PER_ROUND) * (ROUNDS + 1))
    acked: list[tuple[ReturnsFile, DaemonProcess, str | None]] = []
    failovers = 0
    try:
        a.import_actions(plan)
        a.start()
        b.start()
        for _ in range(ROUNDS):
            _send_round(plan, [a, b], PER_ROUND[0], acked)
            held = until(
                lambda: db.query("SELECT id, worker FROM files WHERE status = 'PROCESSING'"),
                "a node to hold a file",
                120,
                0.01,
            )
            victim, survivor = (a, b) if held[0]["worker"] == "node-a" else (b, a)
            victim.kill9()
            row = db.query(f"SELECT status FROM files WHERE id = '{held[0]['id']}'")[0]
            failovers += row["status"] == "PROCESSING"
            _send_round(plan, [survivor], PER_ROUND[1], acked)
            victim.start()  # at once: a dead process's node id is free again
        until(lambda: not db.query(
            "SELECT id FROM files WHERE status IN ('QUEUED', 'PROCESSING')"
        ), "the queue to drain", 240, 0.2)  # fmt: skip
        verdict = verify(db, plan, [f for f, _, _ in acked])
        assert not verdict.lost and not verdict.applied_twice, verdict
        assert not verdict.wrong_ledger and not verdict.not_finished, verdict
        print("\nFAULTS cluster-kill9 " + json.dumps({
            "rounds": ROUNDS,
            "acknowledged": len(acked),
            "lost": len(verdict.lost),
            "applied_twice": len(verdict.applied_twice),
            "failovers": failovers,
            "lease_seconds": LEASE,
        }))  # fmt: skip
    finally:
        for node in (a, b):
            node.stop()
