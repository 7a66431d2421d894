"""Scheduled pull: fetch new, stable files from an advertiser's SFTP or FTP(S) server to the spool.

One run (`pull(campaign)`) connects (host key pinned for SFTP), lists the folder, drops names that
are temporary, reserved or not matching the pattern, drops what was fetched already
(same path, size and mtime), waits `stable_interval`, lists again and fetches only the files whose
size and mtime did not change. Each file is downloaded under a no-progress watchdog, checked
against the listed size, handed to `spool.accept`, and only after that recorded as fetched and
deleted or moved on the server. Transient failures retry the whole session with capped exponential
back-off; the record of fetched files makes a retry resume where the last one stopped. The
scheduler decides when to run; this module owns no timer.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol

from channels.base import ChannelContext, ChannelError
from channels.intake import Intake, Refusal, Sender
from channels.pull_remote import (
    PullRefused,
    PullTransient,
    Remote,
    RemoteFile,
    RemoteFileError,
    Watchdog,
    is_candidate,
    open_remote,
    parse_url,
    source_problems,
)
from channels.pull_report import ALREADY, CHANGED, GROWING, Fetched, PullReport
from channels.replies import delivered, receipt_name, receipt_text, result_files
from ingest.config import PullOptions, PullSource
from ingest.errors import ReturnsdError, Terminal, Transient
from ingest.results import FileOutcome
from ingest.spool import Accepted

log = logging.getLogger(f"returnsd.{__name__}")


class FetchedFiles(Protocol):
    """The remote files a pull fetched before (`ingest.pulled.PullLedger` implements it)."""

    def seen(self, campaign: str, path: str, size: int, mtime: int) -> bool:
        """True when this exact remote file (path, size, mtime) was fetched before."""

    def record(
        self, campaign: str, path: str, size: int, mtime: int, sha256: str, file_id: str
    ) -> None:
        """Remember a fetched remote file and the returnsd file it became."""


class PullChannel:
    """The scheduled SFTP / FTP(S) pull: nothing listens; the scheduler or the CLI calls `pull`."""

    name: ClassVar[str] = "pull"

    def __init__(
        self,
        ctx: ChannelContext,
        fetched: FetchedFiles,
        *,
        stable_interval: float = 1.0,
        backoff: float = 2.0,
        backoff_cap: float = 60.0,
        prefetch_requests: int = 128,
    ) -> None:
        self.ctx = ctx
        self.fetched = fetched
        self.intake = Intake(ctx.spool, self.name)
        self.stable_interval = stable_interval
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        # Above 64: with 64 requests paramiko's fixed io_sleep cuts throughput ~40x (its #2455).
        self.prefetch_requests = prefetch_requests
        self._stopping = threading.Event()

    def start(self) -> None:
        """Check every pull's URL, secrets, key and pinned host key; ChannelError if one fails."""
        problems = [
            f"campaign {cid}: {p}" for cid, src in self._sources() for p in source_problems(src)
        ]
        if problems:
            raise ChannelError("pull channel cannot start: " + "; ".join(problems))
        try:
            self._state_dir().mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelError(f"pull channel: state_dir {self._state_dir()}: {exc}") from exc
        self._stopping.clear()

    def stop(self) -> None:
        """Cut short the back-off of a running pull; nothing else is held between runs."""
        self._stopping.set()

    def pull(self, campaign_id: str) -> PullReport:
        """Run one pull for a campaign, with retries; remote trouble ends up in the report."""
        source = self._source(campaign_id)
        report = PullReport(campaign_id, parse_url(source.url).display)
        for attempt in range(source.retries + 1):
            report.attempts = attempt + 1
            try:
                self._session(campaign_id, source, report)
                return report
            except Terminal as exc:  # refused key/login/TLS, missing folder, unreadable secret
                self._terminal(campaign_id, source, report, exc)
                return report
            except Transient as exc:
                if attempt == source.retries or self._stopping.is_set():
                    report.errors.append(f"gave up after {attempt + 1} attempt(s): {exc}")
                    return report
                report.notes.append(f"attempt {attempt + 1} failed, retried: {exc}")
                log.warning("pull %s attempt %d failed: %s", campaign_id, attempt + 1, exc)
                self._stopping.wait(min(self.backoff_cap, self.backoff * 2**attempt))
        return report

    def _terminal(
        self, campaign_id: str, source: PullSource, report: PullReport, exc: Terminal
    ) -> None:
        report.errors.append(str(exc))
        host = parse_url(source.url).host
        if isinstance(exc, PullRefused):
            who = Sender(campaign_id, f"{source.user}@{host}", host)
            self.intake.refused(who, "REFUSED", reason=str(exc))
        else:
            log.error("pull %s from %s failed: %s", campaign_id, report.source, exc)

    def deliver(self, outcome: FileOutcome) -> bool:
        """Upload `result_<name>_<file id>.csv` and `.json` to the campaign's results_folder."""
        campaign = self.ctx.settings.campaign(outcome.campaign)
        source = campaign.pull if campaign else None
        if source is None or not source.results_folder:
            return True
        files = result_files(outcome)
        try:
            remote = open_remote(source, source.timeout_seconds, self.prefetch_requests)
            try:
                folder = remote.target.subfolder(source.results_folder)
                for name, data in files:
                    remote.put(folder, name, data)
            finally:
                remote.close()
        except ReturnsdError as exc:
            log.warning("pull: result of %s not delivered yet: %s", outcome.file_id, exc)
            return False
        delivered(outcome, f"{parse_url(source.url).display} {source.results_folder}/{files[0][0]}")
        return True

    # --- one session -------------------------------------------------------------------------

    def _session(self, campaign_id: str, source: PullSource, report: PullReport) -> None:
        self._state_dir().mkdir(parents=True, exist_ok=True)  # the CLI pulls without start()
        remote = open_remote(source, source.timeout_seconds, self.prefetch_requests)
        try:
            new = self._new_files(campaign_id, remote, source, report)
            if not new:
                return
            self._stopping.wait(self.stable_interval)
            now = {f.name: f for f in remote.list()}
            for f in new:
                if now.get(f.name) == f:
                    self._fetch(campaign_id, remote, source, f, report)
                elif f.name in now:
                    report.skip(f.name, GROWING)
        finally:
            remote.close()

    def _new_files(
        self, campaign_id: str, remote: Remote, source: PullSource, report: PullReport
    ) -> list[RemoteFile]:
        """Candidates not fetched before; finishes `after` for fetched files still lying there."""
        new = []
        listed = [f for f in remote.list() if is_candidate(f.name, source.pattern)]
        for f in sorted(listed, key=lambda f: (f.mtime, f.name)):
            if not self.fetched.seen(campaign_id, remote.target.path(f.name), f.size, f.mtime):
                new.append(f)
                continue
            report.skip(f.name, ALREADY)
            if source.after != "keep":  # fetched, but the delete/move did not happen last time
                self._after(remote, source, f, report)
        return new

    def _fetch(
        self,
        campaign_id: str,
        remote: Remote,
        source: PullSource,
        f: RemoteFile,
        report: PullReport,
    ) -> None:
        limit = self.ctx.settings.limits.max_file_bytes
        if f.size > limit:
            why = f"TOO_LARGE: over the {limit:,}-byte limit"
            self._refuse(campaign_id, remote, source, f, report, why)
            return
        started = time.monotonic()
        with tempfile.TemporaryFile(dir=self._state_dir(), prefix="pull-") as tmp:
            try:
                self._download(remote, f, tmp, source.timeout_seconds)
            except RemoteFileError as exc:
                report.errors.append(f"{f.name}: cannot read: {exc}")
                return
            if tmp.tell() != f.size:
                report.skip(f.name, CHANGED)
                return
            tmp.seek(0)
            who = Sender(campaign_id, _sender(source, remote), remote.target.host)
            meta: dict[str, object] = {"remote_path": remote.target.path(f.name),
                                       "remote_mtime": f.mtime}  # fmt: skip
            try:
                acc = self.intake.accept(who, f.name, tmp, meta=meta, started=started)
            except Refusal as exc:
                if exc.kind.transient:
                    raise exc.cause from exc  # the whole session is tried again later
                report.errors.append(f"{f.name}: refused: {exc}")
                return
        self._received(campaign_id, remote, f, acc)
        report.add(Fetched(f.name, acc.file_id, acc.status, acc.size))
        self._after(remote, source, f, report)
        self._send_receipt(remote, source, acc, report)

    def _download(self, remote: Remote, f: RemoteFile, out: BinaryIO, timeout: float) -> None:
        """Get one file; no byte for `timeout` seconds breaks the connection (then: retry)."""
        with Watchdog(timeout, remote.abort) as dog:
            try:
                remote.get(f.name, out, dog.progress)
            except PullTransient as exc:
                if dog.fired:
                    raise PullTransient(f"{f.name}: transfer stalled for {timeout:g} s") from exc
                raise
        if dog.fired:
            raise PullTransient(f"{f.name}: transfer stalled for {timeout:g} s")

    def _received(self, campaign_id: str, remote: Remote, f: RemoteFile, acc: Accepted) -> None:
        """Remember the file (logged by the intake): from here on it is never fetched again."""
        path = remote.target.path(f.name)
        self.fetched.record(campaign_id, path, f.size, f.mtime, acc.sha256, acc.file_id)

    def _refuse(
        self,
        campaign_id: str,
        remote: Remote,
        source: PullSource,
        f: RemoteFile,
        report: PullReport,
        why: str,
    ) -> None:
        """A file the spool will not take: reported every run until the advertiser removes it."""
        report.errors.append(f"{f.name}: refused: {why}")
        who = Sender(campaign_id, _sender(source, remote), remote.target.host)
        self.intake.refused(who, why.split(":", 1)[0], name=f.name, size=f.size, reason=why)

    def _after(self, remote: Remote, source: PullSource, f: RemoteFile, report: PullReport) -> None:
        """Delete or move a file that is safely in the spool (a failure here loses nothing)."""
        try:
            if source.after == "delete":
                remote.delete(f.name)
            elif source.after.startswith("move:"):
                remote.move(f.name, remote.target.subfolder(source.after[5:]))
        except RemoteFileError as exc:
            report.notes.append(f"{f.name}: fetched, but '{source.after}' failed: {exc}")

    def _send_receipt(
        self, remote: Remote, source: PullSource, acc: Accepted, report: PullReport
    ) -> None:
        if not source.results_folder:
            return
        outcome = self.ctx.results.outcome(acc.file_id)
        if outcome is None:
            return
        name = receipt_name(acc.file_id, acc.name)
        try:
            folder = remote.target.subfolder(source.results_folder)
            remote.put(folder, name, receipt_text(acc, outcome).encode())
        except RemoteFileError as exc:
            report.notes.append(f"{name}: not uploaded: {exc}")

    # --- configuration -----------------------------------------------------------------------

    def _sources(self) -> list[tuple[str, PullSource]]:
        return [(c.id, c.pull) for c in self.ctx.settings.campaigns if c.pull is not None]

    def _source(self, campaign_id: str) -> PullSource:
        campaign = self.ctx.settings.campaign(campaign_id)
        if campaign is None:
            raise ChannelError(f"pull: unknown campaign {campaign_id!r}")
        if campaign.pull is None:
            raise ChannelError(f"pull: campaign {campaign_id} has no 'pull' source configured")
        try:
            parse_url(campaign.pull.url)
        except PullRefused as exc:
            raise ChannelError(f"pull: campaign {campaign_id}: {exc}") from exc
        return campaign.pull

    def _state_dir(self) -> Path:
        options = self.ctx.settings.channels.pull or PullOptions()
        return self.ctx.settings.path(options.state_dir)


def _sender(source: PullSource, remote: Remote) -> str:
    return f"{source.user}@{remote.target.host}"
