"""The result of a Salesforce message: one line per notification, the notification's own
columns first (NotificationId, RecordId, Object, StatusValue, Modstamp, Identifier), then the
result columns every returns file gets; and the file's summary with the same counts."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from ingest.config import Settings
from ingest.files import Completed, FileRecord
from ingest.operations import Change, ChangeOutcome
from ingest.report import neutralise
from ingest.results import RESULT_COLUMNS
from ingest.salesforce_message import Notification, OutboundMessage

UNCHANGED, ERROR = "UNCHANGED", "ERROR"
MESSAGE_COLUMNS = ("NotificationId", "RecordId", "Object", "StatusValue", "Modstamp", "Identifier")


@dataclass(frozen=True)
class Line:
    """One notification: what it names, and either the change it asks for or its outcome."""

    notification: Notification
    record_id: str | None
    status_value: str | None
    modstamp: datetime | None
    identifier: str | None
    change: Change | None = None
    outcome: ChangeOutcome | None = None
    repeat: bool = False  # a redelivery: its notification id was processed before


def record(
    settings: Settings,
    rec: FileRecord,
    message: OutboundMessage,
    lines: Sequence[Line],
    timings: dict[str, float],
) -> Completed:
    """Write the result CSV (one line per notification) and return the file's outcome."""
    started = time.perf_counter()
    path = settings.path(settings.results_dir) / rec.campaign_id / f"{rec.id}.csv"
    write_result(path, lines)
    timings["result"] = round(time.perf_counter() - started, 4)
    outcomes = [line.outcome for line in lines if line.outcome is not None]
    summary = {
        "counts": counts(outcomes),
        "warnings": [],
        "timings": timings,
        "rows": len(lines),
        "format": "salesforce",
        "salesforce": {
            "organization_id": message.organization_id,
            "action_id": message.action_id,
            "notifications": len(message.notifications),
        },
    }
    return Completed(path, summary)


def counts(outcomes: Sequence[ChangeOutcome]) -> dict[str, Any]:
    """Counts by status and error code, as a file's summary gives them."""
    by_code: dict[str, int] = {}
    for o in outcomes:
        if o.error_code:
            by_code[o.error_code] = by_code.get(o.error_code, 0) + 1
    return {
        "lines": len(outcomes),
        "applied": sum(o.status == "APPLIED" for o in outcomes),
        "unchanged": sum(o.status == UNCHANGED for o in outcomes),
        "errors": sum(o.status == ERROR for o in outcomes),
        "by_error_code": dict(sorted(by_code.items())),
    }


def write_result(path: Path, lines: Sequence[Line]) -> Path:
    """The result CSV: the notification's own columns, then returnsd's result columns."""
    rows = [_cells(k, line) for k, line in enumerate(lines, start=1)]
    names = [*MESSAGE_COLUMNS, *RESULT_COLUMNS]
    columns = [neutralise(pa.array([r[i] for r in rows], pa.string())) for i in range(len(names))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pacsv.write_csv(
        pa.Table.from_arrays(columns, names=names),
        str(tmp),
        pacsv.WriteOptions(quoting_style="needed"),
    )
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def _cells(k: int, line: Line) -> list[str]:
    o = line.outcome
    assert o is not None
    stamp = _iso(line.modstamp) if line.modstamp else ""
    return [
        line.notification.id,
        line.record_id or "",
        line.notification.sobject.type,
        line.status_value or "",
        stamp,
        line.identifier or "",
        str(k),
        o.status,
        o.error_type or "",
        o.error_code or "",
        o.message or "",
        (o.action_id or "") if o.status != ERROR or o.state else "",
        o.state or "",
        o.old_amount or "",
        o.new_amount or "",
        o.old_payout or "",
        o.new_payout or "",
    ]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
