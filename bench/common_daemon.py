"""The real returnsd daemon as a child process, its clients and a relay, for benches and tests.

`Daemon` writes a config.yaml into a folder (SQLite there, FTP / SMTP / HTTP on free 127.0.0.1
ports, a drop folder, one campaign with an account on every channel and the SMTP relay pointing
at a `Relay` in this process), loads a ledger with `returnsd actions import`, starts
`returnsd run` and waits until every port accepts connections. The clients are the ones an
advertiser uses: ftplib, smtplib (mail built with `email.policy.SMTP`: CRLF line ends), httpx,
and a rename into the drop folder. `Ledger` knows what every returns file should do, so a caller
can check the database afterwards: one audit row per applying line, the expected amounts.

Scripts under bench/ must put the repository root first on sys.path before importing this module:
run as a script, bench/ comes first and bench/ingest.py would shadow the `ingest` package.
"""

from __future__ import annotations

import contextlib
import ftplib
import io
import json
import os
import secrets
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ingest.passwords import hash_password

ROOT = Path(__file__).resolve().parent.parent
RETURNSD = ROOT / ".venv" / "bin" / "returnsd"
HOST = "127.0.0.1"
CAMPAIGN = "acme"
TRACKER = 4101  # a sale tracker paying 10 % of the amount
FTP_LOGIN = "acme-ftp"
ADDRESS = "returns+acme@returns.localhost"
SALESFORCE_ORG = "00D5g000004SGxbEAG"
SENDER = "ops@advertiser.example"
FROM_ADDRESS = "returns@returns.localhost"
RELAY_PASSWORD_ENV = "RETURNSD_BENCH_RELAY_PASSWORD"
MOD_REASON, REV_REASON = "ITEM_RETURNED", "CONS_FRAUD"
Clock = Callable[[], float]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound to port 0, then released)."""
    with closing(socket.socket()) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `check` until it is true or `timeout` seconds passed; return its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# --- secrets and the relay


@dataclass(frozen=True)
class Credentials:
    """Every secret a run uses; each one random, so a leak into a log can be searched for."""

    ftp_password: str = field(default_factory=lambda: "ftp-" + secrets.token_urlsafe(18))
    api_token: str = field(default_factory=lambda: "tok-" + secrets.token_urlsafe(24))
    smtp_user: str = "advertiser-smtp"
    smtp_password: str = field(default_factory=lambda: "smtp-" + secrets.token_urlsafe(18))
    relay_user: str = "returnsd-relay"
    relay_password: str = field(default_factory=lambda: "relay-" + secrets.token_urlsafe(18))

    def secrets(self) -> list[str]:
        """The values that must never appear in a log (the passwords, the token)."""
        return [self.ftp_password, self.api_token, self.smtp_password, self.relay_password]


@dataclass(frozen=True)
class Mail:
    """One message the relay was given, with the moment it arrived (perf_counter)."""

    at: float
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    def attachments(self) -> dict[str, bytes]:
        """Attachment file name → bytes."""
        found: dict[str, bytes] = {}
        for part in self.message.iter_attachments():
            payload = part.get_payload(decode=True)
            found[part.get_filename() or ""] = payload if isinstance(payload, bytes) else b""
        return found


class RelayCollector:
    """An aiosmtpd handler acting as returnsd's outbound relay: keeps every message it gets."""

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self.clock = clock
        self.mails: list[Mail] = []
        self.results: dict[str, Mail] = {}  # result_<name>.csv → the mail that carried it
        self.cond = threading.Condition()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Record the message and when it arrived; index result mails by result file name."""
        at = self.clock()
        raw = envelope.original_content or b""
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        mail = Mail(at, envelope.mail_from or "", list(envelope.rcpt_tos), msg)
        with self.cond:
            self.mails.append(mail)
            for name in mail.attachments():
                if name.startswith("result_") and name.endswith(".csv"):
                    self.results.setdefault(name, mail)
            self.cond.notify_all()
        return "250 OK"

    def wait_result(self, result_name: str, timeout: float) -> Mail | None:
        """The mail carrying `result_name`, waiting up to `timeout` seconds for it."""
        with self.cond:
            self.cond.wait_for(lambda: result_name in self.results, timeout)
            return self.results.get(result_name)


class Relay:
    """A threaded aiosmtpd on a free port, optionally requiring AUTH (allowed without TLS)."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.collector = RelayCollector()
        self.port = free_port()
        self.logins: list[str] = []
        kwargs: dict[str, Any] = {}
        if login is not None:
            kwargs = {
                "authenticator": self._authenticator(login),
                "auth_required": True,
                "auth_require_tls": False,
            }
        self.controller = Controller(
            self.collector, hostname=HOST, port=self.port, server_hostname="relay", **kwargs
        )

    def _authenticator(self, login: tuple[str, str]) -> Callable[..., AuthResult]:
        def check(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            given = (data.login, data.password) if isinstance(data, LoginPassword) else None
            ok = given == (login[0].encode(), login[1].encode())
            self.logins.append("ok" if ok else "refused")
            return AuthResult(success=ok, handled=False)

        return check

    def __enter__(self) -> Relay:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


# --- the ledger and the returns files


def _payout(cents: int) -> int:
    """10 % of an amount in cents, half-up to the cent."""
    return (cents + 5) // 10


@dataclass(frozen=True)
class Change:
    """One row of a returns file and what it must leave in the ledger."""

    action_id: str
    line: int
    amount: int  # the new amount in cents (0: a reversal)
    payout: int
    state: str

    @property
    def csv_row(self) -> str:
        """The CSV row: ActionId, Amount, Reason."""
        reason = REV_REASON if self.amount == 0 else MOD_REASON
        return f"{self.action_id},{self.amount // 100}.{self.amount % 100:02d},{reason}"


@dataclass(frozen=True)
class ReturnsFile:
    """A returns file (unique name, unique bytes) and the changes it makes."""

    name: str
    channel: str
    changes: tuple[Change, ...]

    @property
    def data(self) -> bytes:
        """The CSV bytes (CRLF line ends, header first)."""
        rows = ["ActionId,Amount,Reason", *(c.csv_row for c in self.changes)]
        return ("\r\n".join(rows) + "\r\n").encode()

    @property
    def result_name(self) -> str:
        """The name of the result CSV in a mail: result_<stem>.csv."""
        return f"result_{self.name.removesuffix('.csv')}.csv"

    def result_in(self, folder: Path) -> Path | None:
        """The result CSV in a results folder (FTP, drop folder): result_<stem>_<file id>.csv."""
        found = sorted(folder.glob(f"result_{self.name.removesuffix('.csv')}_*.csv"))
        return found[0] if found else None


class Ledger:
    """Generates the actions to import and hands out returns files over actions not yet used."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.amounts = {self.action_id(i): 5_000 + (i * 37) % 45_000 for i in range(count)}
        self._next = 0
        self._lock = threading.Lock()

    @staticmethod
    def action_id(i: int) -> str:
        """The id of the i-th action."""
        return f"BA-{i:07d}"

    def write_csv(self, path: Path, now: datetime | None = None) -> None:
        """The actions import file: every action a PENDING sale of yesterday."""
        event = ((now or datetime.now(UTC)) - timedelta(days=1)).isoformat(timespec="seconds")
        head = "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,"
        lines = [head + "Payout,CustomerStatus"]
        for i, (aid, cents) in enumerate(self.amounts.items()):
            lines.append(
                f"{aid},{CAMPAIGN},{TRACKER},ORD-{i:07d},P{i % 17},{event},{_money(cents)},USD,"
                f"{_money(_payout(cents))},NEW"
            )
        path.write_text("\n".join(lines) + "\n")

    def returns_file(self, name: str, channel: str, rows: int) -> ReturnsFile:
        """A file of `rows` changes (one in five a reversal) over actions no file touched yet."""
        with self._lock:
            first, self._next = self._next, self._next + rows
        if self._next > self.count:
            raise ValueError(f"ledger too small: {self.count} actions, {self._next} needed")
        changes = []
        for k in range(rows):
            aid = self.action_id(first + k)
            old = self.amounts[aid]
            new = 0 if (first + k) % 5 == 0 else max(1, old * 3 // 5 - k % 7)
            state = "REVERSED" if new == 0 else "PENDING"
            changes.append(Change(aid, k + 2, new, _payout(new), state))
        return ReturnsFile(name, channel, tuple(changes))


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


# --- the daemon


@dataclass
class Ports:
    """Where the daemon listens."""

    ftp: int = field(default_factory=free_port)
    smtp: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)


class Daemon:
    """`returnsd run` in a child process over a config written into `folder`."""

    def __init__(
        self,
        folder: Path,
        relay: Relay,
        creds: Credentials,
        *,
        smtp_tls: tuple[Path, Path] | None = None,
        relay_auth: bool = False,
        log_level: str = "INFO",
    ) -> None:
        self.folder = folder
        self.relay = relay
        self.creds = creds
        self.smtp_tls = smtp_tls
        self.relay_auth = relay_auth
        self.log_level = log_level
        self.ports = Ports()
        self.config = folder / "config.yaml"
        self.db = folder / "returnsd.db"
        self.ftp_root = folder / "ftp"
        self.drop_root = folder / "drop"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def ftp_results(self) -> Path:
        """The campaign's results/ folder in its FTP home."""
        return self.ftp_root / CAMPAIGN / "results"

    @property
    def drop_folder(self) -> Path:
        """The campaign's drop folder."""
        return self.drop_root / CAMPAIGN

    @property
    def env(self) -> dict[str, str]:
        """The child's environment (the relay password is read from it)."""
        env = {k: v for k, v in os.environ.items() if k != "RETURNSD_DATABASE_URL"}
        env[RELAY_PASSWORD_ENV] = self.creds.relay_password
        return env

    def write_config(self) -> None:
        """Write config.yaml (JSON is YAML): secrets only as scrypt hashes or an env reference."""
        smtp: dict[str, Any] = {
            "host": HOST,
            "port": self.ports.smtp,
            "hostname": "returns.localhost",
            "from_address": FROM_ADDRESS,
            "relay_host": HOST,
            "relay_port": self.relay.port,
        }
        if self.relay_auth:
            smtp["relay_user"] = self.creds.relay_user
            smtp["relay_password"] = {"env": RELAY_PASSWORD_ENV}
        if self.smtp_tls is not None:
            cert, key = self.smtp_tls
            smtp["tls_cert"], smtp["tls_key"] = str(cert), str(key)
            smtp["auth_users"] = {self.creds.smtp_user: hash_password(self.creds.smtp_password)}
        doc = {
            "database_url": f"sqlite:///{self.db}",
            "spool_dir": "spool",
            "results_dir": "results",
            "workers": 1,
            "log_level": self.log_level,
            "channels": {
                "ftp": {
                    "host": HOST,
                    "port": self.ports.ftp,
                    "root": "ftp",
                    "max_connections_per_ip": 128,
                },
                "smtp": smtp,
                "http": {"host": HOST, "port": self.ports.http},
                "dropdir": {"root": "drop", "stable_seconds": 0.2, "rescan_seconds": 5},
            },
            "campaigns": [self._campaign()],
        }
        self.config.write_text(json.dumps(doc, indent=2) + "\n")

    def _campaign(self) -> dict[str, Any]:
        sale = {
            "id": TRACKER,
            "name": "Online Sale",
            "kind": "sale",
            "payout": {"type": "percent", "value": "10"},
            "locking": {"days": 27},
        }
        return {
            "id": CAMPAIGN,
            "name": "Acme Outdoor",
            "currency": "USD",
            "timezone": "America/New_York",
            "event_types": [sale],
            "ftp": {"login": FTP_LOGIN, "password_hash": hash_password(self.creds.ftp_password)},
            "smtp": {"address": ADDRESS},
            "http": {"token_hash": hash_password(self.creds.api_token)},
            "dropdir": True,
            "salesforce": {
                "organization_ids": [SALESFORCE_ORG],
                "action_id_field": "ActionId__c",
                "statuses": {"Closed Lost": {"reverse": "CONS_ERROR"}},
            },
        }

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `returnsd --config CFG ARGS…`; raise with its stderr if it fails."""
        cmd = [str(RETURNSD), "--config", str(self.config), *args]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
        return done

    def prepare(self, ledger: Ledger) -> None:
        """Write the config and load the ledger's actions."""
        self.write_config()
        actions = self.folder / "actions.csv"
        ledger.write_csv(actions)
        self.cli("actions", "import", str(actions))

    def start(self, timeout: float = 60) -> None:
        """Start `returnsd run`; return once every port accepts and the drop folder exists."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        log = open(self.stderr_path(self.runs), "wb")  # noqa: SIM115 - the child owns it
        with log:
            self.proc = subprocess.Popen(
                [str(RETURNSD), "--config", str(self.config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.folder,
            )
        if not wait_until(self._ready, timeout, 0.05):
            code = self.proc.poll()
            self.kill()
            raise RuntimeError(
                f"returnsd run not ready in {timeout} s (exit {code}): {self.log_text()[-3000:]}"
            )

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"returnsd run exited early: {self.log_text()[-3000:]}")
        return self.drop_folder.is_dir() and all(
            _accepts(p) for p in (self.ports.http, self.ports.smtp, self.ports.ftp)
        )

    def stderr_path(self, run: int) -> Path:
        """Where run number `run` (1, 2, …) writes its log."""
        return self.folder / f"daemon-{run}.log"

    def log_text(self) -> str:
        """Everything every run of the daemon logged."""
        paths = (self.stderr_path(i) for i in range(1, self.runs + 1))
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def terminate(self) -> None:
        """Send SIGTERM."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if the daemon is still running after `timeout` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the daemon if it still runs (cleanup only)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @contextmanager
    def database(self) -> Iterator[sqlite3.Connection]:
        """A connection to the daemon's SQLite database (WAL: readers never block it)."""
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def files(self) -> list[dict[str, Any]]:
        """Every row of the files table."""
        with self.database() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM files")]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- the advertiser's clients


def ftp_upload(port: int, creds: Credentials, name: str, data: bytes) -> tuple[str, float]:
    """STOR one file; return the final reply (226 …) and the moment it arrived (perf_counter)."""
    with ftplib.FTP() as ftp:
        ftp.connect(HOST, port, timeout=30)
        ftp.login(FTP_LOGIN, creds.ftp_password)
        reply = ftp.storbinary(f"STOR {name}", io.BytesIO(data))
        at = time.perf_counter()
        with contextlib.suppress(OSError, EOFError, ftplib.Error):
            ftp.quit()  # the 226 is what counts
    return reply, at


def returns_mail(name: str, data: bytes) -> EmailMessage:
    """A mail to the campaign's address with one CSV attachment; CRLF line ends (policy SMTP)."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = ADDRESS
    msg["Subject"] = f"returns {name}"
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@advertiser.example>"
    msg.set_content("Returns attached.")
    msg.add_attachment(data, maintype="text", subtype="csv", filename=name)
    return msg


def smtp_send(
    port: int,
    name: str,
    data: bytes,
    login: tuple[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[str, float]:
    """Send one mail (STARTTLS + AUTH when given); return the 250 reply and its moment."""
    msg = returns_mail(name, data)
    with smtplib.SMTP(HOST, port, local_hostname="advertiser.example", timeout=30) as client:
        client.ehlo()
        if tls is not None:
            client.starttls(context=tls)
            client.ehlo()
        if login is not None:
            client.login(*login)
        code, answer = client.mail(SENDER)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, answer, SENDER)
        code, answer = client.rcpt(ADDRESS)
        if code != 250:
            raise smtplib.SMTPRecipientsRefused({ADDRESS: (code, answer)})
        code, answer = client.data(msg.as_bytes(policy=policy.SMTP))  # raises unless 250
        at = time.perf_counter()
    return f"{code} {answer.decode(errors='replace')}", at


def http_upload(client: httpx.Client, creds: Credentials, name: str, data: bytes) -> httpx.Response:
    """POST one file to the campaign's upload endpoint (multipart, bearer token)."""
    return client.post(
        f"/v1/campaigns/{CAMPAIGN}/files",
        headers={"Authorization": f"Bearer {creds.api_token}"},
        files={"file": (name, data, "text/csv")},
    )


def http_client(port: int) -> httpx.Client:
    """An httpx client for the daemon's API."""
    return httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30)


