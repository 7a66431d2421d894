"""The real daemon as a child process, the advertiser's clients, and what the database says.

`DaemonProcess` writes a config.yaml into a folder (one campaign `acme` with an FTP login, a mail
address and an API token; FTP, SMTP and HTTP on free 127.0.0.1 ports; SQLite in the folder unless
a database URL is given), imports the actions of a `Plan` with `returnsd actions import`, and
starts `returnsd run`, returning once every port answers. A `Plan` hands out returns files that
each change actions no other file touches, so the ledger every acknowledged file should leave is
simply the union of their rows. `Db` reads the files, audit and actions tables (SQLite or
PostgreSQL) while the daemon runs or after it died, and `verify` judges them. `PrivatePostgres` is
a throw-away cluster that a test may stop (never the shared server on 5432); `FreezingProxy` is a
TCP relay that freezes transfers mid-way.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import Engine, create_engine, text

from ingest.passwords import hash_password
from tests.stall_proxy import FreezingProxy

ROOT = Path(__file__).resolve().parents[2]
RETURNSD = ROOT / ".venv" / "bin" / "returnsd"
HOST = "127.0.0.1"
CAMPAIGN = "acme"
TRACKER = 501  # a sale paying 10 % of the amount, locking 27 days after the event
FTP_LOGIN = "acme-ftp"
ADDRESS = "returns@acme.test"
SENDER = "ops@advertiser.test"
LONG = os.environ.get("RETURNSD_LONG", "") not in ("", "0")
FINISHED = ("COMPLETE", "FAILED", "DUPLICATE")
T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, below the ephemeral range.

    A daemon restarted on the same ports must find them free: outside the kernel's ephemeral range
    no client socket can be holding one (or self-connect to it) while the daemon is down.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10_000, max(low, 10_001))
        with contextlib.closing(socket.socket()) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    with contextlib.closing(socket.socket()) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def accepts(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def until(check: Callable[[], T | None], what: str, seconds: float, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; AssertionError naming `what` at the end."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(interval)


# --- the files and the ledger they should leave


def payout(cents: int) -> int:
    """10 % of an amount in cents, half-up to the cent."""
    return (cents + 5) // 10


def money(cents: int) -> str:
    """Cents as a decimal amount with two places."""
    return f"{cents // 100}.{cents % 100:02d}"


@dataclass(frozen=True)
class ReturnsFile:
    """A returns file (unique name and bytes): new amount in cents per action, 0 = reversal."""

    name: str
    channel: str
    changes: tuple[tuple[str, int], ...]
    padding: int = 0  # extra rows naming actions that do not exist (ACTION_NOT_FOUND): bulk

    @property
    def data(self) -> bytes:
        """The CSV bytes (CRLF line ends)."""
        rows = ["ActionId,Amount,Reason"]
        rows += [
            f"{a},{money(c)},{'CONS_FRAUD' if c == 0 else 'ITEM_RETURNED'}" for a, c in self.changes
        ]
        rows += [f"NO-SUCH-{i:08d},1.00,ITEM_RETURNED" for i in range(self.padding)]
        return ("\r\n".join(rows) + "\r\n").encode()

    @property
    def sha256(self) -> str:
        """The content hash the spool records."""
        return hashlib.sha256(self.data).hexdigest()


class Plan:
    """The actions to import, and returns files over actions that no earlier file touched."""

    def __init__(self, actions: int, prefix: str = "K") -> None:
        self.ids = [f"{prefix}{i:07d}" for i in range(actions)]
        self.start = {aid: 5_000 + (i * 37) % 45_000 for i, aid in enumerate(self.ids)}
        self.files: list[ReturnsFile] = []
        self._next = 0
        self._lock = threading.Lock()

    def write_actions(self, path: Path) -> Path:
        """The `actions import` CSV: every action a PENDING sale of yesterday."""
        when = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds")
        lines = [
            "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,"
            "Payout,CustomerStatus"
        ]
        lines += [
            f"{a},{CAMPAIGN},{TRACKER},O-{a},P1,{when},{money(c)},USD,{money(payout(c))},NEW"
            for a, c in self.start.items()
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def next_file(self, channel: str, rows: int, padding: int = 0) -> ReturnsFile | None:
        """A file of `rows` changes (every fifth a reversal), or None once the actions run out."""
        with self._lock:
            first = self._next
            if first + rows > len(self.ids):
                return None
            self._next += rows
            number = len(self.files) + 1
            changes = tuple(
                (self.ids[i], 0 if i % 5 == 0 else 1 + (self.start[self.ids[i]] * 3 + i) % 90_000)
                for i in range(first, first + rows)
            )
            f = ReturnsFile(f"r{number:05d}_{channel}.csv", channel, changes, padding)
            self.files.append(f)
            return f

    def expected(self, applied: list[ReturnsFile]) -> dict[str, tuple[int, int, str]]:
        """Every action's (amount, payout, state) once each file of `applied` is applied once."""
        want = {a: (c, payout(c), "PENDING") for a, c in self.start.items()}
        for f in applied:
            for aid, cents in f.changes:
                want[aid] = (cents, payout(cents), "REVERSED" if cents == 0 else "PENDING")
        return want


