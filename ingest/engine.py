"""The engine: parse → match → plan → apply → result, for one spooled file or a set of requests.

The engine changes actions and writes result files; it never writes a file's status. It returns
a `Completed` outcome that the file lifecycle (ingest.files) records in the same transaction as
the changes, so a crash before the commit leaves the actions untouched and the file to process
again.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from ingest import bulk
from ingest import tables as t
from ingest.config import Campaign, Settings
from ingest.errors import FileRejected
from ingest.files import Completed, FileRecord
from ingest.matching import Matched, match
from ingest.planning import Planned, plan
from ingest.reasons import check_rows
from ingest.report import without_result_columns, write_result
from ingest.sql import SqlAdapter, Staged
from parsers.base import ParseLimits, RawTable
from parsers.canonical import Canonical, canonicalise
from parsers.readers import read_table

Progress = Callable[[str, int, int], None]
T = TypeVar("T")


def _noop(stage: str, done: int, total: int) -> None:
    return None


@dataclass
class Job:
    """One run of the pipeline: what it reads, the parsed rows, and the time each step took."""

    file: FileRecord
    settings: Settings
    campaign: Campaign
    canon: Canonical
    now: datetime
    progress: Progress = _noop
    codes: Mapping[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, step: Callable[[], T]) -> T:
        """Run one step and keep how long it took."""
        started = time.perf_counter()
        try:
            return step()
        finally:
            self.timings[name] = round(time.perf_counter() - started, 4)


@dataclass(frozen=True)
class Run:
    """What match and plan produced: each line's outcome and the actions they touched."""

    matched: Matched
    planned: Planned


def campaign_of(settings: Settings, campaign_id: str) -> Campaign:
    """The configured campaign (a file of an unconfigured one is rejected)."""
    campaign = settings.campaign(campaign_id)
    if campaign is None:
        raise FileRejected("UNKNOWN_CAMPAIGN", f"campaign {campaign_id!r} is not configured")
    return campaign


def parse_file(
    settings: Settings, file: FileRecord, progress: Progress = _noop, *, now: datetime | None = None
) -> Job:
    """Read the spooled bytes into the canonical table (file-level errors raise FileRejected)."""
    campaign = campaign_of(settings, file.campaign_id)
    started = time.perf_counter()
    raw = without_result_columns(read_file(settings, file.name, file.spool_path.read_bytes()))
    codes = dict(campaign.disposition_codes)
    canon = canonicalise(raw, codes)
    job = Job(file, settings, campaign, canon, now or datetime.now(UTC), progress, codes)
    job.timings["parse"] = round(time.perf_counter() - started, 4)
    progress("parse", len(raw), len(raw))
    return job


def read_file(settings: Settings, name: str, data: bytes) -> RawTable:
    """A file's bytes as a raw table, within the configured limits."""
    limits = settings.limits
    return read_table(
        name,
        data,
        ParseLimits(limits.max_rows, limits.max_uncompressed_bytes, limits.max_archive_members),
    )


def run_file(conn: Connection, sql: SqlAdapter, job: Job) -> Completed:
    """Match, plan and apply a parsed file, write its result CSV; return the outcome."""
    run = run_steps(conn, sql, job)
    return job.timed("record", lambda: record(job, run))


def run_steps(conn: Connection, sql: SqlAdapter, job: Job, *, apply_changes: bool = True) -> Run:
    """Match, plan and (unless only checking) apply, under the campaign's write lock."""
    if apply_changes:
        sql.campaign_lock(conn, job.campaign.id)
    rows = check_rows(job.canon.rows, job.codes)
    matched = job.timed("match", lambda: match(conn, sql, job.campaign.id, rows, job.now))
    job.progress("match", len(rows), len(rows))
    planned = job.timed("plan", lambda: plan(rows, matched, job.codes, job.progress))
    if apply_changes:
        job.timed("apply", lambda: apply(conn, sql, job, matched, planned))
    return Run(matched, planned)


