"""What the sessions of one FTP server share, and storing an upload: drop boxes, bans, receipts.

Everything here runs either in the FTP IO loop (name rules, `LoginGuard`) or in the channel's
worker pool (`check_password`, `store_upload`), never both at once on the same object.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from channels.base import ChannelContext
from channels.intake import Intake, Refusal, RefusalKind, Sender
from channels.replies import receipt_name, receipt_text, write_atomic
from ingest.config import FtpAccount
from ingest.passwords import verify_login
from ingest.spool import Accepted

log = logging.getLogger(f"returnsd.{__name__}")

RESULTS = "results"


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

    @property
    def sender(self) -> Sender:
        """The campaign, login and address the upload comes from."""
        return Sender(self.box.campaign, self.box.login, self.peer)


@dataclass(frozen=True)
class StoreResult:
    """What storing an upload came to: `refusal` is an FTP error code, None when stored."""

    refusal: int | None
    text: str


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
class FtpServerState:
    """What every session of one FTP server shares (the channel builds one per start)."""

    ctx: ChannelContext
    intake: Intake
    boxes: dict[str, DropBox]
    guard: LoginGuard
    pool: ThreadPoolExecutor
    call_soon: Callable[[Callable[[], None]], None]
    tmp_dir: Path
    close_grace: float
    login_delay: float
    busy: set[Path] = field(default_factory=set)

    def check_password(self, login: str, password: str) -> bool:
        """True when `login` exists and `password` matches its hash (same cost either way)."""
        box = self.boxes.get(login)
        stored = None
        if box is not None:
            try:
                stored = box.account.hash()
            except OSError as exc:
                log.error("ftp: cannot read the password hash of login %s: %s", login, exc)
        return verify_login(password, stored)


def store_upload(state: FtpServerState, upload: Upload, discard_on_failure: bool) -> StoreResult:
    """Hand a complete upload to the spool, drop the original, write the receipt (worker thread)."""
    box = upload.box
    try:
        accepted = state.intake.accept(
            upload.sender, upload.name, upload.path, started=upload.started
        )
    except Refusal as refusal:
        return _refused(upload, refusal, discard_on_failure)
    except Exception:
        log.exception("ftp: storing %s for campaign %s failed", upload.name, box.campaign)
        state.intake.refused(upload.sender, "TEMPORARY_ERROR", name=upload.name)
        return _refused(upload, None, discard_on_failure)
    upload.path.unlink(missing_ok=True)
    receipt = _write_receipt(state, upload, accepted)
    return StoreResult(None, _stored_text(accepted, receipt))


def _stored_text(accepted: Accepted, receipt: str | None) -> str:
    if accepted.duplicate:
        text = f"Received; same bytes as {accepted.duplicate_of}, nothing is applied again."
    else:
        text = f"Received as {accepted.file_id} ({accepted.status})."
    return f"{text} Receipt: /{RESULTS}/{receipt}" if receipt else text


REPLY_CODES = {
    RefusalKind.TOO_LARGE: 552,
    RefusalKind.REJECTED: 553,
    RefusalKind.SPOOL_FULL: 452,
    RefusalKind.TEMPORARY: 451,
}
TRY_LATER = "nothing was stored, try again later"


def _refused(upload: Upload, refusal: Refusal | None, discard: bool) -> StoreResult:
    """The FTP answer to a refused upload (already logged by the intake)."""
    if discard:
        upload.path.unlink(missing_ok=True)
    kind = refusal.kind if refusal else RefusalKind.TEMPORARY
    if refusal is not None and not kind.transient:
        text = refusal.message
    elif kind is RefusalKind.SPOOL_FULL:
        text = f"insufficient storage on the server; {TRY_LATER}"
    else:
        text = f"the server could not store the file; {TRY_LATER}"
    log.warning("ftp: %s from %s not stored: %s", upload.name, upload.box.login, refusal or kind)
    return StoreResult(REPLY_CODES[kind], text[:1].upper() + text[1:] + ".")


def refused(
    state: FtpServerState, upload: Upload, outcome: str, reason: str | None, size: int | None = None
) -> None:
    """Log that an upload was not taken (cut off, too large, reserved name, shutting down …)."""
    state.intake.refused(
        upload.sender, outcome, name=upload.name, size=size, reason=reason, started=upload.started
    )


def _write_receipt(state: FtpServerState, upload: Upload, accepted: Accepted) -> str | None:
    name = receipt_name(accepted.file_id, upload.name)
    try:
        outcome = state.ctx.results.outcome(accepted.file_id)
        text = receipt_text(accepted, outcome)
        write_atomic(upload.box.results / name, text.encode(), state.tmp_dir)
    except Exception:  # the file is safe in the spool; a missing receipt is only an annoyance
        log.exception("ftp: cannot write %s for campaign %s", name, upload.box.campaign)
        return None
    return name
