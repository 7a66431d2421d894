"""The daemon: start channels, workers, deliveries and the scheduler; stop in reverse order."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from channels.base import Channel, ChannelContext
from channels.registry import CHANNELS, pull_channel
from ingest.cluster import JobClaims, Node
from ingest.cluster import nodes as cluster_nodes
from ingest.config import Settings
from ingest.errors import Transient
from ingest.files import FileLifecycle
from ingest.nodelock import SingleNodeLock
from ingest.results import FileOutcome, ResultStore
from ingest.retention import sweep_orphans
from ingest.spool import Spool
from ingest.store import Store, sqlite_path
from ingest.worker import Worker

log = logging.getLogger("returnsd.daemon")


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


def channel_context(settings: Settings, store: Store) -> ChannelContext:
    """What every channel gets: config, spool and result store."""
    return ChannelContext(settings, Spool(settings, store), ResultStore(store))


def run_pull(settings: Settings, store: Store, campaign_id: str) -> Any:
    """Run one campaign's pull now (the CLI's `returnsd pull`); return the report."""
    return pull_channel(channel_context(settings, store)).pull(campaign_id)


class Daemon:
    """Everything `returnsd run` starts, with an orderly stop."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.ctx = replace(channel_context(settings, store), running=lambda: list(self.channels))
        self.results = self.ctx.results
        self.stopping = threading.Event()
        self.delivery_wake = threading.Event()
        self.channels: dict[str, Channel] = {}
        self.node = Node(settings, store) if settings.cluster.enabled else None
        self.ctx.spool.node_id = self.node.id if self.node else None
        tag, lease = (self.node.id, self.node.lease) if self.node else (None, None)
        self.workers = [
            Worker(
                settings,
                store,
                on_finished=lambda _id: self.delivery_wake.set(),
                tag=tag,
                lease=lease,
            )
            for _ in range(settings.workers)
        ]
        self.threads: list[threading.Thread] = []
        self.scheduler: Any = None
        self.console: Any = None
        self.single_node: SingleNodeLock | None = None
        self.heartbeat_stop = threading.Event()  # set only once the files in hand are finished
        self.heartbeat: threading.Thread | None = None

    def start(self) -> None:
        """Start workers, channels, deliveries and the scheduler; raise if a channel cannot."""
        self._claim_database()
        if self.node is not None:
            self.node.join()
            self.heartbeat = threading.Thread(
                target=self._heartbeat_loop, name="returnsd-heartbeat", daemon=True
            )
            self.heartbeat.start()
        self.workers[0].recover(mine_too=self.node is not None)  # a restarted node's own too
        sweep_orphans(self.settings, self.store)
        self.ctx.spool.on_queued(self._wake_workers)
        for i, worker in enumerate(self.workers):
            self._thread(f"worker-{i}", partial(worker.run, self.stopping))
        if self.settings.impact_api.enabled:
            self._start_api_applier()
        try:
            for name in enabled_channels(self.settings):
                channel = CHANNELS[name](self.ctx)
                channel.start()
                self.channels[name] = channel
                log.info("channel %s started", name)
            self._start_console()
        except BaseException:
            self.stop()
            raise
        self._thread("deliveries", self._deliver_loop)
        self.scheduler = self._scheduler()
        self.scheduler.start()
        log.info("returnsd running: channels %s", ", ".join(self.channels) or "none")

    def _start_console(self) -> None:
        """The web console, when configured: one more way in, started like a channel."""
        opts = self.settings.console
        if opts is None or not opts.enabled:
            return
        from console.context import ConsoleContext
        from console.server import ConsoleServer

        ctx = ConsoleContext(self.settings, self.store, self.ctx.spool, opts,
                             running=lambda: list(self.channels),
                             send_mail=self._report_mailer())  # fmt: skip
        self.console = ConsoleServer(ctx)
        self.console.start()

    def _report_mailer(self) -> Callable[[Any], None]:
        """How scheduled reports are mailed: the outbound relay, or the outbox without one."""
        from channels.smtp_mail import Relay
        from channels.smtp_outbox import Outbox
        from ingest.config import SmtpOptions

        opts = self.settings.channels.smtp or SmtpOptions(port=0)
        relay = Relay(opts)
        if relay.configured:
            return relay.send
        outbox = Outbox(self.settings.path(opts.outbox_dir))

        def to_outbox(msg: Any) -> None:
            outbox.put(msg)

        return to_outbox

    def _reports_job(self) -> None:
        from console.schedules import run_due

        if self.console is not None:
            ran = run_due(self.console.ctx)
            if ran:
                log.info("scheduled reports: %s", ", ".join(f"{i} {s}" for i, s in ran))

    def _start_api_applier(self) -> None:
        """The impact-compatible API's accounts from the config, and its submissions' applier."""
        from ingest.api_accounts import Accounts
        from ingest.applier import Applier

        Accounts(self.store).sync_config(self.settings)
        applier = Applier(self.settings, self.store)
        self._thread("api-submissions", partial(applier.run, self.stopping))

    def _claim_database(self) -> None:
        """SQLite is single-node: refuse to start while another daemon holds its lock."""
        path = sqlite_path(self.settings.database_url, self.settings.base_dir)
        if path is not None:
            lock = SingleNodeLock(path)
            lock.acquire()
            self.single_node = lock

    def _heartbeat_loop(self) -> None:
        """Cluster mode: heartbeat and renew leases; requeue the files of nodes that died."""
        assert self.node is not None
        while not self.heartbeat_stop.wait(self.node.heartbeat_seconds):
            try:
                self.node.beat()
                if self.workers[0].recover():
                    self._wake_workers(None)
            except Transient as exc:
                log.warning("heartbeat failed (database unavailable): %s", exc)
            except Exception:
                log.exception("heartbeat failed")

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
            reports=self._reports_job if self.console is not None else None,
            reconcile=self._reconcile_job,
            claim_period=JobClaims(self.store, self.node.id).claim if self.node else None,
        )
        return build_scheduler(self.settings, jobs)

    def _reconcile_job(self, campaign_id: str) -> None:
        from ingest.salesforce_reconcile import reconcile

        reconcile(self.ctx.spool, self.settings, campaign_id)

    def _lock_job(self, lock_due: Callable[[Store], int]) -> None:
        log.info("lock job: %d actions locked", lock_due(self.store))

    def _retention_job(self, purge: Callable[[Settings, Store], int]) -> None:
        from ingest.submissions import purge_submissions

        log.info("retention: %d files purged", purge(self.settings, self.store))
        gone = purge_submissions(self.settings, self.store)
        log.info("retention: %d API submissions purged", gone)

    def _pull_now(self, campaign_id: str) -> Any:
        from channels.pull import PullChannel

        channel = self.channels.get("pull")
        if not isinstance(channel, PullChannel):
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
        pending = self.results.undelivered(set(self.channels))
        if self.node is not None:
            pending = self._ours_to_deliver(pending)
        for outcome in pending:
            if self._deliver(outcome):
                self.results.mark_delivered(outcome.file_id)
                done += 1
        return done

    def _ours_to_deliver(self, pending: list[FileOutcome]) -> list[FileOutcome]:
        """Cluster mode: the results this node gives back, each claimed so that one node does.

        A file goes back through the node that received it (its FTP `results/`, its mail), or
        through any node once the receiving one is dead.
        """
        assert self.node is not None
        alive = {n.id for n in cluster_nodes(self.store, self.node.lease) if n.alive}
        mine = [o for o in pending if o.meta.get("node") in (self.node.id, None)]
        mine += [o for o in pending if o.meta.get("node") not in alive | {self.node.id, None}]
        claim = FileLifecycle(self.store).claim_delivery
        return [o for o in mine if claim(o.file_id, self.node.id, self.node.lease)]

    def _deliver(self, outcome: FileOutcome) -> bool:
        channel = self.channels.get(outcome.channel)
        if channel is None:
            return False
        try:
            ok = bool(channel.deliver(outcome))
        except Exception:
            log.exception("delivering %s through %s failed", outcome.file_id, outcome.channel)
            return False
        return ok  # the channel logged what it did (delivered, outbox, …)

    def stop(self) -> None:
        """Stop accepting, finish the file in hand, stop in reverse order."""
        self.stopping.set()  # workers finish the file in hand and take no other
        for w in self.workers:
            w.wake.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        if self.console is not None:
            self.console.stop()
            self.console = None
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
        self.heartbeat_stop.set()  # the leases were renewed until the last file was finished
        if self.heartbeat is not None:
            self.heartbeat.join(timeout=60)
            self.heartbeat = None
        if self.node is not None:
            try:
                self.node.leave()
            except Transient as exc:
                log.warning("could not record this node's stop: %s", exc)
        if self.single_node is not None:
            self.single_node.release()
            self.single_node = None

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
