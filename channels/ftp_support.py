"""The hosted FTP channel's pieces that do not touch pyftpdlib: drop boxes, bans, storing uploads.

Everything here runs either in the FTP IO loop (name rules, `LoginGuard`) or in the channel's
worker pool (`check_password`, `store_upload`), never both at once on the same object.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from channels.base import ChannelContext
from ingest.config import FtpAccount
from ingest.errors import TOO_LARGE, FileRejected, SpoolFull, Transient
from ingest.events import file_event
from ingest.passwords import verify_password
from ingest.results import FileOutcome, reply_name
from ingest.spool import Accepted

log = logging.getLogger("returnsd.channels.ftp")

RESULTS = "results"
TEMP_SUFFIXES = (".part", ".filepart", ".tmp", "~")


def is_temp_name(name: str) -> bool:
    """True for in-progress upload names: dotfiles, *.part, *.filepart, *.tmp, *~."""
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


@dataclass(frozen=True)
class DropBox:
    """A campaign's FTP home: uploads land in `home`, replies are written to `home/results`."""

    campaign: str
    login: str
    account: FtpAccount
    home: Path

    @property
    def results(self) -> Path:
        """The folder the user may read and delete from, but not write into."""
        return self.home / RESULTS


@dataclass(frozen=True)
class Upload:
    """A file a session is receiving (or renaming into place), and who sends it."""

    path: Path
    name: str
    box: DropBox
    peer: str
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class StoreResult:
    """What storing an upload came to: `refusal` is an FTP error code, None when stored."""

    refusal: int | None
    text: str