# --- the daemon


@dataclass
class Secrets:
    """The campaign's FTP password and API token (random per run)."""

    ftp_password: str = field(default_factory=lambda: "ftp-" + secrets.token_urlsafe(12))
    api_token: str = field(default_factory=lambda: "tok-" + secrets.token_urlsafe(18))


def campaign_doc(keys: Secrets) -> dict[str, Any]:
    """Campaign `acme`: one 10 % sale tracker, an FTP login, a mail address and an API token."""
    return {
        "id": CAMPAIGN,
        "name": "Acme",
        "currency": "USD",
        "timezone": "UTC",
        "event_types": [
            {
                "id": TRACKER,
                "name": "Sale",
                "kind": "sale",
                "payout": {"type": "percent", "value": "10"},
                "locking": {"days": 27},
            }
        ],
        "ftp": {"login": FTP_LOGIN, "password_hash": hash_password(keys.ftp_password)},
        "smtp": {"address": ADDRESS},
        "http": {"token_hash": hash_password(keys.api_token)},
        "dropdir": False,
    }


class DaemonProcess:
    """`returnsd run` in a child process over a config written into `folder`."""

    def __init__(
        self,
        folder: Path,
        *,
        database_url: str | None = None,
        spool_dir: Path | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.secrets = Secrets()
        self.database_url = database_url or f"sqlite:///{folder / 'returnsd.db'}"
        self.spool_dir = spool_dir or folder / "spool"
        self.extra = settings or {}
        self.ports = {"ftp": free_port(), "smtp": free_port(), "http": free_port()}
        self.config = folder / "config.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.write_config()

    def write_config(self) -> None:
        """Write config.yaml (JSON is YAML); the secrets only as scrypt hashes."""
        campaign = campaign_doc(self.secrets)
        doc: dict[str, Any] = {
            "database_url": self.database_url,
            "spool_dir": str(self.spool_dir),
            "results_dir": str(self.folder / "results"),
            "log_level": "INFO",
            "channels": {
                "ftp": {
                    "host": HOST,
                    "port": self.ports["ftp"],
                    "root": str(self.folder / "ftp"),
                    "max_connections_per_ip": 64,
                    "close_grace": 0.1,
                    "idle_timeout": 30,
                },
                "smtp": {"host": HOST, "port": self.ports["smtp"], "hostname": "returns.test"},
                "http": {"host": HOST, "port": self.ports["http"]},
            },
            "campaigns": [campaign],
            **self.extra,
        }
        self.config.write_text(json.dumps(doc, indent=2) + "\n")

    @property
    def env(self) -> dict[str, str]:
        """The child's environment, without a database override."""
        return {k: v for k, v in os.environ.items() if k != "RETURNSD_DATABASE_URL"}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `returnsd --config CFG ARGS…`; AssertionError with its output if it fails."""
        cmd = [str(RETURNSD), "--config", str(self.config), *args]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"returnsd {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def import_actions(self, plan: Plan) -> None:
        """Load the plan's actions into the database (migrating it first)."""
        self.cli("actions", "import", str(plan.write_actions(self.folder / "actions.csv")))

    def start(self, timeout: float = 60) -> None:
        """Start `returnsd run`; return once FTP, SMTP and HTTP all accept connections."""
        assert not self.alive(), "already running"
        self.runs += 1
        with open(self.folder / "daemon.log", "ab") as log:
            log.write(f"\n===== run {self.runs} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(RETURNSD), "--config", str(self.config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.folder,
            )
        until(self._ready, "returnsd run to listen", timeout)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"returnsd run exited {self.proc.returncode}: {self.log()[-3000:]}"
            )
        return all(accepts(p) for p in self.ports.values())

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc is not None and self.proc.poll() is None

    def answering(self) -> bool:
        """True when every port accepts connections."""
        return all(accepts(p) for p in self.ports.values())

    def kill9(self) -> None:
        """SIGKILL the daemon and reap it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, wait for the exit code; SIGKILL if it does not come (cleanup, never raises)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            return None

    def log(self) -> str:
        """Everything every run of the daemon logged."""
        path = self.folder / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""


# --- the advertiser's clients


def ftp_send(port: int, password: str, name: str, data: bytes, timeout: float = 15) -> str:
    """STOR one file; return the final reply (226 …). ftplib errors for 4xx / 5xx replies.

    Unlike `ftplib.FTP.storbinary`, a data connection the server resets mid-upload (it refused the
    file) does not hide the server's reply: the reply on the control connection is still read.
    """
    ftp = ftplib.FTP(timeout=timeout)
    try:
        ftp.connect(HOST, port)
        ftp.login(FTP_LOGIN, password)
        ftp.voidcmd("TYPE I")
        # OSError: the server cut the transfer short; its reply, read below, says why
        with ftp.transfercmd(f"STOR {name}") as conn, contextlib.suppress(OSError):
            conn.sendall(data)
        reply = ftp.voidresp()
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.quit()
        return reply
    finally:
        ftp.close()


def returns_mail(name: str, data: bytes) -> bytes:
    """A mail to the campaign's address with the file attached (CRLF line ends)."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"], msg["To"], msg["Subject"] = SENDER, ADDRESS, f"returns {name}"
    msg["Message-ID"] = make_msgid(domain="advertiser.test")
    msg.set_content("Returns attached.")
    msg.add_attachment(data, maintype="text", subtype="csv", filename=name)
    return msg.as_bytes(policy=policy.SMTP)


