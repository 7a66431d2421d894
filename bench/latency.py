"""Latency from the end of an upload to its result, per channel, then a mixed burst; real daemon.

    .venv/bin/python bench/latency.py [--files K] [--json] [--keep]

Starts `returnsd run` as a child process over a fresh folder (SQLite, every channel on a free
127.0.0.1 port, drop folder with `stable_seconds: 0.2`, an in-process SMTP relay collecting the
result mails; see bench/common_daemon.py), with a ledger of PENDING sales dated yesterday.

Latency: K files (default 20) of 100 rows through each channel, one after the other; every row
modifies or reverses an action no other file touches, so no file is a DUPLICATE. The clock starts
at the end of the upload as the sender sees it and stops when the result is there for the sender:

| channel | end of upload | result available |
|---|---|---|
| FTP | 226 after STOR (ftplib) | `results/result_<name>_<id>.csv` in the FTP home (polled, 5 ms) |
| SMTP | 250 after DATA (smtplib) | the result mail reaches the relay |
| HTTP | 202 (httpx) | `GET /v1/files/{id}/result` answers 200 (polled every 10 ms) |
| drop folder | `os.rename` into the campaign folder | `results/result_<name>_<id>.csv` exists |

Burst: 50 FTP uploads, 20 mails and 20 API posts released at once (one thread each); a client
refused for a temporary reason (FTP 4xx, SMTP 4xx, HTTP 503, connection refused) retries after a
short pause, as a sender would. Then the database is checked: every acknowledged file COMPLETE
with all 100 lines applied (else lost), no file applied twice (a second non-DUPLICATE record of
the same bytes, or an action with more than one audit row), the ledger equal to applying each
file once. The daemon is stopped with SIGTERM and must exit 0.

Prints JSON: {channels: {ftp|smtp|http|dropdir: {p50_ms, p95_ms, max_ms, n}}, burst: {sent,
acknowledged, processed, lost, duplicated, seconds, retries, ledger_ok}, target_p95_ms: 1000,
daemon_exit_code}. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ftplib
import hashlib
import json
import re
import smtplib
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script, bench/ingest.py would shadow the package

from bench.common_daemon import (  # noqa: E402 - after the sys.path fix on purpose
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

ROWS = 100
RESULT_TIMEOUT = 60.0
BURST = {"ftp": 50, "smtp": 20, "http": 20}
BURST_TIMEOUT = 300.0
TARGET_P95_MS = 1000
FINISHED = ("COMPLETE", "FAILED", "DUPLICATE")
ACK_ID = re.compile(r"(?:Received as|same bytes as) (\w+)")
_started = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the result."""
    print(f"[{time.perf_counter() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), linear between closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(latencies: list[float]) -> dict[str, Any]:
    """p50, p95 and max in milliseconds, and how many files were measured."""
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None, "n": 0}
    ms = [x * 1000 for x in latencies]
    return {
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "max_ms": round(max(ms), 1),
        "n": len(ms),
    }


def poll(check: Callable[[], bool], interval: float, what: str) -> float:
    """Poll until `check` holds; return the moment it did (perf_counter)."""
    if not wait_until(check, RESULT_TIMEOUT, interval):
        raise TimeoutError(f"no result for {what} after {RESULT_TIMEOUT:.0f} s")
    return time.perf_counter()


