"""kill -9 while a large file is ingested, then the same command: same ledger as no crash."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROWS = 60_000
CONFIG = """
database_url: sqlite:///{db}
spool_dir: spool
results_dir: results
limits: {{max_rows: 1000000}}
campaigns:
  - id: big
    name: Big
    currency: USD
    timezone: UTC
    event_types:
      - {{id: 7001, name: Sale, kind: sale, payout: {{type: percent, value: "12.5"}},
         locking: {{days: 27}}}}
"""


def returnsd(*args: str, cwd: Path) -> subprocess.Popen[bytes]:
    """Start the real CLI in a child process."""
    cmd = [sys.executable, "-m", "returnsd", "--config", str(cwd / "config.yaml"), *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def setup_folder(folder: Path, name: str) -> Path:
    """A folder with a config, ROWS actions imported and a returns file touching each once."""
    folder.mkdir()
    (folder / "config.yaml").write_text(CONFIG.format(db=folder / f"{name}.db"))
    when = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    rng = random.Random(42)
    lines = [
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,"
        "Payout,CustomerStatus"
    ]
    lines += [
        f"B{i:07d},big,7001,O{i},P1,{when},{100 + i % 900}.00,USD,1.00,NEW" for i in range(ROWS)
    ]
    (folder / "actions.csv").write_text("\n".join(lines) + "\n")
    order = list(range(ROWS))
    rng.shuffle(order)
    ret = ["ActionId,Amount,Reason"]
    ret += [f"B{i:07d},{'0' if i % 3 == 0 else f'{i % 500}.25'},ITEM_RETURNED" for i in order]
    (folder / "returns.csv").write_text("\n".join(ret) + "\n")
    proc = returnsd("actions", "import", "actions.csv", cwd=folder)
    assert proc.wait(timeout=300) == 0, proc.stderr.read() if proc.stderr else ""
    return folder / f"{name}.db"


def ledger(db: Path) -> tuple[list[tuple[object, ...]], int]:
    """Every action's values and the number of audit rows."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT id, amount, payout, state, mod_count FROM actions ORDER BY id"
        ).fetchall()
        audit = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    return rows, audit


def file_status(db: Path) -> str | None:
    """Status of the (only) received file, or None before it is recorded."""
    try:
        with sqlite3.connect(db, timeout=0.2) as conn:
            row = conn.execute("SELECT status FROM files").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


@pytest.mark.slow
def test_kill_9_mid_ingest_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    clean_db = setup_folder(tmp_path / "clean", "clean")
    proc = returnsd("ingest", "returns.csv", "--campaign", "big", "--json", cwd=tmp_path / "clean")
    out, _ = proc.communicate(timeout=600)
    assert json.loads(out)["counts"]["applied"] == ROWS

    crash = tmp_path / "crash"
    crash_db = setup_folder(crash, "crash")
    victim = returnsd("ingest", "returns.csv", "--campaign", "big", "--json", cwd=crash)
    deadline = time.monotonic() + 120
    while file_status(crash_db) != "PROCESSING":
        assert victim.poll() is None, "ingest ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(random.uniform(0.0, 0.3))
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert file_status(crash_db) == "PROCESSING", "the kill came too late to interrupt anything"
    # Nothing of the interrupted run may be visible.
    assert ledger(crash_db)[1] == 0

    again = returnsd("ingest", "returns.csv", "--campaign", "big", "--json", cwd=crash)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    doc = json.loads(out)
    assert doc["status"] == "COMPLETE" and doc["counts"]["applied"] == ROWS
    assert ledger(crash_db) == ledger(clean_db)