def smtp_send(port: int, name: str, data: bytes, timeout: float = 15) -> tuple[int, str]:
    """Send one mail; return the reply code and text of the step that ended it (250 after DATA)."""
    with smtplib.SMTP(HOST, port, local_hostname="advertiser.test", timeout=timeout) as client:
        steps: list[Callable[[], tuple[int, bytes]]] = [
            client.ehlo,
            lambda: client.mail(SENDER),
            lambda: client.rcpt(ADDRESS),
            lambda: _data(client, returns_mail(name, data)),
        ]
        for step in steps:
            code, answer = step()
            if code >= 300:
                break
        return code, answer.decode(errors="replace")


def _data(client: smtplib.SMTP, message: bytes) -> tuple[int, bytes]:
    """DATA, returning the reply instead of raising on a refusal."""
    try:
        return client.data(message)
    except smtplib.SMTPDataError as exc:
        error = exc.smtp_error
        return exc.smtp_code, error if isinstance(error, bytes) else error.encode()


def http_send(port: int, token: str, name: str, data: bytes, timeout: float = 15) -> httpx.Response:
    """POST one file (multipart) to the campaign's upload endpoint."""
    return httpx.post(
        f"http://{HOST}:{port}/v1/campaigns/{CAMPAIGN}/files",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": (name, data, "text/csv")},
        timeout=timeout,
    )


# --- what the database says


