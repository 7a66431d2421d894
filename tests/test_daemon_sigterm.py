"""SIGTERM in the middle of a burst: no acknowledged file is lost, none is applied twice.

The real daemon (`returnsd run`, a child process over its own config and SQLite database; see
bench/common_daemon.py) takes a burst of FTP uploads, API posts and mails (STARTTLS + AUTH) sent
by real clients, each file modifying or reversing actions no other file touches. Once some files
are acknowledged, the daemon gets SIGTERM; it must exit 0. It is started again on the same
config; every client whose upload was refused or cut off retries. In the end every acknowledged
file is COMPLETE exactly once, the ledger is what applying each file once gives (one audit row
per applying line), and no log line holds a password, the API token or an SMTP credential.
"""

from __future__ import annotations

import base64
import ftplib
import hashlib
import json
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bench.common_daemon import (
    RETURNSD,
    Credentials,
    Daemon,
    Ledger,
    Relay,
    ReturnsFile,
    check_applied_once,
    drop,
    file_ids_by_hash,
    ftp_upload,
    http_client,
    http_upload,
    smtp_send,
    wait_until,
)
from tests.conftest import need
from tests.tls import self_signed as _self_signed

pytestmark = [
    pytest.mark.timeout(240),
    # the relay standing in for the outbound MTA takes AUTH in clear text, on 127.0.0.1 only
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

ROWS = 20
COUNTS = {"ftp": 30, "http": 15, "smtp": 10}
STAGGER = 0.04  # seconds between two clients' first attempts: the burst lasts ~2 s
ACKS_BEFORE_SIGTERM = 8
EXIT_BOUND = 60.0  # SIGTERM → exit; the HTTP API alone may wait 10 s for requests in flight
CLIENT_DEADLINE = 120.0
ACK_ID = re.compile(r"(?:Received as|same bytes as) (\w+)")
FINISHED = ("COMPLETE", "FAILED", "DUPLICATE")


class Permanent(Exception):
    """A refusal that retrying cannot fix (FTP/SMTP 5xx, HTTP 4xx): the test fails on it."""


@dataclass
class Job:
    """One file, the client that sends it, and what it was told."""

    file: ReturnsFile
    delay: float
    ack: str | None = None  # the acknowledgement line (226 …, 250 …, 202 {…})
    file_id: str | None = None  # the id the acknowledgement names (SMTP's 250 names none)
    acked_at: float | None = None
    attempts: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def channel(self) -> str:
        """ftp, http or smtp."""
        return self.file.channel

    @property
    def sha256(self) -> str:
        """The content hash returnsd records for the file."""
        return hashlib.sha256(self.file.data).hexdigest()


class Burst:
    """One client thread per job; a client that fails waits until the daemon is up, then retries."""

    def __init__(
        self, daemon: Daemon, creds: Credentials, tls: ssl.SSLContext, jobs: list[Job]
    ) -> None:
        self.daemon = daemon
        self.creds = creds
        self.tls = tls
        self.jobs = jobs
        self.up = threading.Event()
        self.up.set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(j,), daemon=True) for j in jobs]

    def start(self) -> None:
        """Start every client (each waits its `delay` first)."""
        for t in self.threads:
            t.start()

    def acked(self) -> list[Job]:
        """The jobs acknowledged so far."""
        with self.lock:
            return [j for j in self.jobs if j.ack is not None]

    def join(self, timeout: float) -> bool:
        """Wait for every client; False if one is still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _run(self, job: Job) -> None:
        time.sleep(job.delay)
        deadline = time.monotonic() + CLIENT_DEADLINE
        while time.monotonic() < deadline:
            try:
                ack, file_id = self._send(job)
            except Permanent as exc:
                job.error = str(exc)
                return
            except (OSError, EOFError, ftplib.Error, smtplib.SMTPException, httpx.HTTPError) as exc:
                job.attempts.append(f"{type(exc).__name__}: {exc}"[:200])
                time.sleep(0.1)
                self.up.wait(CLIENT_DEADLINE)  # refused while the daemon stops: retry once up
                continue
            with self.lock:
                job.ack, job.file_id, job.acked_at = ack, file_id, time.monotonic()
            return
        job.error = f"no acknowledgement after {CLIENT_DEADLINE} s: {job.attempts[-3:]}"

    def _send(self, job: Job) -> tuple[str, str | None]:
        f, ports = job.file, self.daemon.ports
        if job.channel == "ftp":
            try:
                reply, _ = ftp_upload(ports.ftp, self.creds, f.name, f.data)
            except ftplib.error_perm as exc:
                raise Permanent(f"FTP {exc}") from exc
            found = ACK_ID.search(reply)
            return reply, found.group(1) if found else None
        if job.channel == "http":
            with http_client(ports.http) as client:
                resp = http_upload(client, self.creds, f.name, f.data)
            if resp.status_code >= 500:
                raise httpx.HTTPStatusError("retry", request=resp.request, response=resp)
            if resp.status_code not in (200, 202):
                raise Permanent(f"HTTP {resp.status_code} {resp.text}")
            doc = resp.json()
            return f"{resp.status_code} {resp.text}", doc.get("duplicate_of") or doc["file_id"]
        login = (self.creds.smtp_user, self.creds.smtp_password)
        try:
            reply, _ = smtp_send(ports.smtp, f.name, f.data, login=login, tls=self.tls)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500:
                raise Permanent(f"SMTP {exc.smtp_code} {exc.smtp_error!r}") from exc
            raise
        return reply, None


def _jobs(ledger: Ledger) -> list[Job]:
    """The burst, channels interleaved so that each is in flight when SIGTERM comes."""
    order = [ch for i in range(max(COUNTS.values())) for ch in COUNTS if i < COUNTS[ch]]
    seen: dict[str, int] = {}
    jobs = []
    for k, ch in enumerate(order):
        seen[ch] = seen.get(ch, 0) + 1
        f = ledger.returns_file(f"sigterm_{ch}_{seen[ch]:02d}.csv", ch, ROWS)
        jobs.append(Job(f, k * STAGGER))
    return jobs


def _leaked(text: str, creds: Credentials) -> list[str]:
    """Log lines holding a secret in clear or in the base64 forms SMTP AUTH sends."""
    plain = f"\0{creds.smtp_user}\0{creds.smtp_password}".encode()
    needles = [
        *creds.secrets(),
        base64.b64encode(plain).decode(),
        base64.b64encode(creds.smtp_password.encode()).decode(),
        base64.b64encode(f"\0{creds.relay_user}\0{creds.relay_password}".encode()).decode(),
        base64.b64encode(creds.relay_password.encode()).decode(),
    ]
    return [line for line in text.splitlines() if any(n in line for n in needles)]


@pytest.fixture
def daemon_dir(tmp_path: Path) -> Iterator[Path]:
    """The daemon's folder (the relay certificate lives beside it)."""
    if not RETURNSD.exists():
        need("returnsd", f"{RETURNSD} is not installed (make test installs it)")
    folder = tmp_path / "daemon"
    folder.mkdir()
    yield folder