class Latency:
    """One file at a time through each channel; seconds from end of upload to result."""

    def __init__(self, daemon: Daemon, relay: Relay, creds: Credentials, ledger: Ledger) -> None:
        self.daemon = daemon
        self.relay = relay
        self.creds = creds
        self.ledger = ledger

    def run(self, channel: str, k: int) -> list[float]:
        """Send `k` files through `channel`, one after the other."""
        measure = getattr(self, channel)
        out = []
        for i in range(k):
            f = self.ledger.returns_file(f"lat_{channel}_{i:03d}.csv", channel, ROWS)
            out.append(measure(f))
        log(f"{channel}: {k} files, p50 {percentile(out, 50) * 1000:.0f} ms")
        return out

    def ftp(self, f: ReturnsFile) -> float:
        """226 → results/result_<name>_<file id>.csv in the FTP home."""
        _, end = ftp_upload(self.daemon.ports.ftp, self.creds, f.name, f.data)
        return poll(lambda: f.result_in(self.daemon.ftp_results) is not None, 0.005, f.name) - end

    def smtp(self, f: ReturnsFile) -> float:
        """250 after DATA → the result mail at the relay."""
        _, end = smtp_send(self.daemon.ports.smtp, f.name, f.data)
        mail = self.relay.collector.wait_result(f.result_name, RESULT_TIMEOUT)
        if mail is None:
            raise TimeoutError(f"no result mail for {f.name}")
        return mail.at - end

    def http(self, f: ReturnsFile) -> float:
        """202 → GET /v1/files/{id}/result answers 200."""
        auth = {"Authorization": f"Bearer {self.creds.api_token}"}
        with http_client(self.daemon.ports.http) as client:
            resp = http_upload(client, self.creds, f.name, f.data)
            end = time.perf_counter()
            if resp.status_code != 202:
                raise RuntimeError(f"upload of {f.name}: {resp.status_code} {resp.text}")
            url = f"/v1/files/{resp.json()['file_id']}/result"
            seen = poll(lambda: client.get(url, headers=auth).status_code == 200, 0.01, f.name)
        return seen - end

    def dropdir(self, f: ReturnsFile) -> float:
        """rename into the folder → results/result_<name>_<file id>.csv."""
        folder = self.daemon.drop_folder / "results"
        end = drop(self.daemon, f.name, f.data)
        return poll(lambda: f.result_in(folder) is not None, 0.005, f.name) - end


@dataclass
class Job:
    """One burst upload and what became of it."""

    channel: str
    file: ReturnsFile
    acked: bool = False
    file_id: str | None = None  # from the acknowledgement (SMTP's 250 names none)
    retries: int = 0
    error: str | None = None
    retry_causes: list[str] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        """The content hash returnsd records."""
        return hashlib.sha256(self.file.data).hexdigest()


class Burst:
    """Every upload at once, then a check of what the daemon made of them."""

    def __init__(self, daemon: Daemon, creds: Credentials, ledger: Ledger) -> None:
        self.daemon = daemon
        self.creds = creds
        self.jobs = [
            Job(ch, ledger.returns_file(f"burst_{ch}_{i:03d}.csv", ch, ROWS))
            for ch, n in BURST.items()
            for i in range(n)
        ]
        self.gate = threading.Barrier(len(self.jobs) + 1)

    def run(self) -> dict[str, Any]:
        """Release every upload, wait for the acked ones to finish, count."""
        threads = [threading.Thread(target=self._send, args=(j,)) for j in self.jobs]
        for t in threads:
            t.start()
        self.gate.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
        acked = [j for j in self.jobs if j.acked]
        took = time.perf_counter() - started
        log(f"burst: {len(acked)}/{len(self.jobs)} acknowledged in {took:.1f} s")
        causes = Counter(c for j in self.jobs for c in j.retry_causes)
        for cause, n in causes.most_common():
            log(f"burst: retried {n}× after {cause}")
        for j in self.jobs:
            if j.error:
                log(f"burst: {j.file.name} not acknowledged: {j.error}")
        wait_until(lambda: self._all_finished(acked), BURST_TIMEOUT, 0.05)
        seconds = time.perf_counter() - started
        return {**self._verdict(acked), "seconds": round(seconds, 2)}

    def _send(self, job: Job) -> None:
        self.gate.wait()
        for _ in range(50):
            try:
                self._once(job)
                return
            except (OSError, EOFError, ftplib.error_temp, smtplib.SMTPException, _Busy) as exc:
                if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 500:
                    job.error = repr(exc)
                    return
                job.retries += 1
                job.error = repr(exc)
                job.retry_causes.append(f"{job.channel}: {_cause(exc)}")
                time.sleep(0.2)
            except Exception as exc:  # noqa: BLE001 - a refusal: report it, do not retry
                job.error = repr(exc)
                return

    def _once(self, job: Job) -> None:
        f = job.file
        if job.channel == "ftp":
            reply, _ = ftp_upload(self.daemon.ports.ftp, self.creds, f.name, f.data)
            found = ACK_ID.search(reply)
            job.file_id = found.group(1) if found else None
        elif job.channel == "smtp":
            smtp_send(self.daemon.ports.smtp, f.name, f.data)
        else:
            with http_client(self.daemon.ports.http) as client:
                resp = http_upload(client, self.creds, f.name, f.data)
            if resp.status_code in (502, 503, 504):
                raise _Busy(f"{resp.status_code} {resp.text}")
            if resp.status_code not in (200, 202):
                raise RuntimeError(f"{resp.status_code} {resp.text}")
            doc = resp.json()
            job.file_id = doc.get("duplicate_of") or doc["file_id"]
        job.acked, job.error = True, None

    def _all_finished(self, acked: list[Job]) -> bool:
        by_hash = file_ids_by_hash(self.daemon)
        return all(any(r["status"] in FINISHED for r in by_hash.get(j.sha256, [])) for j in acked)

    def _verdict(self, acked: list[Job]) -> dict[str, Any]:
        by_hash = file_ids_by_hash(self.daemon)
        applied: dict[str, ReturnsFile] = {}
        processed = twice = 0
        for job in acked:
            rows = [r for r in by_hash.get(job.sha256, []) if r["status"] != "DUPLICATE"]
            done = [r for r in rows if r["status"] == "COMPLETE"]
            if len(rows) > 1:
                twice += 1
            counts = json.loads(done[0]["counts"] or "{}") if done else {}
            ok = len(done) == 1 and counts.get("applied") == ROWS
            ok = ok and job.file_id in (None, done[0]["id"])
            if ok:
                processed += 1
                applied[done[0]["id"]] = job.file
            else:
                log(f"burst: {job.file.name} ({job.file_id}) not processed: {rows}")
        duplicated_actions, wrong = check_applied_once(self.daemon, applied)
        owner = {c.action_id: f.name for f in applied.values() for c in f.changes}
        twice_by_audit = {owner[a] for a in duplicated_actions}
        for line in wrong[:10]:
            log(f"burst: ledger differs: {line}")
        return {
            "sent": len(self.jobs),
            "acknowledged": len(acked),
            "processed": processed,
            "lost": len(acked) - processed,
            "duplicated": max(twice, len(twice_by_audit)),
            "retries": sum(j.retries for j in self.jobs),
            "ledger_ok": not wrong,
        }


