"""One FTP control connection and its data connections, with returnsd's rules on top of pyftpdlib.

The reply to a finished upload is *deferred*: pyftpdlib would answer 226 as soon as the data
socket closes, before anything is stored. Here the data handler (channels/ftp_data.py) closes
silently when the upload ended cleanly; on plain FTP the session then waits `close_grace` seconds
(a client that died closes its control connection too, and such an upload is dropped), hands the
file to the worker pool (spool.accept + receipt), and only then answers 226 — or 451/452/552/553
when the file could not be taken, in which case it is deleted. Commands that arrive meanwhile are
held and replayed afterwards, so replies stay in order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from pyftpdlib.handlers import FTPHandler

from channels.ftp_data import TOO_LARGE_REASON
from channels.ftp_store import FtpServerState, StoreResult, Upload, refused, store_upload
from channels.names import is_reserved_name, is_temp_name
from ingest.errors import TOO_LARGE

log = logging.getLogger(f"returnsd.{__name__}")

MAX_HELD_LINES = 16


class Session(FTPHandler):
    """pyftpdlib's control handler with bans, off-loop logins, upload rules and deferred 226."""

    server_state: ClassVar[FtpServerState]
    _restart_position: int
    _in_dtp_queue: Any
    _rnfr: str | None

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        self._held: list[bytes] | None = None
        self._upload: Upload | None = None
        self._storing = False
        self._aborting = False
        self._close_after_reply = False
        super().__init__(conn, server, ioloop)

    # --- connection and login

    def on_connect(self) -> None:
        """Turn a banned address away before the banner."""
        if self.server_state.guard.banned(self.remote_ip):
            self.server_state.intake.refused(None, "BANNED", peer=self.remote_ip)
            self.respond("421 Too many failed logins from your address; try again later.")
            self.close_when_done()

    def ftp_PASS(self, line: str) -> None:
        """Check the password in the worker pool (scrypt would stall every session)."""
        if self.authenticated or not self.username:
            super().ftp_PASS(line)
        elif self.server_state.guard.banned(self.remote_ip):
            self.server_state.intake.refused(
                None, "BANNED", sender=self.username, peer=self.remote_ip
            )
            self.handle_auth_failed("Too many failed logins from your address; try later.", "")
        else:
            user = self.username
            check = partial(self.server_state.check_password, user, line)
            self._defer(check, partial(self._login_checked, user))

    def _login_checked(self, user: str, fut: Future[bool]) -> None:
        if fut.exception() is not None:
            log.error("ftp: password check for %s failed: %r", user, fut.exception())
        ok = fut.exception() is None and fut.result()
        if not ok:
            self._login_failed(user)
        if self._closed:
            return
        if ok:  # "" instead of the password: pyftpdlib would keep it on the session
            home, msg = self.authorizer.get_home_dir(user), self.authorizer.get_msg_login(user)
            self.handle_auth_success(home, "", msg)
        else:
            self._held = []  # pyftpdlib stops reading during the failed-login delay: so do we
            self.handle_auth_failed("", "")

    def _login_failed(self, user: str) -> None:
        """Log a failed login like every channel does, and ban an address that keeps failing."""
        state = self.server_state
        state.intake.refused(None, "AUTH_FAILED", sender=user, peer=self.remote_ip)
        if state.guard.failed(self.remote_ip):
            log.warning("ftp: banning %s after repeated failed logins", self.remote_ip)

    # --- uploads

    def ftp_STOR(self, file: str, mode: str = "w") -> str | None:
        """Refuse what may not be uploaded, then receive into the home root."""
        self._drop_stale_upload()
        upload = self._new_upload(Path(file))
        resuming = "a" in mode or self._restart_position > 0
        refusal = self._refusal(upload, resuming)
        if refusal:
            self._restart_position = 0
            self.respond(refusal)
            return None
        opened: str | None = super().ftp_STOR(file, mode)
        if opened is not None:
            self._claim(upload)
        return opened

    def ftp_STOU(self, line: str) -> None:
        """Unique names would carry no file type: not offered."""
        self.respond("502 STOU is not supported; use STOR with the file's name.")

    def on_file_received(self, file: str) -> None:
        """A clean end of upload: temporary names wait for RNTO, real names get stored."""
        upload = self._upload
        if upload is None or str(upload.path) != file:  # cannot happen; never leave it unanswered
            log.error("ftp: %s received without a matching STOR", file)
            self.respond("451 Internal error; nothing was stored.")
            return
        if is_temp_name(upload.name):
            self._release()
            self.respond("226 Transfer complete; rename the file to have it processed.")
            return
        if getattr(self.data_channel, "ended_with_close_notify", False):
            self._store(upload, "226", True)  # TLS said the end is the end: no need to wait
            return
        self._hold()  # plain FTP: a client that died closes its control connection too; wait
        self.call_later(self.server_state.close_grace, self._store, upload, "226", True)

    def on_incomplete_file_received(self, file: str) -> None:
        """A cut-off upload is never stored: deleted (kept only under a temporary name)."""
        upload = self._upload
        if upload is None or str(upload.path) != file:
            return
        dtp = self.data_channel
        reason = "aborted by the client (ABOR)" if self._aborting else None
        reason = reason or getattr(dtp, "cut_reason", None) or "transfer not completed"
        size = dtp.tot_bytes_received if dtp is not None else None
        self._discard(upload, reason, size)

    def ftp_ABOR(self, line: str) -> None:
        """Abort; also drop an upload whose data connection never opened."""
        self._drop_stale_upload()
        self._aborting = True
        try:
            super().ftp_ABOR(line)
        finally:
            self._aborting = False

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        """A new PASV/PORT means the client gave up the STOR still waiting for its connection."""
        if cmd in ("PASV", "EPSV", "PORT", "EPRT"):
            self._drop_stale_upload()
        super().process_command(cmd, *args, **kwargs)

    def _drop_stale_upload(self) -> None:
        """Give up a STOR whose data connection never opened (ABOR, new PASV/PORT, new STOR)."""
        if self._upload is None or self._in_dtp_queue is None or self.data_channel is not None:
            return
        self._in_dtp_queue[0].close()
        self._in_dtp_queue = None
        self._discard(self._upload, "no data connection was opened", 0)

    # --- renames and deletes

    def ftp_RNFR(self, path: str) -> None:
        """Only a file uploaded under a temporary name may be renamed."""
        name = Path(path).name
        if Path(path).parent != Path(self.fs.root) or not is_temp_name(name):
            self.respond("550 Only files uploaded under a temporary name (.part …) can be renamed.")
        elif Path(path) in self.server_state.busy:
            self.respond(f"450 {name} is busy; try again shortly.")
        else:
            super().ftp_RNFR(path)

    def ftp_RNTO(self, path: str) -> Any:
        """Renaming a temporary upload to a real name stores it (250 once it is stored)."""
        src = self._rnfr
        if src is None:
            return super().ftp_RNTO(path)
        target = self._new_upload(Path(path))
        refusal = self._refusal(target, False)
        if refusal is None and is_temp_name(target.name):
            return super().ftp_RNTO(path)
        self._rnfr = None
        if refusal is None and (not os.path.isfile(src) or Path(src) in self.server_state.busy):
            refusal = "550 The file to rename is gone or busy."
        if refusal:
            self.respond(refusal)
            return None
        upload = Upload(Path(src), target.name, target.box, target.peer)
        self._claim(upload)
        self._store(upload, "250", False)
        return None

    def ftp_DELE(self, path: str) -> Any:
        """Delete, unless the file is being received or stored."""
        if Path(path) in self.server_state.busy:
            self.respond(f"450 {Path(path).name} is busy; try again shortly.")
            return None
        return super().ftp_DELE(path)

    # --- storing (deferred reply)

    def _store(self, upload: Upload, ok_code: str, discard: bool) -> None:
        self._storing = True
        job = partial(store_upload, self.server_state, upload, discard)
        self._defer(job, partial(self._stored, upload, ok_code, discard))

    def _stored(
        self, upload: Upload, ok_code: str, discard: bool, fut: Future[StoreResult]
    ) -> None:
        self._storing = False
        self._release()
        if fut.exception() is not None:  # the pool was shut down before the job ran
            if discard:
                upload.path.unlink(missing_ok=True)
            refused(self.server_state, upload, "SHUTTING_DOWN", str(fut.exception()))
            result = StoreResult(421, "Service shutting down; nothing was stored.")
        else:
            result = fut.result()
        self._reply(f"{result.refusal or ok_code} {result.text}")
        if self._close_after_reply and not self._closed:
            self.close_when_done()

    def _refusal(self, upload: Upload, resuming: bool) -> str | None:
        if upload.path.parent != upload.box.home:
            return "553 Upload files to the top folder /."
        if is_reserved_name(upload.name):
            return "553 Names starting receipt_ or result_ are reserved; rename the file."
        if upload.path in self.server_state.busy or self._upload is not None:
            return f"450 {upload.name} is busy (being received or stored); try again shortly."
        if resuming and not is_temp_name(upload.name):
            return f"550 Resume (REST/APPE) only under a temporary name, e.g. {upload.name}.part."
        return None

    def _new_upload(self, path: Path) -> Upload:
        box = self.server_state.boxes[self.username]
        return Upload(path, path.name, box, self.remote_ip)

    def _claim(self, upload: Upload) -> None:
        self._upload = upload
        self.server_state.busy.add(upload.path)

    def _release(self) -> None:
        if self._upload is not None:
            self.server_state.busy.discard(self._upload.path)
            self._upload = None

    def _discard(self, upload: Upload, reason: str, size: int | None) -> None:
        keep = is_temp_name(upload.name) and reason != TOO_LARGE_REASON
        if not keep:
            upload.path.unlink(missing_ok=True)
        self._release()
        refused(
            self.server_state,
            upload,
            TOO_LARGE if reason == TOO_LARGE_REASON else "INCOMPLETE",
            reason,
            size,
        )

    # --- holding commands while a reply is deferred

    def _hold(self) -> None:
        if self._held is None:
            self._held = []

    def _defer(self, work: Callable[[], Any], done: Callable[[Future[Any]], None]) -> None:
        self._hold()
        try:
            fut = self.server_state.pool.submit(work)
        except RuntimeError as exc:  # pool shut down: the channel is stopping
            fut = Future()
            fut.set_exception(exc)
            self._resume(done, fut)
            return
        call_soon = self.server_state.call_soon
        fut.add_done_callback(lambda f: call_soon(partial(self._resume, done, f)))

    def _resume(self, done: Callable[[Future[Any]], None], fut: Future[Any]) -> None:
        done(fut)
        held, self._held = self._held or [], None
        for i, line in enumerate(held):
            if self._closed:
                return
            self._in_buffer, self._in_buffer_len = [line], len(line)
            super().found_terminator()
            if self._held is not None:  # that command deferred its reply again
                self._held = held[i + 1 :]
                return

    def found_terminator(self) -> None:
        """Run the command now, or hold it while an earlier reply is pending."""
        if self._held is None:
            super().found_terminator()
            return
        self._held.append(b"".join(self._in_buffer))
        self._in_buffer, self._in_buffer_len = [], 0
        if len(self._held) > MAX_HELD_LINES:
            self.close()

    def _reply(self, line: str) -> None:
        if not self._closed:
            self.respond(line)

    # --- end of the session

    def _on_dtp_close(self) -> None:
        """A QUIT sent during the upload closes the session after the deferred reply, not before."""
        if self._quit_pending and self._held is not None:
            self.data_channel = None
            self._close_after_reply = True
            return
        super()._on_dtp_close()

    def close(self) -> None:
        """An upload not yet handed to the pool dies with its session (the client saw no 226)."""
        upload = self._upload
        if upload is not None and not self._storing and not self._closed:
            self._discard(upload, "the control connection closed", None)
        super().close()
