"""Hosted FTP(S) channel: one jailed drop box per campaign login, replies in its results/ folder.

pyftpdlib's single IO loop runs in one thread; password checks and `spool.accept` run in a small
worker pool, so the loop never waits on scrypt, the disk or the database. An upload is answered
226 only once the spool has it; channels/ftp_data.py and channels/ftp_session.py say how cut-off
uploads are told apart from complete ones, and what stays undetectable on plain FTP.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from channels.base import ChannelContext, ChannelError
from channels.ftp_store import RESULTS, DropBox, FtpServerState, LoginGuard
from channels.intake import Intake
from channels.names import is_temp_name
from channels.replies import delivered, write_results
from ingest.config import FtpOptions
from ingest.results import FileOutcome

log = logging.getLogger(f"returnsd.{__name__}")

TMP_DIR = ".tmp"  # beside the homes: campaign ids cannot start with a dot


class FtpChannel:
    """The hosted FTP(S) server: uploads go to the spool, results come back as files.

    `login_delay`: seconds before a failed login is answered; `close_grace`: seconds a plain-FTP
    upload waits after its data connection ends, to see whether the client died; `workers`:
    threads for password checks and spooling.
    """

    name: ClassVar[str] = "ftp"

    def __init__(
        self,
        ctx: ChannelContext,
        *,
        login_delay: float = 3.0,
        close_grace: float = 0.5,
        workers: int = 4,
    ) -> None:
        opts = ctx.settings.channels.ftp
        if opts is None:
            raise ChannelError("ftp: channels.ftp is not configured")
        self.ctx = ctx
        self.opts: FtpOptions = opts
        self.root = ctx.settings.path(opts.root)
        self.login_delay = login_delay
        self.close_grace = close_grace
        self.workers = workers
        self.port: int = opts.port
        self._boxes: dict[str, DropBox] = {}
        self._server: Any = None
        self._waker: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """host:port as configured (the port as bound once started)."""
        return f"{self.opts.host}:{self.port}"

    def start(self) -> None:
        """Create the homes, bind, serve in a thread; ChannelError if the server cannot listen."""
        if self._thread is not None:
            return
        try:
            self._boxes = self._prepare_boxes()
        except OSError as exc:
            raise ChannelError(f"ftp: cannot prepare {self.root}: {exc}") from exc
        tls = self._tls_context()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="returnsd-ftp-work")
        state = self._shared(pool)
        from channels.ftp_server import build_server

        try:
            self._server, self._waker = build_server(state, self.opts, tls)
        except OSError as exc:
            pool.shutdown()
            why = exc.strerror or str(exc)
            raise ChannelError(f"ftp: cannot listen on {self.address}: {why}") from exc
        self._pool = pool
        self.port = int(self._server.address[1])
        self._thread = threading.Thread(target=self._serve, name="returnsd-ftp", daemon=False)
        self._thread.start()
        log.info("ftp: listening on %s (%s)", self.address, "FTPS required" if tls else "plain FTP")

    def stop(self) -> None:
        """Stop accepting, let stores in hand finish and answer, then close every connection."""
        if self._thread is None:
            return
        waker, server, pool = self._waker, self._server, self._pool
        waker.call_soon(server.close)
        if pool is not None:
            pool.shutdown(wait=True)
        waker.call_soon(server.close_all)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            log.error("ftp: the server thread did not stop")
        self._thread = self._server = self._waker = self._pool = None

    def deliver(self, outcome: FileOutcome) -> bool:
        """Write result_<name>.csv (if any) and result_<name>.json into the campaign's results/."""
        box = self._box_for(outcome.campaign)
        if box is None:
            log.warning(
                "ftp: campaign %s has no FTP login; result of %s not delivered",
                outcome.campaign,
                outcome.file_id,
            )
            return True
        try:
            box.results.mkdir(parents=True, exist_ok=True)
            (self.root / TMP_DIR).mkdir(exist_ok=True)
            names = write_results(box.results, outcome, self.root / TMP_DIR)
        except OSError as exc:
            log.warning("ftp: cannot deliver the result of %s: %s", outcome.file_id, exc)
            return False
        delivered(outcome, f"ftp {outcome.campaign}/{RESULTS}/{names[0]}")
        return True

    # --- internals

    def _serve(self) -> None:
        loop = self._server.ioloop
        timeout = None
        try:
            while loop.socket_map:
                loop.poll(timeout)
                timeout = loop.sched.poll()
        except Exception:
            log.exception("ftp: the server loop failed")
        finally:
            loop.close()

    def _shared(self, pool: ThreadPoolExecutor) -> FtpServerState:
        return FtpServerState(
            ctx=self.ctx,
            intake=Intake(self.ctx.spool, self.name),
            boxes=self._boxes,
            guard=LoginGuard(self.opts.ban_after_failures, self.opts.ban_seconds),
            pool=pool,
            call_soon=_not_running,
            tmp_dir=self.root / TMP_DIR,
            close_grace=self.close_grace,
            login_delay=self.login_delay,
        )

    def _tls_context(self) -> Any | None:
        if self.opts.tls_cert is None or self.opts.tls_key is None:
            return None
        from OpenSSL import SSL

        from channels.ftp_server import tls_context

        cert, key = (
            self.ctx.settings.path(self.opts.tls_cert),
            self.ctx.settings.path(self.opts.tls_key),
        )
        try:
            return tls_context(cert, key)
        except (SSL.Error, OSError) as exc:
            raise ChannelError(
                f"ftp: cannot listen on {self.address}: TLS certificate {cert} / key {key}: {exc}"
            ) from exc

    def _box_for(self, campaign: str) -> DropBox | None:
        c = self.ctx.settings.campaign(campaign)
        if c is None or c.ftp is None:
            return None
        return DropBox(campaign, c.ftp.login, c.ftp, (self.root / campaign).resolve())

    def _prepare_boxes(self) -> dict[str, DropBox]:
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        _clear(self.root / TMP_DIR, older_than=0)
        boxes = {}
        for c in self.ctx.settings.campaigns:
            if c.ftp is None:
                continue
            (self.root / c.id).mkdir(parents=True, exist_ok=True)
            box = DropBox(c.id, c.ftp.login, c.ftp, (self.root / c.id).resolve())
            box.results.mkdir(exist_ok=True)
            _drop_unacknowledged(box)
            _clear(box.results, older_than=self.ctx.settings.retention_days * 86400)
            boxes[box.login] = box
        return boxes


def _not_running(fn: Callable[[], None]) -> None:
    raise RuntimeError("the FTP server is not running")


def _drop_unacknowledged(box: DropBox) -> None:
    """Real-named files left in a home by a stop or crash were never answered 226: drop them."""
    for entry in os.scandir(box.home):
        if entry.is_file(follow_symlinks=False) and not is_temp_name(entry.name):
            log.warning(
                "ftp: deleting %s/%s: its upload was never confirmed to the sender",
                box.campaign,
                entry.name,
            )
            Path(entry.path).unlink(missing_ok=True)


def _clear(folder: Path, older_than: float) -> None:
    """Delete the plain files of `folder` last modified more than `older_than` seconds ago."""
    cutoff = time.time() - older_than
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime <= cutoff:
            Path(entry.path).unlink(missing_ok=True)
