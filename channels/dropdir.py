"""Watched drop folder: stable files in a campaign's sub-folder go to the spool; results come back.

Each campaign with `dropdir: true` gets `<root>/<campaign>/` and `<root>/<campaign>/results/`.
Watchdog events (created, closed, moved-in) and a periodic full rescan only *note* a candidate in a
pending map; one checker thread takes a file once its size and mtime have not changed for
`stable_seconds` (a quarter of that after an inotify `closed` event with no later change). Taking a
file means `spool.accept(...)`, then removing the original: if the process dies between the two, the
rescan offers the same bytes again and the spool answers with the same file id or DUPLICATE, so
nothing is applied twice. The watchdog callbacks never block, stat or copy.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from channels.base import ChannelContext, ChannelError
from channels.intake import Intake, Refusal, Sender
from channels.names import is_temp_name
from channels.replies import delivered, receipt_name, receipt_text, write_atomic, write_results
from ingest.config import DropdirOptions
from ingest.results import FileOutcome, reply_name
from ingest.spool import Accepted

log = logging.getLogger(f"returnsd.{__name__}")

RESULTS = "results"
Signature = tuple[int, int]  # (size, mtime in ns)


@dataclass
class _Pending:
    """A candidate file: its last size/mtime, since when it has not changed, close-event state."""

    campaign: str
    sig: Signature | None = None
    since: float = 0.0
    closed: bool = False
    closed_sig: Signature | None = None


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into notes in the channel's pending map (no I/O here)."""

    def __init__(self, channel: DropdirChannel) -> None:
        self.channel = channel

    def on_created(self, event: FileCreatedEvent | DirCreatedEvent) -> None:
        """A new name appeared (also how an `mv` from outside arrives, watchdog #1094)."""
        if isinstance(event, FileCreatedEvent):
            self.channel.note(os.fsdecode(event.src_path))

    def on_closed(self, event: FileClosedEvent) -> None:
        """A writer closed the file (inotify only): a hint that it may be complete."""
        self.channel.note(os.fsdecode(event.src_path), closed=True)

    def on_moved(self, event: FileMovedEvent | DirMovedEvent) -> None:
        """A rename inside the folder (`.tmp` → final name): the destination is the candidate."""
        if isinstance(event, FileMovedEvent):
            self.channel.note(os.fsdecode(event.dest_path))


