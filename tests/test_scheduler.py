"""The scheduler catches up missed runs once, survives failing jobs, and never overlaps a job."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from ingest.config import Settings
from ingest.errors import ConfigError
from scheduler import Jobs, build_scheduler, missed, pull_job_id
from tests.conftest import campaign_dict


class Recorder:
    """Job callables that record their calls, and a dict standing in for the `job_runs` table."""

    def __init__(self, last: dict[str, datetime | None] | None = None) -> None:
        self.runs: dict[str, datetime] = {k: v for k, v in (last or {}).items() if v is not None}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def record(self, what: str) -> None:
        """Note one call."""
        with self._lock:
            self.calls.append(what)

    def count(self, what: str) -> int:
        """How many times `what` ran (or was attempted)."""
        with self._lock:
            return self.calls.count(what)

    def jobs(self, **override: Any) -> Jobs:
        """A Jobs whose callables record here; keyword arguments replace some of them."""
        parts: dict[str, Any] = {
            "pull": lambda cid: self.record(f"pull:{cid}"),
            "lock": lambda: self.record("lock"),
            "retention": lambda: self.record("retention"),
            "last_run": self.runs.get,
            "set_last_run": self.runs.__setitem__,
        }
        parts.update(override)
        return Jobs(**parts)


@pytest.fixture
def run_scheduler() -> Iterator[Callable[..., BackgroundScheduler]]:
    """Build and start a scheduler; it is shut down (threads joined) at teardown."""
    started: list[BackgroundScheduler] = []

    def start(
        settings: Settings, jobs: Jobs, *listen: tuple[Callable[[Any], None], int]
    ) -> BackgroundScheduler:
        scheduler = build_scheduler(settings, jobs)
        for callback, mask in listen:  # before start: the first runs happen at once
            scheduler.add_listener(callback, mask)
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        if scheduler.running:
            scheduler.shutdown(wait=True)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `cond` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached before the deadline")
        time.sleep(0.02)


def far_daily() -> str:
    """A daily cron that will not fire during the test (about twelve hours from now, UTC)."""
    return f"0 {(datetime.now(UTC).hour + 12) % 24} * * *"


NOW = datetime.now(UTC)


def test_missed_run_is_caught_up_once_at_start(
    make_settings: Callable[..., Settings],
    run_scheduler: Callable[..., BackgroundScheduler],
) -> None:
    rec = Recorder({"lock": NOW - timedelta(days=2), "retention": NOW})
    scheduler = run_scheduler(make_settings(lock_schedule=far_daily()), rec.jobs())
    wait_for(lambda: rec.runs["lock"] > NOW - timedelta(days=1))
    job = scheduler.get_job("lock")
    assert job is not None and job.next_run_time > datetime.now(UTC) + timedelta(hours=1)
    assert rec.count("lock") == 1  # two missed fire times, one run
    assert rec.count("retention") == 0


def test_job_that_did_not_miss_waits_for_its_time(
    make_settings: Callable[..., Settings],
    run_scheduler: Callable[..., BackgroundScheduler],
) -> None:
    rec = Recorder({"lock": NOW, "retention": NOW})
    scheduler = run_scheduler(make_settings(lock_schedule=far_daily()), rec.jobs())
    job = scheduler.get_job("lock")
    assert job is not None and job.next_run_time > datetime.now(UTC) + timedelta(hours=1)
    assert rec.calls == []


def test_missed_compares_the_first_fire_time_after_the_last_run() -> None:
    daily = CronTrigger.from_crontab("0 2 * * *", timezone=UTC)
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert missed(daily, None, now)
    assert missed(daily, datetime(2025, 3, 8, 2, 0, 5, tzinfo=UTC), now)
    assert not missed(daily, datetime(2025, 3, 10, 2, 0, 0, tzinfo=UTC), now)
    assert not missed(daily, datetime(2025, 3, 10, 2, 0, 1, tzinfo=UTC), now)
    assert missed(daily, datetime(2025, 3, 10, 1, 59, 59, tzinfo=UTC), now)


def test_failing_job_is_logged_and_not_recorded(
    make_settings: Callable[..., Settings],
    run_scheduler: Callable[..., BackgroundScheduler],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="returnsd.scheduler")
    rec = Recorder()

    def broken_lock() -> None:
        rec.record("lock")
        raise RuntimeError("database gone")

    finished: list[str] = []
    scheduler = run_scheduler(
        make_settings(lock_schedule=far_daily()),
        rec.jobs(lock=broken_lock),
        (lambda event: finished.append(event.job_id), EVENT_JOB_EXECUTED),
    )
    wait_for(lambda: "lock" in finished and "retention" in rec.runs)
    scheduler.modify_job("lock", next_run_time=datetime.now(UTC))  # the scheduler still runs it
    wait_for(lambda: rec.count("lock") == 2)
    assert scheduler.running
    assert "lock" not in rec.runs
    assert "job lock failed" in caplog.text and "database gone" in caplog.text


def test_job_defaults_are_applied(
    make_settings: Callable[..., Settings],
    run_scheduler: Callable[..., BackgroundScheduler],
) -> None:
    rec = Recorder({"lock": NOW, "retention": NOW})
    scheduler = run_scheduler(make_settings(), rec.jobs())
    for job in scheduler.get_jobs():
        assert job.misfire_grace_time is None
        assert job.coalesce is True
        assert job.max_instances == 1


def test_slow_job_is_not_started_twice(
    make_settings: Callable[..., Settings],
    run_scheduler: Callable[..., BackgroundScheduler],
) -> None:
    rec = Recorder({"retention": NOW})
    release = threading.Event()
    refused: list[str] = []

    def slow_lock() -> None:
        rec.record("lock")
        release.wait(10)

    try:
        scheduler = run_scheduler(
            make_settings(lock_schedule=far_daily()), rec.jobs(lock=slow_lock)
        )
        scheduler.add_listener(
            lambda event: refused.append(event.job_id),
            EVENT_JOB_MAX_INSTANCES,
        )
        wait_for(lambda: rec.count("lock") == 1)
        scheduler.modify_job("lock", next_run_time=datetime.now(UTC))
        wait_for(lambda: "lock" in refused)
    finally:
        release.set()
    wait_for(lambda: "lock" in rec.runs)
    assert rec.count("lock") == 1


def pull_settings(make_settings: Callable[..., Settings], tmp_path: Path, **extra: Any) -> Settings:
    """Settings with an `acme` campaign pulling from SFTP daily at 02:00 in its time zone."""
    (tmp_path / "pw").write_text("secret\n")
    pull = {
        "url": "sftp://files.example.com/out",
        "user": "returns",
        "password": {"file": str(tmp_path / "pw")},
        "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB",
        "schedule": "0 2 * * *",
    }
    return make_settings(campaigns=[campaign_dict(pull=pull)], **extra)


def test_pull_job_per_campaign_in_its_time_zone(
    make_settings: Callable[..., Settings],
    run_scheduler: Callable[..., BackgroundScheduler],
    tmp_path: Path,
) -> None:
    settings = pull_settings(make_settings, tmp_path, channels={"pull": {"enabled": True}})
    rec = Recorder({"lock": NOW, "retention": NOW})  # the pull never ran: caught up at start
    scheduler = run_scheduler(settings, rec.jobs())
    job = scheduler.get_job(pull_job_id("acme"))
    assert job is not None and str(job.trigger.timezone) == "America/New_York"
    wait_for(lambda: pull_job_id("acme") in rec.runs)
    assert rec.count("pull:acme") == 1


def test_no_pull_job_when_the_pull_channel_is_off(
    make_settings: Callable[..., Settings],
    run_scheduler: Callable[..., BackgroundScheduler],
    tmp_path: Path,
) -> None:
    settings = pull_settings(make_settings, tmp_path, channels={"pull": {"enabled": False}})
    scheduler = run_scheduler(settings, Recorder({"lock": NOW, "retention": NOW}).jobs())
    assert scheduler.get_job(pull_job_id("acme")) is None


def test_bad_cron_is_a_config_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="lock_schedule"):
        build_scheduler(make_settings(lock_schedule="61 * * * *"), Recorder().jobs())
