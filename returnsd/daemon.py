"""The daemon: start channels, workers, deliveries and the scheduler; stop in reverse order."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from ingest.config import Settings
from ingest.errors import Transient
from ingest.events import file_event
from ingest.results import FileOutcome, ResultStore
from ingest.retention import sweep_orphans
from ingest.spool import Spool
from ingest.store import Store
from ingest.worker import Worker

log = logging.getLogger("returnsd.daemon")


def _ftp(ctx: Any) -> Any:
    from channels.ftp import FtpChannel

    opts = ctx.settings.channels.ftp
    return FtpChannel(
        ctx, login_delay=opts.failed_login_delay, close_grace=opts.close_grace, workers=opts.workers
    )


def _smtp(ctx: Any) -> Any:
    from channels.smtp import SmtpChannel

    return SmtpChannel(ctx)


def _http(ctx: Any) -> Any:
    from channels.http_api import HttpApiChannel

    return HttpApiChannel(ctx)


def _dropdir(ctx: Any) -> Any:
    from channels.dropdir import DropdirChannel

    return DropdirChannel(ctx)


def _pull(ctx: Any) -> Any:
    from channels.sftp_pull import PullChannel
    from ingest.pulled import PullLedger

    return PullChannel(ctx, PullLedger(ctx.spool.store))


# The channel registry: config key → factory. Explicit, in start order.
CHANNELS: dict[str, Callable[[Any], Any]] = {
    "dropdir": _dropdir,
    "pull": _pull,
    "http": _http,
    "smtp": _smtp,
    "ftp": _ftp,
}


def enabled_channels(settings: Settings) -> list[str]:
    """Names of the channels the config turns on."""
    names = []
    for name in CHANNELS:
        cfg = getattr(settings.channels, name)
        if cfg is None or not cfg.enabled:
            continue
        if name == "pull" and not any(c.pull for c in settings.campaigns):
            continue
        names.append(name)
    return names


def channel_context(settings: Settings, store: Store) -> Any:
    """What every channel gets: config, spool and result store."""
    from channels.base import ChannelContext

    return ChannelContext(settings, Spool(settings, store), ResultStore(store))


def run_pull(settings: Settings, store: Store, campaign_id: str) -> Any:
    """Run one campaign's pull now (the CLI's `returnsd pull`); return the report."""
    return _pull(channel_context(settings, store)).pull(campaign_id)


class Daemon:
    """Everything `returnsd run` starts, with an orderly stop."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.ctx = channel_context(settings, store)
        self.results = self.ctx.results
        self.stopping = threading.Event()
        self.delivery_wake = threading.Event()
        self.channels: dict[str, Any] = {}
        self.workers = [
            Worker(settings, store, on_finished=lambda _id: self.delivery_wake.set())
            for _ in range(settings.workers)
        ]
        self.threads: list[threading.Thread] = []
        self.scheduler: Any = None

    def start(self) -> None:
        """Start workers, channels, deliveries and the scheduler; raise if a channel cannot."""
        self.workers[0].recover()
        sweep_orphans(self.settings, self.store)
        self.ctx.spool.on_queued(self._wake_workers)
        for i, worker in enumerate(self.workers):
            self._thread(f"worker-{i}", partial(worker.run, self.stopping))
        try:
            for name in enabled_channels(self.settings):
                channel = CHANNELS[name](self.ctx)
                channel.start()
                self.channels[name] = channel
                log.info("channel %s started", name)
        except BaseException:
            self.stop()
            raise
        self._thread("deliveries", self._deliver_loop)
        self.scheduler = self._scheduler()
        self.scheduler.start()
        log.info("returnsd running: channels %s", ", ".join(self.channels) or "none")

    def _wake_workers(self, _accepted: object) -> None:
        for worker in self.workers:
            worker.wake.set()

    def _thread(self, name: str, target: Callable[[], Any]) -> None:
        thread = threading.Thread(target=target, name=f"returnsd-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _scheduler(self) -> Any:
        from ingest.actions import lock_due
        from ingest.pulled import PullLedger
        from ingest.retention import purge
        from scheduler import Jobs, build_scheduler

        ledger = PullLedger(self.store)
        jobs = Jobs(
            pull=lambda cid: self._pull_now(cid),
            lock=partial(self._lock_job, lock_due),
            retention=partial(self._retention_job, purge),
            last_run=ledger.last_run,
            set_last_run=ledger.set_last_run,
        )
        return build_scheduler(self.settings, jobs)

    def _lock_job(self, lock_due: Callable[[Store], int]) -> None:
        log.info("lock job: %d actions locked", lock_due(self.store))

    def _retention_job(self, purge: Callable[[Settings, Store], int]) -> None:
        log.info("retention: %d files purged", purge(self.settings, self.store))

    def _pull_now(self, campaign_id: str) -> Any:
        channel = self.channels.get("pull")
        if channel is None:
            return None
        report = channel.pull(campaign_id)
        if getattr(report, "errors", None):
            raise Transient(f"pull {campaign_id}: {report.errors}")
        return report

    def _deliver_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.deliver_pending()
            except Transient as exc:
                log.warning("deliveries paused: %s", exc)
            self.delivery_wake.wait(2.0)
            self.delivery_wake.clear()

    def deliver_pending(self) -> int:
        """Give finished files' results back through the channel that brought them."""
        done = 0
        for outcome in self.results.undelivered(set(self.channels)):
            if self._deliver(outcome):
                self.results.mark_delivered(outcome.file_id)
                done += 1
        return done

    def _deliver(self, outcome: FileOutcome) -> bool:
        channel = self.channels.get(outcome.channel)
        if channel is None:
            return False
        try:
            ok = bool(channel.deliver(outcome))
        except Exception:
            log.exception("delivering %s through %s failed", outcome.file_id, outcome.channel)
            return False
        if ok:
            file_event(
                "delivered",
                file_id=outcome.file_id,
                channel=outcome.channel,
                campaign=outcome.campaign,
                sender=outcome.sender,
                name=outcome.name,
                outcome=outcome.status,
            )
        return ok

    def stop(self) -> None:
        """Stop accepting, finish the file in hand, stop in reverse order."""
        self.stopping.set()  # workers finish the file in hand and take no other
        for w in self.workers:
            w.wake.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        for name in reversed(list(self.channels)):
            try:
                self.channels[name].stop()
            except Exception:
                log.exception("channel %s did not stop cleanly", name)
        self.channels.clear()
        self.delivery_wake.set()
        for thread in self.threads:
            thread.join(timeout=600)
        self.threads.clear()

    def run(self) -> None:
        """Start, then block until SIGTERM or SIGINT; stop cleanly."""
        done = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %s: stopping", signum)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not done.wait(1.0):
            pass
        self.stop()