class Db:
    """Read access to the daemon's database (SQLite or PostgreSQL), opened per query."""

    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        self.url = url

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Engine]:
        args = {"timeout": 30} if self.url.startswith("sqlite") else {"connect_timeout": 5}
        engine = create_engine(self.url, connect_args=args)
        try:
            yield engine
        finally:
            engine.dispose()

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts."""
        with self._engine() as engine, engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql))]

    def files(self) -> list[dict[str, Any]]:
        """Every row of the files table."""
        return self.query(
            "SELECT id, name, channel, status, sha256, size, attempts, duplicate_of, error_code, "
            "error_message, spool_path FROM files ORDER BY id"
        )

    def statuses(self) -> dict[str, int]:
        """How many files have each status."""
        rows = self.query("SELECT status, count(*) AS n FROM files GROUP BY status")
        return {r["status"]: int(r["n"]) for r in rows}

    def audit_pairs(self) -> dict[tuple[str, str], int]:
        """(action id, file id) → number of audit rows."""
        rows = self.query(
            "SELECT action_id, file_id, count(*) AS n FROM audit GROUP BY action_id, file_id"
        )
        return {(r["action_id"], r["file_id"]): int(r["n"]) for r in rows}

    def ledger(self) -> dict[str, tuple[int, int, str]]:
        """action id → (amount, payout, state)."""
        rows = self.query("SELECT id, amount, payout, state FROM actions")
        return {r["id"]: (int(r["amount"]), int(r["payout"]), r["state"]) for r in rows}


@dataclass
class Verdict:
    """What the database says about a set of acknowledged files."""

    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    applied_twice: list[str] = field(default_factory=list)
    wrong_ledger: list[str] = field(default_factory=list)
    not_finished: list[str] = field(default_factory=list)


def verify(db: Db, plan: Plan, acked: list[ReturnsFile]) -> Verdict:
    """Each acknowledged file COMPLETE exactly once; the ledger is the union of their changes."""
    files = db.files()
    by_hash: dict[str, list[dict[str, Any]]] = {}
    for row in files:
        by_hash.setdefault(row["sha256"], []).append(row)
    v = Verdict(acknowledged=len(acked))
    v.not_finished = [f"{r['id']} {r['status']}" for r in files if r["status"] not in FINISHED]
    for f in acked:
        complete = [r["id"] for r in by_hash.get(f.sha256, []) if r["status"] == "COMPLETE"]
        if not complete:
            states = [(r["id"], r["status"], r["error_code"]) for r in by_hash.get(f.sha256, [])]
            v.lost.append(f"{f.name}: {states}")
        elif len(complete) > 1:
            v.applied_twice.append(f"{f.name}: COMPLETE as {complete}")
    per_action: dict[str, list[str]] = {}
    for (aid, fid), n in db.audit_pairs().items():
        per_action.setdefault(aid, []).append(fid)
        if n > 1:
            v.applied_twice.append(f"{aid} has {n} audit rows from file {fid}")
    v.applied_twice += [f"{a} changed by files {fs}" for a, fs in per_action.items() if len(fs) > 1]
    want, have = plan.expected(acked), db.ledger()
    v.wrong_ledger = [f"{a}: {have.get(a)} != {w}" for a, w in want.items() if have.get(a) != w]
    return v


# --- a PostgreSQL cluster of our own (never the shared one on 5432)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster run as the `postgres` OS user on a free loopback port."""

    def __init__(self) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        self.bin = found[-1].parent if found else None
        self.dir = Path(tempfile.mkdtemp(prefix="returnsd-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _as_postgres(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.bin is not None
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / cmd[0]), *cmd[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def init(self) -> str | None:
        """Create the cluster (trust auth); None when done, else why it could not be."""
        if self.bin is None:
            return "no /usr/lib/postgresql/*/bin/initdb"
        if shutil.which("runuser") is None:
            return "runuser (util-linux) is not installed"
        try:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
        except (LookupError, OSError) as exc:  # no `postgres` user, or not root
            return f"cannot hand {self.dir} to the postgres user: {exc}"
        done = self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        return None if done.returncode == 0 else f"initdb failed: {done.stderr.strip()[-500:]}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={HOST}"
        done = self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"
        )
        assert done.returncode == 0, f"pg_ctl start: {done.stdout}{done.stderr}"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`pg_ctl stop -m mode`), waiting until it is down."""
        done = self._as_postgres("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        assert done.returncode == 0, f"pg_ctl stop: {done.stdout}{done.stderr}"

    def running(self) -> bool:
        """True while the server runs."""
        if self.bin is None or not (self.data / "postmaster.pid").exists():
            return False
        return self._as_postgres("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def destroy(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


# --- a TCP relay that freezes transfers

__all__ = ["FreezingProxy"]  # kept importable from here for the fault tests