def apply(conn: Connection, sql: SqlAdapter, job: Job, matched: Matched, planned: Planned) -> None:
    """Write the changed actions and their audit rows from one staging table, sorted by action."""
    arrays = matched.arrays
    bulk.write_items(conn, sql, arrays)
    rounds = planned.audit
    if not rounds:  # nothing applied, so no action changed
        return
    # Sorted by action (stable: an action's changes keep file order), so the updates walk the
    # primary key in order and the audit's action index grows at its end.
    rank = np.empty(len(arrays.ids), dtype=np.int64)
    rank[bulk.id_order(arrays)] = np.arange(len(arrays.ids))
    order = np.argsort(rank[rounds["pos"]], kind="stable")
    pos = rounds["pos"][order]
    rows: dict[str, Any] = {
        "seq": np.arange(len(pos), dtype=np.int64),
        "is_last": np.append(pos[1:] != pos[:-1], True).astype(np.int64),
        **bulk.final_values(arrays, pos),
    }
    rows |= {name: values[order] for name, values in rounds.items() if name != "pos"}
    f = job.file
    constants: dict[str, Any] = {"file_id": f.id or None, "channel": f.channel, "actor": f.sender}
    if not f.id:  # a line number means something only in a file
        del rows["line"]
        constants["line"] = None
    constants["at"] = sql.ts(job.now)
    sets = bulk.UPDATED if arrays.status_known else bulk.UPDATED_WITHOUT_STATUS
    logged = tuple(c for c in rows if c in t.audit.c)
    staged = Staged(t.actions, "id", "action_id", sets, t.audit, logged, rows, constants)
    sql.apply_staged(conn, staged)
    job.progress("write", len(order), len(order))


def summary_of(job: Job, run: Run) -> dict[str, Any]:
    """The JSON summary of a processed file (counts, warnings, timings, the input's dialect)."""
    raw = job.canon.raw
    return {
        "counts": run.planned.outcomes.counts(),
        "warnings": job.canon.warnings,
        "timings": job.timings,
        "rows": len(run.planned.outcomes.line),
        "format": raw.format,
        "encoding": raw.encoding,
        "delimiter": raw.delimiter,
    }


def record(job: Job, run: Run) -> Completed:
    """Write the result CSV and return the file's outcome (the lifecycle records it)."""
    started = time.perf_counter()
    folder = job.settings.path(job.settings.results_dir) / job.campaign.id
    path = folder / f"{job.file.id}.csv"
    write_result(path, job.canon.raw, run.planned.outcomes, run.matched.arrays)
    job.timings["result"] = round(time.perf_counter() - started, 4)
    return Completed(path, summary_of(job, run))


@dataclass(frozen=True)
class DryRun:
    """A file checked without applying: its summary and result CSV, exactly as a real run."""

    summary: dict[str, Any]
    result_csv: bytes


def dry_run(
    conn: Connection,
    sql: SqlAdapter,
    settings: Settings,
    campaign_id: str,
    name: str,
    data: bytes,
    *,
    now: datetime | None = None,
) -> DryRun:
    """Parse, match and plan a file without changing anything or recording it."""
    campaign = campaign_of(settings, campaign_id)
    file = FileRecord("", campaign.id, "dry-run", name, None, Path())
    codes = dict(campaign.disposition_codes)
    canon = canonicalise(without_result_columns(read_file(settings, name, data)), codes)
    job = Job(file, settings, campaign, canon, now or datetime.now(UTC), codes=codes)
    run = run_steps(conn, sql, job, apply_changes=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_result(Path(tmp) / "result.csv", canon.raw, run.planned.outcomes,
                            run.matched.arrays)  # fmt: skip
        summary = {"campaign": campaign.id, "name": name, "dry_run": True, **summary_of(job, run)}
        return DryRun(summary, path.read_bytes())


def apply_rows(
    conn: Connection,
    sql: SqlAdapter,
    settings: Settings,
    campaign: Campaign,
    rows: pd.DataFrame,
    raw: RawTable,
    *,
    channel: str,
    actor: str | None,
    now: datetime | None = None,
) -> Run:
    """Apply canonical rows that did not come in a file (requests), under the same rules."""
    file = FileRecord("", campaign.id, channel, "", actor, Path())
    canon = Canonical(rows=rows, raw=raw, item_level=bool(rows["is_item"].any()))
    codes = dict(campaign.disposition_codes)
    job = Job(file, settings, campaign, canon, now or datetime.now(UTC), codes=codes)
    return run_steps(conn, sql, job)