def _cause(exc: BaseException) -> str:
    """A short, groupable description of why an upload was retried."""
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code}"
    if isinstance(exc, ftplib.Error):
        return f"FTP {str(exc)[:3]}"
    if isinstance(exc, _Busy):
        code = re.search(r'"code":\s*"([A-Z_]+)"', str(exc))
        return f"HTTP {str(exc)[:3]}" + (f" {code.group(1)}" if code else "")
    return type(exc).__name__


class _Busy(Exception):
    """The server asked to retry later (HTTP 503)."""


def main(argv: list[str] | None = None) -> int:
    """Run the latency and burst measurements; print the result."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20, help="files per channel (default 20)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="returnsd-latency-"))
    creds = Credentials()
    ledger = Ledger(4 * args.files * ROWS + sum(BURST.values()) * ROWS + 100)
    with Relay() as relay:
        daemon = Daemon(folder, relay, creds)
        log(f"folder {folder}: importing {ledger.count} actions")
        daemon.prepare(ledger)
        daemon.start()
        ports = daemon.ports
        log(f"daemon up: ftp {ports.ftp}, smtp {ports.smtp}, http {ports.http}")
        try:
            result = measure(daemon, relay, creds, ledger, args.files)
        finally:
            daemon.terminate()
            code = daemon.wait_exit(90)
            if code is None:
                log("daemon did not exit within 90 s of SIGTERM; killing it")
                daemon.kill()
        result["daemon_exit_code"] = code
        log(f"daemon exited with {code}")
    _print(result, args.json)
    if not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    else:
        log(f"kept {folder}")
    return 0 if code == 0 else 1


def measure(
    daemon: Daemon, relay: Relay, creds: Credentials, ledger: Ledger, k: int
) -> dict[str, Any]:
    """The latency runs, then the burst."""
    lat = Latency(daemon, relay, creds, ledger)
    channels = {ch: summary(lat.run(ch, k)) for ch in ("ftp", "smtp", "http", "dropdir")}
    burst = Burst(daemon, creds, ledger).run()
    return {"channels": channels, "burst": burst, "target_p95_ms": TARGET_P95_MS}


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'channel':<9} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'n':>4}")
    for ch, s in result["channels"].items():
        print(f"{ch:<9} {s['p50_ms']:>8} {s['p95_ms']:>8} {s['max_ms']:>8} {s['n']:>4}")
    print(f"target p95: {result['target_p95_ms']} ms")
    print("burst: " + ", ".join(f"{k}={v}" for k, v in result["burst"].items()))
    print(f"daemon exit code after SIGTERM: {result['daemon_exit_code']}")


if __name__ == "__main__":
    sys.exit(main())
