"""The scheduled jobs and their triggers (APScheduler 3.x); the work itself comes from the daemon.

Jobs: one pull per campaign with a `pull` source (cron in the campaign's time zone), one
Salesforce reconciler per campaign with `salesforce.reconcile` (likewise), the lock job
(`settings.lock_schedule`, UTC), the daily retention job, and with the console its scheduled
reports (looked for every minute). Misfires are caught up, not skipped:
`misfire_grace_time=None` while running, and at build time every job whose latest fire time is
after its last successful run (kept by the daemon in `job_runs`) is given an immediate first run.

Several nodes (cluster mode): every node schedules every job, and each run first claims its period
(the latest fire time not after now) through `Jobs.claim_period`; only the node that wins the
claim runs it, so each period runs once across the nodes, a catch-up run at start included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from ingest.config import Settings
from ingest.errors import ConfigError

log = logging.getLogger("returnsd.scheduler")

LOCK_JOB = "lock"
RETENTION_JOB = "retention"
REPORTS_JOB = "reports"
REPORTS_SCHEDULE = "* * * * *"  # due scheduled reports are looked for every minute
JOB_DEFAULTS: dict[str, Any] = {
    "misfire_grace_time": None,  # a late run still runs (3.x default is 1 s: B5)
    "coalesce": True,  # several missed fire times → one run
    "max_instances": 1,  # never two runs of one job at a time
}


@dataclass(frozen=True)
class Jobs:
    """What the scheduled jobs do and where their last successful run is kept (the daemon's)."""

    pull: Callable[[str], None]
    lock: Callable[[], None]
    retention: Callable[[], None]
    last_run: Callable[[str], datetime | None]
    set_last_run: Callable[[str, datetime], None]
    reports: Callable[[], None] | None = None  # the console's scheduled reports, when it runs
    reconcile: Callable[[str], None] | None = None  # a campaign's Salesforce reconciler
    # Cluster mode: True when this node is the one to run (job id, period start); None: always.
    claim_period: Callable[[str, datetime], bool] | None = None


def pull_job_id(campaign_id: str) -> str:
    """The job id of a campaign's scheduled pull."""
    return f"pull:{campaign_id}"


def reconcile_job_id(campaign_id: str) -> str:
    """The job id of a campaign's Salesforce reconciler."""
    return f"salesforce:{campaign_id}"


def build_scheduler(settings: Settings, jobs: Jobs) -> BackgroundScheduler:
    """A scheduler (not started) holding every job; missed runs get an immediate first run."""
    scheduler = BackgroundScheduler(timezone=UTC, job_defaults=dict(JOB_DEFAULTS))
    for job_id, trigger, work in _plan(settings, jobs):
        _add(scheduler, jobs, job_id, trigger, work)
    return scheduler


def _plan(settings: Settings, jobs: Jobs) -> list[tuple[str, CronTrigger, Callable[[], None]]]:
    """Every (job id, trigger, work) the configuration asks for."""
    plan: list[tuple[str, CronTrigger, Callable[[], None]]] = [
        (LOCK_JOB, _cron(settings.lock_schedule, UTC, "lock_schedule"), jobs.lock),
        (RETENTION_JOB, _cron(settings.retention_schedule, UTC, "retention"), jobs.retention),
    ]
    if jobs.reports is not None:
        plan.append((REPORTS_JOB, _cron(REPORTS_SCHEDULE, UTC, "reports"), jobs.reports))
    pull_on = settings.channels.pull is not None and settings.channels.pull.enabled
    for campaign in settings.campaigns:
        if campaign.pull is None:
            continue
        if not pull_on:
            log.warning("campaign %s has a pull source but channels.pull is off", campaign.id)
            continue
        trigger = _cron(campaign.pull.schedule, campaign.tz, f"campaign {campaign.id}: pull")
        plan.append((pull_job_id(campaign.id), trigger, _bind(jobs.pull, campaign.id)))
    for campaign in settings.campaigns:
        sf = campaign.salesforce
        if sf is None or sf.reconcile is None or jobs.reconcile is None:
            continue
        where = f"campaign {campaign.id}: salesforce.reconcile"
        trigger = _cron(sf.reconcile.schedule, campaign.tz, where)
        plan.append((reconcile_job_id(campaign.id), trigger, _bind(jobs.reconcile, campaign.id)))
    return plan


def _cron(expression: str, tz: tzinfo, where: str) -> CronTrigger:
    try:
        return CronTrigger.from_crontab(expression, timezone=tz)
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid cron schedule {expression!r}: {exc}") from exc


def _bind(pull: Callable[[str], None], campaign_id: str) -> Callable[[], None]:
    return lambda: pull(campaign_id)


def _add(
    scheduler: BackgroundScheduler,
    jobs: Jobs,
    job_id: str,
    trigger: CronTrigger,
    work: Callable[[], None],
) -> None:
    """Add one cron job; run it at start if a fire time passed since its last success."""
    now = datetime.now(UTC)
    extra: dict[str, Any] = {}
    last = _last_run(jobs, job_id)
    if missed(trigger, last, now):
        log.info("job %s is owed a run (last success: %s): running it now", job_id, last or "never")
        extra["next_run_time"] = now
    if jobs.claim_period is not None:
        work = once_per_period(job_id, trigger, work, jobs.claim_period)
    scheduler.add_job(
        guarded(job_id, work, jobs.set_last_run), trigger, id=job_id, name=job_id, **extra
    )


class NotOurs(Exception):
    """Another node runs this period of the job: nothing to do, nothing to record."""


def once_per_period(
    job_id: str,
    trigger: CronTrigger,
    work: Callable[[], None],
    claim: Callable[[str, datetime], bool],
) -> Callable[[], None]:
    """Wrap a job so that it runs only when this node wins the claim of the current period."""

    def run() -> None:
        period = period_of(trigger, datetime.now(UTC))
        if period is not None and not claim(job_id, period):
            raise NotOurs(job_id)
        work()

    return run


WINDOWS = (timedelta(minutes=2), timedelta(hours=3), timedelta(days=2), timedelta(days=40))


def period_of(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time of `trigger` not after `now` (the period a run now belongs to)."""
    for window in (*WINDOWS, timedelta(days=400)):
        latest: datetime | None = trigger.get_next_fire_time(None, now - window)
        if latest is None or latest > now:
            continue
        for _ in range(100_000):
            after = trigger.get_next_fire_time(latest, latest + timedelta(microseconds=1))
            if after is None or after > now:
                break
            latest = after
        return latest
    return None


def missed(trigger: CronTrigger, last_run: datetime | None, now: datetime) -> bool:
    """True when the trigger fired (or should have) after `last_run` and not later than `now`.

    A job that never succeeded counts as missed: whatever it would have done is still owed.
    """
    if last_run is None:
        return True
    if last_run.tzinfo is None:
        last_run = last_run.replace(tzinfo=UTC)
    first_after = trigger.get_next_fire_time(last_run, last_run)
    return first_after is not None and first_after <= now


def _last_run(jobs: Jobs, job_id: str) -> datetime | None:
    try:
        return jobs.last_run(job_id)
    except Exception:  # the database may be down at start; the cron schedule still applies
        log.exception("cannot read the last run of job %s; not catching up", job_id)
        return datetime.now(UTC)


def guarded(
    job_id: str, work: Callable[[], None], set_last_run: Callable[[str, datetime], None]
) -> Callable[[], None]:
    """Wrap a job: log its exceptions (never raise into the scheduler), record success only."""

    def run() -> None:
        started = datetime.now(UTC)
        try:
            work()
        except NotOurs:
            return
        except Exception:
            log.exception("job %s failed; it runs again at its next fire time", job_id)
            return
        try:
            set_last_run(job_id, started)
        except Exception:
            log.exception("job %s succeeded but its run time could not be recorded", job_id)

    return run