class DropdirChannel:
    """The watched drop folder channel: one sub-folder per campaign, results in `results/`."""

    name: ClassVar[str] = "dropdir"

    def __init__(self, ctx: ChannelContext) -> None:
        self.ctx = ctx
        self.options = ctx.settings.channels.dropdir or DropdirOptions()
        self.root = ctx.settings.path(self.options.root).absolute()
        self.campaigns = frozenset(c.id for c in ctx.settings.campaigns if c.dropdir)
        self.intake = Intake(ctx.spool, self.name)
        self._pending: dict[Path, _Pending] = {}
        self._stuck: dict[Path, Signature] = {}  # handled but could not be removed: skip
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._checker: threading.Thread | None = None

    def folder(self, campaign: str) -> Path:
        """The drop folder of one campaign."""
        return self.root / campaign

    def start(self) -> None:
        """Create the folders, start watching, rescan, and start the stability checker."""
        self._make_folders()
        self._observer = self._start_observer()
        self._stopping.clear()
        self.rescan()
        self._checker = threading.Thread(target=self._run, name="dropdir-check")
        self._checker.start()
        log.info("dropdir watching %s (%d campaigns)", self.root, len(self.campaigns))

    def stop(self) -> None:
        """Stop the observer, let the checker finish the file in hand, join every thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
        self._stopping.set()
        if self._checker is not None:
            self._checker.join()
            self._checker = None

    def _make_folders(self) -> None:
        try:
            for cid in sorted(self.campaigns):
                (self.folder(cid) / RESULTS).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelError(f"dropdir: cannot create folders under {self.root}: {exc}") from exc

    def _start_observer(self) -> BaseObserver:
        observer: BaseObserver = PollingObserver() if self.options.polling else Observer()
        handler = _Handler(self)
        try:
            for cid in sorted(self.campaigns):
                observer.schedule(handler, str(self.folder(cid)), recursive=False)
            observer.start()
        except OSError as exc:  # e.g. "inotify watch limit reached" (ENOSPC), instance limit
            observer.stop()
            raise ChannelError(f"dropdir: cannot watch {self.root}: {exc}") from exc
        return observer

    def note(self, path: str | Path, closed: bool = False) -> None:
        """Remember `path` as a candidate if it is a takeable name directly in a campaign folder."""
        p = Path(path)
        campaign = p.parent.name
        if p.parent.parent != self.root or campaign not in self.campaigns:
            return
        if is_temp_name(p.name):  # reserved names are taken, to be refused like any bad file
            return
        with self._lock:
            entry = self._pending.setdefault(p, _Pending(campaign))
            entry.closed = entry.closed or closed

    def rescan(self) -> None:
        """Note every file of every campaign folder (events can be lost: overflow is silent)."""
        for cid in sorted(self.campaigns):
            try:
                with os.scandir(self.folder(cid)) as entries:
                    files = [e.path for e in entries if e.is_file(follow_symlinks=False)]
            except OSError as exc:
                log.warning("dropdir: cannot list %s: %s", self.folder(cid), exc)
                continue
            for path in files:
                self.note(path)

    def _run(self) -> None:
        stable = self.options.stable_seconds
        tick = max(0.05, min(0.5, stable / 4))
        next_rescan = time.monotonic() + self.options.rescan_seconds
        while not self._stopping.wait(tick):
            try:
                if time.monotonic() >= next_rescan:
                    next_rescan = time.monotonic() + self.options.rescan_seconds
                    self.rescan()
                for path, campaign in self._due(stable):
                    self._take(path, campaign)
            except Exception:  # the checker must survive anything; the next tick retries
                log.exception("dropdir: check failed")

    def _due(self, stable: float) -> list[tuple[Path, str]]:
        """Pop the candidates whose size and mtime have been unchanged long enough."""
        now = time.monotonic()
        due: list[tuple[Path, str]] = []
        with self._lock:
            for path, entry in list(self._pending.items()):
                sig = _signature(path)
                if sig is None or self._stuck.get(path) == sig:
                    del self._pending[path]
                    continue
                self._stuck.pop(path, None)
                if entry.closed:
                    entry.closed, entry.closed_sig = False, sig
                if sig != entry.sig:
                    entry.sig, entry.since = sig, now
                wait = stable / 4 if entry.closed_sig == sig else stable
                if now - entry.since >= wait:
                    del self._pending[path]
                    due.append((path, entry.campaign))
        return due

    def _take(self, path: Path, campaign: str) -> None:
        """Spool one stable file, then remove it and write its receipt."""
        sig = _signature(path)
        who = Sender(campaign, f"dropdir:{campaign}", "local")
        try:
            acc = self.intake.accept(who, path.name, path)
        except FileNotFoundError:
            return  # taken away by someone else meanwhile
        except Refusal as refusal:
            if refusal.kind.transient:  # spool full and friends: the next rescan offers it again
                log.warning("dropdir: %s left in place, will retry: %s", path, refusal)
            else:
                self._reject(path, campaign, refusal, sig)
            return
        self._settle(path, sig, acc)

    def _settle(self, path: Path, sig: Signature | None, acc: Accepted) -> None:
        """After the spool has the bytes: write the receipt, then remove the original.

        In that order, a sender who sees the file gone finds its receipt already there.
        """
        outcome = self.ctx.results.outcome(acc.file_id)
        self._write_receipt(acc.campaign, receipt_name(acc.file_id, acc.name),
                            receipt_text(acc, outcome))  # fmt: skip
        if _signature(path) != sig:  # the writer resumed after a pause: keep the newer bytes
            log.warning("dropdir: %s changed while being taken; write to a temporary name and "
                        "rename when done", path)  # fmt: skip
            self.note(path)
        else:
            self._remove(path, sig)

    def _reject(self, path: Path, campaign: str, refusal: Refusal, sig: Signature | None) -> None:
        """Move a refused file to `results/rejected_<name>` with a receipt saying why."""
        text = (
            f"name: {path.name}\ncampaign: {campaign}\nchannel: {self.name}\nstatus: REJECTED\n"
            f"error_code: {refusal.code}\nmessage: {refusal.message}\n"
            f"moved_to: {RESULTS}/rejected_{path.name}\n"
        )
        self._write_receipt(campaign, reply_name("receipt_", path.name, ".txt"), text)
        try:
            os.replace(path, self.folder(campaign) / RESULTS / f"rejected_{path.name}")
        except OSError as err:
            log.error("dropdir: cannot move refused %s away: %s", path, err)
            self._remember_stuck(path, sig)

    def _remove(self, path: Path, sig: Signature | None) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("dropdir: %s was spooled but cannot be removed: %s", path, exc)
            self._remember_stuck(path, sig)

    def _remember_stuck(self, path: Path, sig: Signature | None) -> None:
        if sig is not None:
            with self._lock:
                self._stuck[path] = sig

    def _write_receipt(self, campaign: str, name: str, text: str) -> None:
        target = self.folder(campaign) / RESULTS / name
        try:
            write_atomic(target, text.encode())
        except OSError as exc:
            log.warning("dropdir: cannot write receipt %s: %s", target, exc)

    def deliver(self, outcome: FileOutcome) -> bool:
        """Write `results/result_<name>_<file id>.csv` (when there is one) and `.json`."""
        folder = self.folder(outcome.campaign) / RESULTS
        try:
            names = write_results(folder, outcome)
        except OSError as exc:
            log.warning("dropdir: cannot deliver %s to %s: %s", outcome.file_id, folder, exc)
            return False
        delivered(outcome, str(folder / names[0]))
        return True


def _signature(path: Path) -> Signature | None:
    """Size and mtime of a regular file (symlinks and folders are never taken), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns
