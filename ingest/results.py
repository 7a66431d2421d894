"""What returnsd tells a sender: receipts, result CSVs, JSON summaries, and their delivery state."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, func, select

from ingest import blobs
from ingest import tables as t
from ingest.files import FINISHED, FileLifecycle
from ingest.store import Store
from parsers.readers import SUPPORTED_SUFFIXES
from parsers.schema import RESULT_HEADERS

# The columns a result adds after the input's own (defined with the parsers, which must recognise
# them in a result sent back). The action a line resolved to has its own name, ResolvedActionId,
# so that no column repeats the input's ActionId.
RESULT_COLUMNS = RESULT_HEADERS


def reply_name(prefix: str, name: str, ext: str, file_id: str | None = None) -> str:
    """Name of a reply: `result_returns.csv` for `returns.xlsx`, `receipt_returns.txt`, …

    The uploaded name's file-type extensions are replaced (`returns.csv.gz` → `result_returns.csv`,
    never `result_returns.csv.gz.csv`); with `file_id` the id is part of the name
    (`result_returns_<file id>.csv`), so two uploads of one name keep their own replies.
    """
    stem = reply_stem(name)
    return f"{prefix}{stem}_{file_id}{ext}" if file_id else f"{prefix}{stem}{ext}"


def reply_stem(name: str) -> str:
    """`name` without its (at most two) file-type extensions: `returns.csv.gz` → `returns`."""
    stem = name
    for _ in range(2):
        base, dot, suffix = stem.rpartition(".")
        if not dot or not base or "." + suffix.lower() not in SUPPORTED_SUFFIXES:
            break
        stem = base
    return stem


@dataclass(frozen=True)
class FileOutcome:
    """Everything known about one received file, for status pages and replies to its sender."""

    file_id: str
    campaign: str
    channel: str
    name: str
    sender: str | None
    peer: str | None
    size: int
    sha256: str
    status: str
    received_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    duplicate_of: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    result_path: Path | None = None
    summary_doc: dict[str, Any] | None = None
    # Cluster mode: the result CSV another node wrote, read from the database.
    stored_result: Callable[[], bytes | None] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def finished(self) -> bool:
        """True once the file is COMPLETE, FAILED or DUPLICATE."""
        return self.status in FINISHED

    @property
    def result_name(self) -> str:
        """File name of the result CSV given back to the sender."""
        return reply_name("result_", self.name, ".csv")

    @property
    def summary_name(self) -> str:
        """File name of the JSON summary given back to the sender."""
        return reply_name("result_", self.name, ".json")

    @property
    def receipt_name(self) -> str:
        """File name of the receipt given back to the sender."""
        return reply_name("receipt_", self.name, ".txt")

    def result_csv(self) -> bytes | None:
        """The result CSV (original columns + outcome columns), or None if there is none."""
        if self.result_path is None:
            return None
        if self.result_path.exists():
            return self.result_path.read_bytes()
        return self.stored_result() if self.stored_result else None

    def summary(self) -> dict[str, Any]:
        """The JSON summary: ids, sender, status, counts by status and error code, timings."""
        doc: dict[str, Any] = {
            "file_id": self.file_id,
            "campaign": self.campaign,
            "channel": self.channel,
            "name": self.name,
            "sender": self.sender,
            "size": self.size,
            "sha256": self.sha256,
            "status": self.status,
            "received_at": _iso(self.received_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }
        if self.error_code:
            doc["error"] = {"code": self.error_code, "message": self.error_message}
        if self.duplicate_of:
            doc["duplicate_of"] = self.duplicate_of
        if self.meta.get("reprocessed"):
            doc["reprocessed"] = self.meta["reprocessed"]
        if self.summary_doc:
            doc.update({k: v for k, v in self.summary_doc.items() if k not in doc})
        elif self.counts:
            doc["counts"] = self.counts
        return doc

    def receipt_text(self) -> str:
        """A short human-readable receipt (key: value lines)."""
        lines = [
            f"file_id: {self.file_id}",
            f"name: {self.name}",
            f"campaign: {self.campaign}",
            f"channel: {self.channel}",
            f"received_at: {_iso(self.received_at)}",
            f"size: {self.size}",
            f"sha256: {self.sha256}",
            f"status: {self.status}",
        ]
        if self.duplicate_of:
            lines.append(f"duplicate_of: {self.duplicate_of} (nothing was applied again)")
        return "\n".join(lines) + "\n"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


class ResultStore:
    """Reads file records and results; marks replies as delivered."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def outcome(self, file_id: str) -> FileOutcome | None:
        """The outcome of one file, or None if no such file."""
        q = _outcome_query().where(t.files.c.id == file_id)
        with self.store.read() as conn:
            row = conn.execute(q).first()
        return self._outcome(row) if row else None

    def recent(
        self, campaign: str | None = None, status: str | None = None, limit: int | None = 50
    ) -> list[FileOutcome]:
        """The newest files, optionally of one campaign or status (all when limit=None)."""
        q = _filtered(_outcome_query().order_by(t.files.c.id.desc()).limit(limit), campaign, status)
        with self.store.read() as conn:
            return [self._outcome(r) for r in conn.execute(q)]

    def count(self, campaign: str | None = None, status: str | None = None) -> int:
        """How many files `recent` would list without a limit."""
        q = _filtered(select(func.count()).select_from(t.files), campaign, status)
        with self.store.read() as conn:
            return int(conn.scalar(q) or 0)

    def undelivered(self, channels: set[str], limit: int = 100) -> list[FileOutcome]:
        """Finished files of these channels whose result has not been given back yet."""
        q = (
            _outcome_query()
            .where(
                t.files.c.delivered_at.is_(None),
                t.files.c.status.in_(sorted(FINISHED)),
                t.files.c.channel.in_(sorted(channels)),
            )
            .order_by(t.files.c.id)
            .limit(limit)
        )
        with self.store.read() as conn:
            return [self._outcome(r) for r in conn.execute(q)]

    def _outcome(self, row: Row[Any]) -> FileOutcome:
        outcome = _to_outcome(row)
        return replace(outcome, stored_result=lambda: self.stored_result(outcome.file_id))

    def stored_result(self, file_id: str) -> bytes | None:
        """The result CSV of a file kept in the database (cluster mode), or None."""
        with self.store.read() as conn:
            return blobs.get(conn, file_id, blobs.RESULT)

    def mark_delivered(self, file_id: str) -> None:
        """Record that the sender got the result."""
        FileLifecycle(self.store).deliver(file_id)


def _filtered(q: Any, campaign: str | None, status: str | None) -> Any:
    if campaign:
        q = q.where(t.files.c.campaign_id == campaign)
    if status:
        q = q.where(t.files.c.status == status)
    return q


def _outcome_query() -> Any:
    return select(t.files, t.results.c.path.label("result_path"), t.results.c.summary).outerjoin(
        t.results, t.results.c.file_id == t.files.c.id
    )


def _to_outcome(row: Row[Any]) -> FileOutcome:
    m = row._mapping
    return FileOutcome(
        file_id=m["id"],
        campaign=m["campaign_id"],
        channel=m["channel"],
        name=m["name"],
        sender=m["sender"],
        peer=m["peer"],
        size=m["size"],
        sha256=m["sha256"],
        status=m["status"],
        received_at=m["received_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        error_code=m["error_code"],
        error_message=m["error_message"],
        duplicate_of=m["duplicate_of"],
        counts=_json(m["counts"]) or {},
        meta=_json(m["meta"]) or {},
        result_path=Path(m["result_path"]) if m["result_path"] else None,
        summary_doc=_json(m["summary"]),
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
