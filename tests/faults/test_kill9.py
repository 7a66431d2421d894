"""kill -9 rounds: files stream in through FTP, SMTP and HTTP while the daemon is killed, restarted.

Client threads (ftplib, smtplib, httpx) send returns files without pause; each file changes actions
no other file touches. The daemon (`returnsd run`, a child process on SQLite) is killed with
SIGKILL at a random moment — every other round right while a file is PROCESSING — and started
again, ROUNDS times. A client whose send was not acknowledged (no 226 / 250 / 202, a 4xx, a reset
connection) sends the same bytes again once the daemon is back. At the end the queue must drain
and: every acknowledged file is COMPLETE exactly once (none lost; the same bytes never COMPLETE
twice), the acknowledgement names that file, each (action, file) pair has at most one audit row
and no action was changed by two files, and the ledger is the union of the acknowledged files.
Short form: 3 rounds; `RETURNSD_LONG=1`: 25 rounds (`RETURNSD_KILL9_ROUNDS` overrides both).
"""

from __future__ import annotations

import ftplib
import json
import os
import random
import re
import smtplib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import need
from tests.faults.helpers import (
    LONG,
    RETURNSD,
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

ROUNDS = int(os.environ.get("RETURNSD_KILL9_ROUNDS", "25" if LONG else "3"))
CLIENTS = {"ftp": 2, "http": 2, "smtp": 2}  # threads per channel
ROWS, BIG_ROWS, BIG_EVERY = 8, 250, 9  # every BIG_EVERY-th file is big: a longer PROCESSING window
PAUSE = 0.15  # at most this long between two files of one client
RUN_SECONDS = (0.3, 2.0)  # how long the daemon lives in a round (uniform)
CLIENT_DEADLINE = 240.0
SEED = int(os.environ.get("RETURNSD_FAULTS_SEED", str(random.randrange(1 << 30))))
ACK_ID = re.compile(r"(?:Received as|same bytes as) (\w+)")

pytestmark = [pytest.mark.timeout(1800 if LONG else 240)]


class Permanent(Exception):
    """A refusal retrying cannot fix (FTP/SMTP 5xx, HTTP 4xx): the test fails on it."""


@dataclass
class Sent:
    """One file and what its client was told."""

    file: ReturnsFile
    ack: str | None = None
    ack_id: str | None = None  # the file id the acknowledgement names (SMTP names none)
    tries: int = 0
    error: str | None = None


@dataclass
class Traffic:
    """The client threads, and every file they sent."""

    daemon: DaemonProcess
    plan: Plan
    up: threading.Event = field(default_factory=threading.Event)
    enough: threading.Event = field(default_factory=threading.Event)
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        """One thread per client; each sends files until `enough` is set."""
        for channel, n in CLIENTS.items():
            for k in range(n):
                rng = random.Random(f"{SEED}-{channel}-{k}")
                t = threading.Thread(target=self._client, args=(channel, rng), daemon=True)
                self.threads.append(t)
                t.start()

    def acked(self) -> list[Sent]:
        """The files acknowledged so far."""
        with self.lock:
            return [s for s in self.sent if s.ack is not None]

    def join(self, timeout: float) -> bool:
        """Wait for every client to finish its last file; False if one is still busy."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _client(self, channel: str, rng: random.Random) -> None:
        while not self.enough.is_set():
            big = rng.randrange(BIG_EVERY) == 0
            f = self.plan.next_file(channel, BIG_ROWS if big else ROWS)
            if f is None:
                return
            sent = Sent(f)
            with self.lock:
                self.sent.append(sent)
            self._deliver(sent)
            time.sleep(rng.uniform(0, PAUSE))

    def _deliver(self, sent: Sent) -> None:
        deadline = time.monotonic() + CLIENT_DEADLINE
        while time.monotonic() < deadline:
            self.up.wait(CLIENT_DEADLINE)
            sent.tries += 1
            try:
                ack, ack_id = self._send(sent.file)
            except Permanent as exc:
                sent.error = str(exc)
                return
            except (OSError, EOFError, ftplib.Error, smtplib.SMTPException, httpx.HTTPError):
                time.sleep(0.05)
                continue
            if ack is not None:
                with self.lock:
                    sent.ack, sent.ack_id = ack, ack_id
                return
            time.sleep(0.05)
        sent.error = f"no acknowledgement in {CLIENT_DEADLINE:g} s after {sent.tries} tries"

    def _send(self, f: ReturnsFile) -> tuple[str | None, str | None]:
        """(acknowledgement, file id) — (None, None) for a temporary refusal."""
        d = self.daemon
        if f.channel == "ftp":
            try:
                reply = ftp_send(d.ports["ftp"], d.secrets.ftp_password, f.name, f.data)
            except ftplib.error_perm as exc:
                raise Permanent(f"FTP {exc}") from exc
            if not reply.startswith("226"):
                raise Permanent(f"FTP {reply}")
            found = ACK_ID.search(reply)
            return reply, found.group(1) if found else None
        if f.channel == "smtp":
            code, text = smtp_send(d.ports["smtp"], f.name, f.data)
            if code >= 500:
                raise Permanent(f"SMTP {code} {text}")
            return (f"{code} {text}", None) if code == 250 else (None, None)
        resp = http_send(d.ports["http"], d.secrets.api_token, f.name, f.data)
        if resp.status_code in (200, 202):
            doc = resp.json()
            return f"{resp.status_code} {resp.text}", doc.get("duplicate_of") or doc["file_id"]
        if resp.status_code >= 500:
            return None, None
        raise Permanent(f"HTTP {resp.status_code} {resp.text}")


def processing_now(db_path: Path) -> bool:
    """True while some file is PROCESSING (a WAL reader never blocks the daemon)."""
    try:
        with sqlite3.connect(db_path, timeout=0.5) as conn:
            row = conn.execute("SELECT 1 FROM files WHERE status = 'PROCESSING' LIMIT 1").fetchone()
    except sqlite3.Error:
        return False
    return row is not None


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """The daemon's folder and config, its actions imported; killed at the end whatever happens."""
    if not RETURNSD.exists():
        need("returnsd", f"{RETURNSD} is not installed (make test installs it)")
    d = DaemonProcess(tmp_path / "d", settings={"max_attempts": 1000})
    yield d
    d.stop()


def test_kill_9_rounds_lose_nothing_acknowledged_and_apply_nothing_twice(
    daemon: DaemonProcess,
) -> None:
    rng = random.Random(SEED)
    plan = Plan(40_000 if LONG else 6_000)
    daemon.import_actions(plan)
    db_path = daemon.folder / "returnsd.db"
    db = Db(daemon.database_url)
    traffic = Traffic(daemon, plan)
    traffic.start()
    figures: dict[str, object] = {"seed": SEED, "rounds": ROUNDS}
    interrupted = 0
    acked_at_kill = []
    try:
        for r in range(ROUNDS):
            daemon.start()
            traffic.up.set()
            if r % 2:  # let traffic flow, wait for a file in PROCESSING, kill within milliseconds
                time.sleep(rng.uniform(RUN_SECONDS[0], RUN_SECONDS[1] / 2))
                deadline = time.monotonic() + RUN_SECONDS[1]
                while not processing_now(db_path) and time.monotonic() < deadline:
                    time.sleep(0.003)
                time.sleep(rng.uniform(0, 0.02))
            else:
                time.sleep(rng.uniform(*RUN_SECONDS))
            traffic.up.clear()
            daemon.kill9()
            acked_at_kill.append(len(traffic.acked()))
            interrupted += db.statuses().get("PROCESSING", 0)
        figures["rounds_survived"] = ROUNDS
        daemon.start()
        traffic.up.set()
        time.sleep(1.0)
        traffic.enough.set()
        assert traffic.join(CLIENT_DEADLINE), "a client never got its file acknowledged"
        until(
            lambda: set(db.statuses()) <= {"COMPLETE", "DUPLICATE", "FAILED"},
            "the queue to drain",
            120,
        )
        assert daemon.stop() == 0, daemon.log()[-3000:]
    finally:
        traffic.up.set()
        traffic.enough.set()

    errors = [f"{s.file.name}: {s.error}" for s in traffic.sent if s.error]
    assert not errors, errors
    acked = traffic.acked()
    verdict = verify(db, plan, [s.file for s in acked])
    complete = {r["sha256"]: r["id"] for r in db.files() if r["status"] == "COMPLETE"}
    wrong_ack = [
        f"{s.file.name}: acknowledged as {s.ack_id}, COMPLETE as {complete.get(s.file.sha256)}"
        for s in acked
        if s.ack_id is not None and complete.get(s.file.sha256) != s.ack_id
    ]
    spool = daemon.spool_dir
    known = {Path(r["spool_path"]).name for r in db.files() if r["spool_path"]}
    figures.update(
        files_acknowledged=len(acked),
        by_channel={ch: sum(s.file.channel == ch for s in acked) for ch in CLIENTS},
        resent=sum(s.tries > 1 for s in acked),
        acked_before_each_kill=acked_at_kill,
        kills_while_processing=interrupted,
        statuses=db.statuses(),
        lost=len(verdict.lost),
        applied_twice=len(verdict.applied_twice),
        wrong_ledger=len(verdict.wrong_ledger),
        wrong_ack=len(wrong_ack),
        # crash leftovers, never acknowledged (see test_crash_leftovers.py): disk space only
        stray_spool_part_files=len(list((spool / "tmp").iterdir())),
        unrecorded_spool_files=sum(p.name not in known for p in (spool / "acme").iterdir()),
        ftp_home_leftovers=sorted(
            p.name for p in (daemon.folder / "ftp" / "acme").iterdir() if p.name != "results"
        ),
    )
    print("\nFAULTS kill9 " + json.dumps(figures))
    assert len(acked) == len(traffic.sent) > ROUNDS
    assert verdict.lost == [], verdict.lost
    assert verdict.applied_twice == [], verdict.applied_twice
    assert verdict.not_finished == [], verdict.not_finished
    assert wrong_ack == [], wrong_ack
    assert verdict.wrong_ledger == [], verdict.wrong_ledger[:20]
    assert "FAILED" not in db.statuses(), [r for r in db.files() if r["status"] == "FAILED"]
    assert figures["ftp_home_leftovers"] == []