def write_atomic(tmp_dir: Path, target: Path, data: bytes) -> None:
    """Write `target` whole or not at all: a temp file outside every home, fsync, then rename."""
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=target.name[:40] + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LoginGuard:
    """Counts failed logins per IP address and bans an address that fails too often."""

    def __init__(
        self, after: int, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.after = after
        self.seconds = seconds
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._bans: dict[str, float] = {}
        self._lock = threading.Lock()

    def banned(self, ip: str) -> bool:
        """True while `ip` is banned."""
        with self._lock:
            until = self._bans.get(ip)
            if until is not None and until <= self.clock():
                del self._bans[ip]
                until = None
            return until is not None

    def failed(self, ip: str) -> bool:
        """Record a failed login from `ip`; True when this failure starts a ban."""
        if self.seconds <= 0:
            return False
        now = self.clock()
        with self._lock:
            self._forget_before(now - self.seconds)
            recent = self._failures.setdefault(ip, deque())
            recent.append(now)
            if len(recent) < self.after:
                return False
            del self._failures[ip]
            self._bans[ip] = now + self.seconds
            return True

    def _forget_before(self, cutoff: float) -> None:
        for ip in [ip for ip, times in self._failures.items() if times[-1] < cutoff]:
            del self._failures[ip]
        for times in self._failures.values():
            while times and times[0] < cutoff:
                times.popleft()


@dataclass
class Shared:
    """What every session of one FTP server shares (the channel builds one per start)."""

    ctx: ChannelContext
    boxes: dict[str, DropBox]
    guard: LoginGuard
    pool: ThreadPoolExecutor
    call_soon: Callable[[Callable[[], None]], None]
    tmp_dir: Path
    dummy_hash: str
    close_grace: float
    login_delay: float
    busy: set[Path] = field(default_factory=set)

    def check_password(self, login: str, password: str) -> bool:
        """True when `login` exists and `password` matches its hash (same cost either way)."""
        box = self.boxes.get(login)
        stored = self.dummy_hash
        if box is not None:
            try:
                stored = box.account.hash()
            except OSError as exc:
                log.error("ftp: cannot read the password hash of login %s: %s", login, exc)
                box = None
        return verify_password(password, stored) and box is not None


def store_upload(shared: Shared, upload: Upload, discard_on_failure: bool) -> StoreResult:
    """Hand a complete upload to the spool, drop the original, write the receipt (worker thread)."""
    box, ctx = upload.box, shared.ctx
    try:
        accepted = ctx.spool.accept(
            box.campaign, "ftp", upload.name, upload.path, sender=box.login, peer=upload.peer
        )
    except (FileRejected, SpoolFull, Transient) as exc:
        return _refused(upload, exc, discard_on_failure)
    except Exception:
        log.exception("ftp: storing %s for campaign %s failed", upload.name, box.campaign)
        return _refused(upload, None, discard_on_failure)
    upload.path.unlink(missing_ok=True)
    receipt = _write_receipt(shared, upload, accepted)
    file_event(
        "duplicate" if accepted.duplicate else "received",
        file_id=accepted.file_id,
        channel="ftp",
        campaign=box.campaign,
        sender=box.login,
        peer=upload.peer,
        name=upload.name,
        size=accepted.size,
        seconds=time.monotonic() - upload.started,
        outcome=accepted.status,
    )
    return StoreResult(None, _stored_text(accepted, receipt))


def _stored_text(accepted: Accepted, receipt: str | None) -> str:
    if accepted.duplicate:
        text = f"Received; same bytes as {accepted.duplicate_of}, nothing is applied again."
    else:
        text = f"Received as {accepted.file_id} ({accepted.status})."
    return f"{text} Receipt: /{RESULTS}/{receipt}" if receipt else text


def _refused(upload: Upload, exc: Exception | None, discard: bool) -> StoreResult:
    if discard:
        upload.path.unlink(missing_ok=True)
    if isinstance(exc, FileRejected):
        code, outcome, text = (552 if exc.code == TOO_LARGE else 553), exc.code, exc.message
    elif isinstance(exc, SpoolFull):
        code, outcome = 452, "SPOOL_FULL"
        text = "insufficient storage on the server; nothing was stored, try again later"
    else:
        code, outcome = 451, "TEMPORARY_ERROR"
        text = "the server could not store the file; nothing was stored, try again later"
    log.warning("ftp: %s from %s not stored: %s", upload.name, upload.box.login, exc or outcome)
    refused(upload, outcome, str(exc) if exc else None)
    return StoreResult(code, text[:1].upper() + text[1:] + ".")


def refused(upload: Upload, outcome: str, reason: str | None, size: int | None = None) -> None:
    """Log that an upload was not taken (cut off, too large, reserved name, spool full …)."""
    file_event(
        "refused",
        channel="ftp",
        campaign=upload.box.campaign,
        sender=upload.box.login,
        peer=upload.peer,
        name=upload.name,
        size=size,
        seconds=time.monotonic() - upload.started,
        outcome=outcome,
        reason=reason,
    )


def _write_receipt(shared: Shared, upload: Upload, accepted: Accepted) -> str | None:
    name = reply_name("receipt_", upload.name, ".txt")
    try:
        outcome = shared.ctx.results.outcome(accepted.file_id)
        text = replace(outcome, name=upload.name).receipt_text() if outcome else _plain(accepted)
        write_atomic(shared.tmp_dir, upload.box.results / name, text.encode())
    except Exception:  # the file is safe in the spool; a missing receipt is only an annoyance
        log.exception("ftp: cannot write %s for campaign %s", name, upload.box.campaign)
        return None
    return name


def _plain(accepted: Accepted) -> str:
    return f"file_id: {accepted.file_id}\nname: {accepted.name}\nstatus: {accepted.status}\n"


def deliver_result(tmp_dir: Path, box: DropBox, outcome: FileOutcome) -> list[str]:
    """Write the result CSV (when there is one) and the JSON summary into the box; return names."""
    written = []
    data = outcome.result_csv()
    if data is not None:
        write_atomic(tmp_dir, box.results / outcome.result_name, data)
        written.append(outcome.result_name)
    summary = json.dumps(outcome.summary(), indent=2, default=str).encode()
    write_atomic(tmp_dir, box.results / outcome.summary_name, summary)
    written.append(outcome.summary_name)
    return written
