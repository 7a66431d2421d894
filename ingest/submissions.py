"""The queue behind impact's `PUT`/`DELETE …/Actions`: store each request, then apply in order.

A request is stored as one `api_submissions` row (status Queued) before it is answered; that
row is also what `GET …/APISubmissions/{BatchId}` shows. The `Applier` takes queued rows in
arrival order, many at a time, turns each into a `Change` and applies them through the one
operation layer (`ingest.operations.apply_changes`), recording every outcome (Complete, with
ErrorType/ErrorReason) in the same transaction as the changes. Marking a row Complete is
conditional on it not being Complete yet, so a batch taken twice (a restart, a second node)
is undone instead of applied twice.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from ingest import tables as t
from ingest.config import Settings
from ingest.errors import FileRejected, Transient
from ingest.operations import Change, ChangeOutcome, ItemEdit, Operation, Role, apply_changes
from ingest.store import Store

log = logging.getLogger(f"returnsd.{__name__}")
CHANNEL = "api"
GROUP_WAIT = 0.002  # how often a request waiting for another's group commit looks again
IDLE_SECONDS = 0.1  # how often an idle applier looks for new submissions
# After a batch that was not full, let requests gather this long: a batch costs about the same
# for 1 request as for 500, and the intake writes freely meanwhile.
LINGER_SECONDS = 0.25


class SubmissionType(StrEnum):
    """What a submission asks for (impact's `Type`)."""

    MODIFICATION = "Modification"  # PUT …/Actions
    REVERSAL = "Reversal"  # DELETE …/Actions


class SubmissionStatus(StrEnum):
    """Where a submission is (impact's `Status`)."""

    QUEUED = "Queued"
    IN_PROGRESS = "In Progress"
    COMPLETE = "Complete"


ERROR_TYPES = {"Validation": "Validation", "Contract": "Contract Error"}  # impact's spelling


class AlreadyApplied(Transient):
    """Another applier completed part of this batch first; the batch is undone and retaken."""


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


def _first(fields: Sequence[tuple[str, str]], *names: str) -> str | None:
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
            "action_id": (_first(fields, "ActionId") or "")[:64] or None,
            "action_tracker_id": (_first(fields, "ActionTrackerId") or "")[:16] or None,
            "order_id": _first(fields, "OrderId", "Oid"),
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
        return _submission(row) if row else None

    def recent(self, sid: str, limit: int = 100, offset: int = 0) -> tuple[list[Submission], int]:
        """An account's submissions, newest first, one page; and how many there are in all."""
        from sqlalchemy import func

        c = t.api_submissions.c
        q = select(t.api_submissions).where(c.sid == sid).order_by(c.seq.desc())
        with self.store.read() as conn:
            total = int(conn.scalar(select(func.count()).where(c.sid == sid)) or 0)
            rows = conn.execute(q.limit(limit).offset(offset)).mappings().all()
        return [_submission(r) for r in rows], total

    def pending(self) -> int:
        """How many submissions are not Complete yet."""
        from sqlalchemy import func

        c = t.api_submissions.c
        q = select(func.count()).where(c.status != SubmissionStatus.COMPLETE.value)
        with self.store.read() as conn:
            return int(conn.scalar(q) or 0)


def _submission(row: Any) -> Submission:
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


ITEM_FIELD = re.compile(r"^(?:item)?(sku|quantity|amount|subtotal|price|category)(\d{0,3})$", re.I)
ITEM_KEYS = {"sku": "sku", "quantity": "quantity", "amount": "amount", "subtotal": "amount",
             "price": "price", "category": "category"}  # fmt: skip


def items_of(fields: Sequence[tuple[str, str]]) -> tuple[ItemEdit, ...]:
    """The item edits of a PUT: `Sku`/`Quantity`/`Amount`/`Category`, then `Sku2`, `Quantity2`…

    `Amount` without a number is the first item's amount when the request names a Sku (impact's
    item-level update), and the action's amount otherwise.
    """
    matched = [(m, value) for name, value in fields if (m := ITEM_FIELD.match(name))]
    has_sku = any(m.group(1).lower() == "sku" for m, _ in matched)
    found: dict[int, dict[str, str]] = {}
    for m, value in matched:
        if m.group(1).lower() == "amount" and not m.group(2) and not has_sku:
            continue  # the action's own Amount
        index = int(m.group(2) or 1)
        found.setdefault(index, {})[ITEM_KEYS[m.group(1).lower()]] = value.strip()
    edits = []
    for index in sorted(found):
        item = found[index]
        if not item.get("sku"):
            continue
        edits.append(
            ItemEdit(
                sku=item["sku"],
                quantity=item.get("quantity") or "",
                amount=item.get("amount") or None,
                price=item.get("price") or None,
                category=item.get("category") or None,
            )
        )
    return tuple(edits)


def change_of(sub: Submission) -> Change:
    """The operation-layer change a submission asks for (the engine judges every value)."""
    f = sub.fields
    items = items_of(f) if sub.type is SubmissionType.MODIFICATION else ()
    if sub.type is SubmissionType.REVERSAL:
        operation, reason = Operation.REVERSE, _first(f, "DispositionCode", "Reason")
    else:
        operation, reason = Operation.ROW, _first(f, "Reason", "DispositionCode")
    action_id = _first(f, "ActionId")
    return Change(
        action_id=action_id,
        operation=operation,
        reason=reason,
        amount=None if items else _first(f, "Amount"),
        customer_status=_first(f, "CustomerStatus"),
        items=items,
        currency=_first(f, "CurrencyCode", "Currency"),
        order_id=None if action_id else _first(f, "OrderId", "Oid"),
        tracker=None if action_id else _first(f, "ActionTrackerId"),
        require_reason=True,  # impact requires Reason (PUT) and DispositionCode (DELETE)
    )


@dataclass(frozen=True)
class Recorded:
    """What the applier writes back for one submission."""

    seq: int
    campaign_id: str | None
    error_type: str | None
    error_reason: str | None
    outcome: dict[str, Any] | None


def recorded(sub: Submission, campaign_id: str | None, outcome: ChangeOutcome) -> Recorded:
    """A submission's record from its operation outcome (ErrorReason is the error code)."""
    kind = ERROR_TYPES.get(outcome.error_type or "", outcome.error_type)
    return Recorded(sub.seq, campaign_id, kind, outcome.error_code, outcome.as_dict())


def failed(sub: Submission, code: str, message: str, kind: str = "System") -> Recorded:
    """A submission that could not reach the engine (an unconfigured campaign, a crash)."""
    doc = {"action_id": sub.action_id, "status": "ERROR", "error_code": code,
           "error_type": kind, "message": message}  # fmt: skip
    return Recorded(sub.seq, sub.campaign_id, kind, code, doc)


def write_records(conn: Connection, records: Sequence[Recorded]) -> None:
    """Mark submissions Complete; raise AlreadyApplied if one already was (undoes the batch)."""
    if not records:
        return
    c = t.api_submissions.c
    q = (
        update(t.api_submissions)
        .where(c.seq == bindparam("k_seq"), c.status != SubmissionStatus.COMPLETE.value)
        .values(
            status=SubmissionStatus.COMPLETE.value,
            completed_at=bindparam("k_done"),
            campaign_id=bindparam("k_campaign"),
            error_type=bindparam("k_type"),
            error_reason=bindparam("k_reason"),
            outcome=bindparam("k_outcome"),
        )
    )
    now = datetime.now(UTC)
    rows = [{"k_seq": r.seq, "k_done": now, "k_campaign": r.campaign_id, "k_type": r.error_type,
             "k_reason": r.error_reason, "k_outcome": r.outcome} for r in records]  # fmt: skip
    done = conn.execute(q, rows).rowcount
    if done != len(records):
        raise AlreadyApplied(f"{len(records) - done} of {len(records)} submissions were complete")


class Applier:
    """Applies queued submissions in arrival order, in batches, through the operation layer."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.batch = settings.impact_api.apply_batch

    def run(self, stopping: threading.Event) -> None:
        """Apply until `stopping` is set; wait a moment whenever nothing is queued."""
        while not stopping.is_set():
            try:
                done = self.run_once()
            except Transient as exc:
                log.warning("api submissions paused: %s", exc)
                done = 0
                stopping.wait(1.0)
            except Exception:  # never let the thread die: log, pause, go on
                log.exception("api submissions: unexpected error")
                done = 0
                stopping.wait(1.0)
            if done < self.batch:
                stopping.wait(LINGER_SECONDS if done else IDLE_SECONDS)

    def run_once(self) -> int:
        """Apply the oldest submissions (at most one batch); return how many were completed."""
        subs = self._take()
        if not subs:
            return 0
        groups: dict[str, list[Submission]] = {}
        for sub, campaign in zip(subs, self._campaigns(subs), strict=True):
            groups.setdefault(campaign, []).append(sub)
        return sum(self._apply(campaign, group) for campaign, group in groups.items())

    def _take(self) -> list[Submission]:
        """The oldest unfinished submissions, marked In Progress (dead appliers' ones included)."""
        c = t.api_submissions.c
        q = (
            select(t.api_submissions)
            .where(c.status != SubmissionStatus.COMPLETE.value)
            .order_by(c.seq)
            .limit(self.batch)
        )
        with self.store.read() as conn:
            subs = [_submission(r) for r in conn.execute(q).mappings()]
        queued = [s.seq for s in subs if s.status is SubmissionStatus.QUEUED]
        if queued:
            mark = (
                update(t.api_submissions)
                .where(c.seq.in_(queued), c.status == SubmissionStatus.QUEUED.value)
                .values(status=SubmissionStatus.IN_PROGRESS.value)
            )
            with self.store.begin() as conn:
                conn.execute(mark)
        return subs

    def _campaigns(self, subs: Sequence[Submission]) -> list[str]:
        """Each submission's campaign: given, the action's (among the token's), or its first."""
        wanted = [s.action_id for s in subs if s.campaign_id is None and s.action_id]
        found: dict[str, str] = {}
        if wanted:
            a = t.actions.c
            q = select(a.id, a.campaign_id).where(a.id.in_(sorted(set(wanted))))
            with self.store.read() as conn:
                found = {row.id: row.campaign_id for row in conn.execute(q)}
        trackers = {str(et.id): c.id for c in self.settings.campaigns for et in c.event_types}
        out = []
        for s in subs:
            allowed = s.campaigns or [""]
            guess = (
                s.campaign_id
                or found.get(s.action_id or "")
                or (trackers.get(s.action_tracker_id or "") if not s.action_id else None)
            )
            out.append(guess if guess in allowed else allowed[0])
        return out

    def _apply(self, campaign: str, group: list[Submission]) -> int:
        """Apply one campaign's submissions in one transaction; isolate a crash to its request."""
        try:
            self._apply_changes(campaign, group)
        except FileRejected as exc:  # the campaign is no longer configured
            self._record([failed(s, exc.code, exc.message, "Contract Error") for s in group])
        except (Transient, AlreadyApplied):
            raise
        except Exception:
            if len(group) > 1:
                return sum(self._apply(campaign, [s]) for s in group)
            log.exception("api submission %s could not be applied", group[0].batch_id)
            self._record([failed(group[0], "INTERNAL_ERROR", "returnsd could not apply it")])
        return len(group)

    def _apply_changes(self, campaign: str, group: list[Submission]) -> None:
        def record(conn: Connection, outcomes: list[ChangeOutcome]) -> None:
            pairs = zip(group, outcomes, strict=True)
            write_records(conn, [recorded(s, campaign, o) for s, o in pairs])

        by_actor: dict[str, list[Submission]] = {}
        for s in group:
            by_actor.setdefault(s.token_id, []).append(s)
        if len(by_actor) == 1:
            apply_changes(
                self.store, self.settings, campaign, [change_of(s) for s in group],
                actor=_actor(group[0]), channel=CHANNEL, role=Role.ADVERTISER, then=record,
            )  # fmt: skip
            return
        for subs in _runs_by_actor(group):  # the audit names each token: one run per token
            self._apply_changes(campaign, subs)

    def _record(self, records: Iterable[Recorded]) -> None:
        with self.store.begin() as conn:
            write_records(conn, list(records))


def _actor(sub: Submission) -> str:
    return f"api:{sub.sid}/{sub.token_id}"


def _runs_by_actor(group: list[Submission]) -> list[list[Submission]]:
    """Consecutive runs of one token's submissions, in arrival order."""
    runs: list[list[Submission]] = []
    for s in group:
        if runs and runs[-1][0].token_id == s.token_id:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs


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