def test_sigterm_mid_burst_loses_nothing_acknowledged_and_applies_nothing_twice(
    daemon_dir: Path, tmp_path: Path
) -> None:
    creds = Credentials()
    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(cafile=str(cert))
    ledger = Ledger(3000)
    jobs = _jobs(ledger)
    with Relay(login=(creds.relay_user, creds.relay_password)) as relay:
        daemon = Daemon(daemon_dir, relay, creds, smtp_tls=(cert, key), relay_auth=True)
        try:
            daemon.prepare(ledger)
            daemon.start()
            burst = Burst(daemon, creds, tls, jobs)
            burst.start()
            assert wait_until(lambda: len(burst.acked()) >= ACKS_BEFORE_SIGTERM, 60), [
                j.attempts for j in jobs
            ]
            burst.up.clear()  # from now on a failed client waits for the restart
            signalled = time.monotonic()
            daemon.terminate()
            code = daemon.wait_exit(EXIT_BOUND)
            assert code == 0, f"exit {code} after SIGTERM: {daemon.log_text()[-3000:]}"
            acked_by_first_run = len(burst.acked())

            daemon.start()
            burst.up.set()
            assert burst.join(CLIENT_DEADLINE + 30), "a client is still sending"
            errors = {j.file.name: j.error for j in jobs if j.error}
            assert not errors, errors
            assert any(j.acked_at and j.acked_at > signalled for j in jobs), "burst ended early"
            assert acked_by_first_run < len(jobs), "every file was acknowledged before SIGTERM"

            acked = burst.acked()
            assert len(acked) == len(jobs)
            assert wait_until(lambda: _all_finished(daemon, acked), 90, 0.1), _states(daemon)
            _assert_each_complete_once(daemon, acked)
            _assert_smtp_results_mailed(relay, [j for j in acked if j.channel == "smtp"])

            daemon.terminate()
            assert daemon.wait_exit(EXIT_BOUND) == 0
        finally:
            daemon.kill()
    leaks = _leaked(daemon.log_text(), creds)
    assert not leaks, leaks[:5]
    config = daemon.config.read_text()
    assert not [s for s in creds.secrets() if s in config], "a secret in clear in config.yaml"
    assert relay.logins and set(relay.logins) == {"ok"}  # replies went through relay AUTH