def drop(daemon: Daemon, name: str, data: bytes) -> float:
    """Write under a temporary name outside the folder, rename in; the moment rename returned."""
    staging = daemon.folder / "staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / f".{name}.part"
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.rename(tmp, daemon.drop_folder / name)
    return time.perf_counter()


# --- what the database says


def file_ids_by_hash(daemon: Daemon) -> dict[str, list[dict[str, Any]]]:
    """The files table grouped by content hash."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in daemon.files():
        grouped.setdefault(row["sha256"], []).append(row)
    return grouped


def audit_rows(daemon: Daemon, action_ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """action id → its audit rows (file_id, line, new_amount, new_payout, new_state)."""
    found: dict[str, list[tuple[Any, ...]]] = {aid: [] for aid in action_ids}
    with daemon.database() as conn:
        for i in range(0, len(action_ids), 500):
            chunk = action_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            q = (
                "SELECT action_id, file_id, line, new_amount, new_payout, new_state FROM audit "
                f"WHERE action_id IN ({marks})"
            )
            for aid, *rest in conn.execute(q, chunk):
                found[aid].append(tuple(rest))
    return found


def ledger_rows(daemon: Daemon, action_ids: list[str]) -> dict[str, tuple[int, int, str]]:
    """action id → (amount, payout, state) as stored now."""
    found: dict[str, tuple[int, int, str]] = {}
    with daemon.database() as conn:
        for i in range(0, len(action_ids), 500):
            chunk = action_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT id, amount, payout, state FROM actions WHERE id IN ({marks})"
            for aid, amount, payout, state in conn.execute(q, chunk):
                found[aid] = (amount, payout, state)
    return found


def check_applied_once(
    daemon: Daemon, applied: dict[str, ReturnsFile]
) -> tuple[list[str], list[str]]:
    """Compare the ledger with `applied` (file id → file, each applied once).

    Returns (duplicated, wrong): actions with more than one audit row, and actions whose audit
    trail or stored values differ from what applying each file once gives.
    """
    expected = {c.action_id: (fid, c) for fid, f in applied.items() for c in f.changes}
    ids = sorted(expected)
    audits, stored = audit_rows(daemon, ids), ledger_rows(daemon, ids)
    duplicated, wrong = [], []
    for aid in ids:
        fid, c = expected[aid]
        rows = audits[aid]
        if len(rows) > 1:
            duplicated.append(aid)
        want = (fid, c.line, c.amount, c.payout, c.state)
        if rows != [want] or stored.get(aid) != (c.amount, c.payout, c.state):
            wrong.append(f"{aid}: audit {rows} ledger {stored.get(aid)}, want {want}")
    return duplicated, wrong
