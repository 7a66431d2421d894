"""Scheduled reports: a saved listing view mailed daily, weekly or monthly at a time in a time
zone; each run is recorded; a schedule that fails three times in a row is paused.

`run_due` is what the scheduler calls (every minute, wired by the composition root); mail goes
through the `send_mail` the composition root lends (the relay, or the outbox without one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select, update

from console.context import ConsoleContext
from console.exports import FORMATS, temp_path, write_pdf, write_xlsx
from console.views import parse_view
from ingest import queries
from ingest import tables as t
from ingest.users import user_by_id

log = logging.getLogger("returnsd.console.reports")
FREQUENCIES = ("daily", "weekly", "monthly")
PAUSE_AFTER = 3
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class ScheduleForm:
    """A new schedule as the form gives it, validated by `problems`."""

    name: str
    page: str
    query: str
    format: str
    frequency: str
    at_time: str
    timezone: str
    weekday: int | None
    monthday: int | None
    recipients: list[str]
    skip_if_empty: bool

    def problems(self) -> list[str]:
        """What is wrong with the form, all at once."""
        out = []
        if not self.name:
            out.append("Give the report a name")
        if self.format not in FORMATS:
            out.append("Format must be CSV, XLSX or PDF")
        if self.frequency not in FREQUENCIES:
            out.append("Frequency must be daily, weekly or monthly")
        try:
            time.fromisoformat(self.at_time)
        except ValueError:
            out.append("Time must be HH:MM")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            out.append(f"Unknown time zone {self.timezone!r}")
        if self.frequency == "weekly" and self.weekday is None:
            out.append("Choose the day of the week")
        if self.frequency == "monthly" and not (self.monthday and 1 <= self.monthday <= 28):
            out.append("Choose a day of the month from 1 to 28")
        if not self.recipients or any("@" not in r for r in self.recipients):
            out.append("Give one or more recipient addresses, separated by commas")
        return out


def next_run(
    frequency: str, at_time: str, tz_name: str, weekday: int | None, monthday: int | None,
    after: datetime,
) -> datetime:  # fmt: skip
    """The first run strictly after `after` (UTC), at `at_time` local time in `tz_name`."""
    tz = ZoneInfo(tz_name)
    at = time.fromisoformat(at_time)
    day = after.astimezone(tz).date()
    for _ in range(400):
        if _runs_on(frequency, day, weekday, monthday):
            moment = datetime.combine(day, at, tz).astimezone(UTC)
            if moment > after:
                return moment
        day += timedelta(days=1)
    raise ValueError("no run time within a year")


def _runs_on(frequency: str, day: date, weekday: int | None, monthday: int | None) -> bool:
    if frequency == "weekly":
        return day.weekday() == weekday
    if frequency == "monthly":
        return day.day == monthday
    return True


def add_schedule(ctx: ConsoleContext, user_id: int, form: ScheduleForm) -> int:
    """Store a new schedule; return its id."""
    now = datetime.now(UTC)
    first = next_run(form.frequency, form.at_time, form.timezone, form.weekday, form.monthday,
                     now)  # fmt: skip
    with ctx.store.begin() as conn:
        done = conn.execute(t.report_schedules.insert(), {
            "user_id": user_id, "name": form.name, "page": form.page, "query": form.query,
            "format": form.format, "frequency": form.frequency, "at_time": form.at_time,
            "timezone": form.timezone, "weekday": form.weekday, "monthday": form.monthday,
            "recipients": form.recipients, "skip_if_empty": int(form.skip_if_empty),
            "failures": 0, "paused": 0, "next_run_at": first, "created_at": now})  # fmt: skip
        return int(done.inserted_primary_key[0])  # type: ignore[index]


def schedules_of(ctx: ConsoleContext, user_id: int) -> list[dict[str, Any]]:
    """A user's schedules with their last ten runs each, newest first."""
    s, r = t.report_schedules.c, t.report_runs.c
    with ctx.store.read() as conn:
        rows = conn.execute(select(t.report_schedules).where(s.user_id == user_id)
                            .order_by(s.id)).mappings().all()  # fmt: skip
        out = []
        for row in rows:
            runs = conn.execute(select(t.report_runs).where(r.schedule_id == row["id"])
                                .order_by(r.id.desc()).limit(10)).mappings().all()  # fmt: skip
            out.append({**row, "runs": list(runs)})
    return out


def delete_schedule(ctx: ConsoleContext, user_id: int, schedule_id: int) -> bool:
    """Remove one of the user's schedules and its runs; False when it is not theirs."""
    s = t.report_schedules.c
    with ctx.store.begin() as conn:
        own = conn.scalar(select(s.id).where(s.id == schedule_id, s.user_id == user_id))
        if own is None:
            return False
        conn.execute(t.report_runs.delete().where(t.report_runs.c.schedule_id == schedule_id))
        conn.execute(t.report_schedules.delete().where(s.id == schedule_id))
    return True