def test_sigterm_with_a_backlog_finishes_only_the_file_in_hand(daemon_dir: Path) -> None:
    creds = Credentials()
    ledger = Ledger(7000)
    jobs = [
        Job(ledger.returns_file(f"backlog_{i:02d}.csv", "dropdir", 200), 0.0) for i in range(30)
    ]
    with Relay() as relay:
        daemon = Daemon(daemon_dir, relay, creds)
        try:
            daemon.prepare(ledger)
            daemon.drop_folder.mkdir(parents=True)  # the backlog is there before the start
            for job in jobs:
                drop(daemon, job.file.name, job.file.data)
                job.ack = "renamed into the drop folder"
            daemon.start()
            assert wait_until(lambda: len(daemon.files()) == len(jobs), 60), _states(daemon)
            signalled = time.monotonic()
            daemon.terminate()
            assert daemon.wait_exit(EXIT_BOUND) == 0
            stop_seconds = time.monotonic() - signalled
            after_signal = daemon.stderr_path(1).read_text().split("signal 15")[1]
            processed_after_signal = after_signal.count("event=processed")
            queued_at_exit = [r["name"] for r in daemon.files() if r["status"] == "QUEUED"]

            daemon.start()  # the rest of the backlog is still spooled: nothing is lost
            assert wait_until(lambda: _all_finished(daemon, jobs), 90, 0.1), _states(daemon)
            _assert_each_complete_once(daemon, jobs)
            daemon.terminate()
            assert daemon.wait_exit(EXIT_BOUND) == 0
        finally:
            daemon.kill()
    assert processed_after_signal <= 1, (
        f"{processed_after_signal} files processed after SIGTERM, exit "
        f"{stop_seconds:.1f} s after it; still queued at exit: {queued_at_exit}"
    )


def _all_finished(daemon: Daemon, acked: list[Job]) -> bool:
    by_hash = file_ids_by_hash(daemon)
    return all(any(r["status"] in FINISHED for r in by_hash.get(j.sha256, [])) for j in acked)


def _states(daemon: Daemon) -> list[tuple[str, str, str]]:
    return [(r["id"], r["name"], r["status"]) for r in daemon.files()]


def _assert_each_complete_once(daemon: Daemon, acked: list[Job]) -> None:
    """Each file: one COMPLETE record (any other copy a DUPLICATE of it), processed once, applied
    once line by line; the ledger as applying each file once gives."""
    by_hash = file_ids_by_hash(daemon)
    processed = re.findall(r"event=processed file_id=(\w+)", daemon.log_text())
    applied: dict[str, ReturnsFile] = {}
    for job in acked:
        rows = by_hash.get(job.sha256, [])
        done = [r for r in rows if r["status"] == "COMPLETE"]
        assert len(done) == 1, (job.file.name, job.ack, rows)
        fid = done[0]["id"]
        others = [r for r in rows if r["id"] != fid]
        assert all(r["status"] == "DUPLICATE" and r["duplicate_of"] == fid for r in others), rows
        assert job.file_id in (None, fid), (job.file.name, job.ack, fid)
        counts = json.loads(done[0]["counts"])
        assert counts["applied"] == len(job.file.changes) and counts["errors"] == 0, (
            job.file.name,
            counts,
        )
        assert processed.count(fid) == 1, (job.file.name, fid, processed.count(fid))
        applied[fid] = job.file
    duplicated, wrong = check_applied_once(daemon, applied)
    assert not duplicated, duplicated[:10]
    assert not wrong, wrong[:10]
    with daemon.database() as conn:
        total = conn.execute("SELECT count(*) FROM audit").fetchone()[0]
    assert total == sum(len(j.file.changes) for j in acked)  # and nothing else was touched


def _assert_smtp_results_mailed(relay: Relay, acked: list[Job]) -> None:
    for job in acked:
        assert relay.collector.wait_result(job.file.result_name, 30), job.file.name
