"""The queue behind impact's `PUT`/`DELETE …/Actions`: store each request, show it, purge it.

A request is stored as one `api_submissions` row (status Queued) before it is answered; that
row is also what `GET …/APISubmissions/{BatchId}` shows. `ingest.applier` takes queued rows in
arrival order and applies them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from ingest import tables as t
from ingest.config import Settings
from ingest.store import Store

GROUP_WAIT = 0.002  # how often a request waiting for another's group commit looks again


class SubmissionType(StrEnum):
    """What a submission asks for (impact's `Type`)."""

    MODIFICATION = "Modification"  # PUT …/Actions
    REVERSAL = "Reversal"  # DELETE …/Actions


class SubmissionStatus(StrEnum):
    """Where a submission is (impact's `Status`)."""

    QUEUED = "Queued"
    IN_PROGRESS = "In Progress"
    COMPLETE = "Complete"


@dataclass(frozen=True)
class Submission:
    """One stored request, as `GET …/APISubmissions/{BatchId}` shows it."""

    seq: int
    batch_id: str
    sid: str
    token_id: str
    campaign_id: str | None
    type: SubmissionType
    action_id: str | None
    action_tracker_id: str | None
    order_id: str | None
    payload: str
    fields: list[tuple[str, str]]
    campaigns: list[str]
    status: SubmissionStatus
    submitted_at: datetime
    completed_at: datetime | None
    error_type: str | None
    error_reason: str | None
    outcome: dict[str, Any] | None


def new_batch_id() -> str:
    """A fresh BatchId in impact's shape ('A-' and a UUID)."""
    return f"A-{uuid.uuid4()}"


def first_field(fields: Sequence[tuple[str, str]], *names: str) -> str | None:
    """The first non-blank value of any of these parameter names (case-insensitive), or None."""
    wanted = {n.lower() for n in names}
    for name, value in fields:
        if name.lower() in wanted and value.strip():
            return value.strip()
    return None


@dataclass
class _Pending:
    """A request waiting for the group commit that stores it."""

    row: dict[str, Any]
    done: threading.Event
    error: BaseException | None = None


class Submissions:
    """Store and read submissions (the channel's side of the queue).

    Concurrent `enqueue` calls share commits: whoever finds no commit in progress writes every
    request waiting at that moment in one transaction (a group commit), the others wait for it,
    so one fsync stores many requests and each caller still returns only once its row is
    committed.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[_Pending] = []
        self._mutex = threading.Lock()
        self._writer = threading.Lock()

    def enqueue(
        self,
        *,
        sid: str,
        token_id: str,
        campaigns: Sequence[str],
        kind: SubmissionType,
        fields: Sequence[tuple[str, str]],
        payload: str,
        campaign_id: str | None = None,
    ) -> str:
        """Store a request durably (committed on return); return its BatchId."""
        batch_id = new_batch_id()
        row = {
            "batch_id": batch_id,
            "sid": sid,
            "token_id": token_id,
            "campaign_id": campaign_id,
            "type": kind.value,
            "action_id": (first_field(fields, "ActionId") or "")[:64] or None,
            "action_tracker_id": (first_field(fields, "ActionTrackerId") or "")[:16] or None,
            "order_id": first_field(fields, "OrderId", "Oid"),
            "payload": payload,
            "params": {"fields": [list(f) for f in fields], "campaigns": list(campaigns)},
            "status": SubmissionStatus.QUEUED.value,
            "submitted_at": datetime.now(UTC),
        }
        self._commit(_Pending(row, threading.Event()))
        return batch_id

    def _commit(self, mine: _Pending) -> None:
        """Return once `mine` is committed (by this thread or by another's group commit)."""
        with self._mutex:
            self._waiting.append(mine)
        while not mine.done.is_set():
            if not self._writer.acquire(blocking=False):
                mine.done.wait(GROUP_WAIT)
                continue
            try:
                with self._mutex:
                    group, self._waiting = self._waiting, []
                if group:
                    self._write(group)
            finally:
                self._writer.release()
        if mine.error is not None:
            raise mine.error

    def _write(self, group: list[_Pending]) -> None:
        try:
            with self.store.begin() as conn:
                conn.execute(t.api_submissions.insert(), [p.row for p in group])
        except Exception as exc:  # noqa: BLE001 - handed to every waiter, each raises it
            for p in group:
                p.error = exc
        for p in group:
            p.done.set()

    def get(self, sid: str, batch_id: str) -> Submission | None:
        """One submission of an account, or None."""
        q = select(t.api_submissions).where(
            t.api_submissions.c.batch_id == batch_id, t.api_submissions.c.sid == sid
        )
        with self.store.read() as conn:
            row = conn.execute(q).mappings().first()
        return submission_of(row) if row else None

    def recent(self, sid: str, limit: int = 100, offset: int = 0) -> tuple[list[Submission], int]:
        """An account's submissions, newest first, one page; and how many there are in all."""
        from sqlalchemy import func

        c = t.api_submissions.c
        q = select(t.api_submissions).where(c.sid == sid).order_by(c.seq.desc())
        with self.store.read() as conn:
            total = int(conn.scalar(select(func.count()).where(c.sid == sid)) or 0)
            rows = conn.execute(q.limit(limit).offset(offset)).mappings().all()
        return [submission_of(r) for r in rows], total

    def pending(self) -> int:
        """How many submissions are not Complete yet."""
        from sqlalchemy import func

        c = t.api_submissions.c
        q = select(func.count()).where(c.status != SubmissionStatus.COMPLETE.value)
        with self.store.read() as conn:
            return int(conn.scalar(q) or 0)


def submission_of(row: Any) -> Submission:
    """An `api_submissions` row as a Submission."""
    params = row["params"] or {}
    return Submission(
        seq=row["seq"],
        batch_id=row["batch_id"],
        sid=row["sid"],
        token_id=row["token_id"],
        campaign_id=row["campaign_id"],
        type=SubmissionType(row["type"]),
        action_id=row["action_id"],
        action_tracker_id=row["action_tracker_id"],
        order_id=row["order_id"],
        payload=row["payload"],
        fields=[(str(k), str(v)) for k, v in params.get("fields", [])],
        campaigns=list(params.get("campaigns", [])),
        status=SubmissionStatus(row["status"]),
        submitted_at=row["submitted_at"],
        completed_at=row["completed_at"],
        error_type=row["error_type"],
        error_reason=row["error_reason"],
        outcome=row["outcome"],
    )


def purge_submissions(settings: Settings, store: Store, now: datetime | None = None) -> int:
    """Delete Complete submissions older than `retention_days` (kept as long as results)."""
    from datetime import timedelta

    from sqlalchemy import delete

    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    c = t.api_submissions.c
    q = delete(t.api_submissions).where(
        c.status == SubmissionStatus.COMPLETE.value, c.completed_at < cutoff
    )
    with store.begin() as conn:
        return int(conn.execute(q).rowcount or 0)