def resume_schedule(ctx: ConsoleContext, user_id: int, schedule_id: int) -> bool:
    """Resume a paused schedule (its failure count starts again)."""
    s = t.report_schedules.c
    with ctx.store.begin() as conn:
        done = conn.execute(update(t.report_schedules)
                            .where(s.id == schedule_id, s.user_id == user_id)
                            .values(paused=0, failures=0))  # fmt: skip
    return bool(done.rowcount)


def run_due(ctx: ConsoleContext, now: datetime | None = None) -> list[tuple[int, str]]:
    """Run every schedule whose time has come; return (schedule id, run status) of each."""
    now = now or datetime.now(UTC)
    s = t.report_schedules.c
    with ctx.store.read() as conn:
        due = conn.execute(select(t.report_schedules).where(s.paused == 0, s.next_run_at <= now)
                           .order_by(s.id)).mappings().all()  # fmt: skip
    return [(row["id"], _run_one(ctx, dict(row), now)) for row in due]


def _run_one(ctx: ConsoleContext, row: dict[str, Any], now: datetime) -> str:
    status, rows, message = "FAILED", 0, None
    try:
        status, rows = _produce(ctx, row)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded; three in a row pause it
        log.warning("scheduled report %s failed: %s", row["id"], exc)
        message = f"{type(exc).__name__}: {exc}"
    failures = row["failures"] + 1 if status == "FAILED" else 0
    paused = failures >= PAUSE_AFTER
    if paused:
        message = f"{message} — paused after {failures} failures in a row"
    nxt = next_run(row["frequency"], row["at_time"], row["timezone"], row["weekday"],
                   row["monthday"], now)  # fmt: skip
    with ctx.store.begin() as conn:
        conn.execute(t.report_runs.insert(), {"schedule_id": row["id"], "at": now,
                     "status": status, "rows": rows, "message": message})  # fmt: skip
        conn.execute(update(t.report_schedules).where(t.report_schedules.c.id == row["id"])
                     .values(failures=failures, paused=int(paused), next_run_at=nxt))  # fmt: skip
    return status


def _produce(ctx: ConsoleContext, row: dict[str, Any]) -> tuple[str, int]:
    """Build the report of a schedule and mail it; ("SENT" | "SKIPPED", rows)."""
    if ctx.send_mail is None:
        raise RuntimeError("no mail relay or outbox is configured")
    with ctx.store.read() as conn:
        user = user_by_id(conn, row["user_id"])
    if user is None or user.disabled:
        raise RuntimeError("the schedule's owner is disabled")
    view = parse_view(ctx.settings, user, row["page"], dict(parse_qsl(row["query"])))
    fmt = row["format"]
    path = temp_path("." + fmt)
    try:
        with ctx.store.read() as conn:
            rows = queries.iter_actions(conn, view.filter, sort=view.sort,
                                        descending=view.descending)  # fmt: skip
            title = f"{row['name']} — {view.campaign.name}"
            n = _write(fmt, rows, path, title, view.describe())
        if n == 0 and row["skip_if_empty"]:
            return "SKIPPED", 0
        ctx.send_mail(_mail(ctx, row, path.read_bytes(), n))
        return "SENT", n
    finally:
        path.unlink(missing_ok=True)


def _write(fmt: str, rows: Any, path: Any, title: str, filters: list[tuple[str, str]]) -> int:
    if fmt == "xlsx":
        return write_xlsx(rows, path, "actions")
    if fmt == "pdf":
        return write_pdf(rows, path, title, filters)
    from console.exports import csv_chunks

    n = 0

    def counted() -> Any:
        nonlocal n
        for r in rows:
            n += 1
            yield r

    with open(path, "wb") as f:
        for chunk in csv_chunks(counted()):
            f.write(chunk)
    return n


def _mail(ctx: ConsoleContext, row: dict[str, Any], data: bytes, n: int) -> EmailMessage:
    smtp = ctx.settings.channels.smtp
    msg = EmailMessage()
    msg["From"] = smtp.from_address if smtp else "returns@returns.localhost"
    msg["To"] = ", ".join(row["recipients"])
    msg["Subject"] = f"returnsd report: {row['name']} ({n:,} actions)"
    msg.set_content(f"Your scheduled report {row['name']!r} is attached: {n:,} actions.\n")
    fmt = row["format"]
    maintype, subtype = FORMATS[fmt].split("/", 1)
    msg.add_attachment(data, maintype=maintype, subtype=subtype,
                       filename=f"{row['name'].replace(' ', '_')}.{fmt}")  # fmt: skip
    return msg
