"""The applier of impact's queued `PUT`/`DELETE …/Actions` requests (`ingest.submissions`).

The `Applier` takes queued rows in arrival order, many at a time, turns each into a `Change` and
applies them through the one operation layer (`ingest.operations.apply_changes`), recording every
outcome (Complete, with ErrorType/ErrorReason) in the same transaction as the changes. Marking a
row Complete is conditional on it not being Complete yet, so a batch taken twice (a restart, a
second node) is undone instead of applied twice.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from ingest import tables as t
from ingest.config import Settings
from ingest.errors import FileRejected, Transient
from ingest.operations import Change, ChangeOutcome, ItemEdit, Operation, Role, apply_changes
from ingest.store import Store
from ingest.submissions import (
    Submission,
    SubmissionStatus,
    SubmissionType,
    first_field,
    submission_of,
)

# The applier's lines keep the logger name they had when it lived in ingest.submissions.
log = logging.getLogger("returnsd.ingest.submissions")
CHANNEL = "api"
IDLE_SECONDS = 0.1  # how often an idle applier looks for new submissions
# After a batch that was not full, let requests gather this long: a batch costs about the same
# for 1 request as for 500, and the intake writes freely meanwhile.
LINGER_SECONDS = 0.25
ERROR_TYPES = {"Validation": "Validation", "Contract": "Contract Error"}  # impact's spelling


class AlreadyApplied(Transient):
    """Another applier completed part of this batch first; the batch is undone and retaken."""


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
        operation, reason = Operation.REVERSE, first_field(f, "DispositionCode", "Reason")
    else:
        operation, reason = Operation.ROW, first_field(f, "Reason", "DispositionCode")
    action_id = first_field(f, "ActionId")
    return Change(
        action_id=action_id,
        operation=operation,
        reason=reason,
        amount=None if items else first_field(f, "Amount"),
        customer_status=first_field(f, "CustomerStatus"),
        items=items,
        currency=first_field(f, "CurrencyCode", "Currency"),
        order_id=None if action_id else first_field(f, "OrderId", "Oid"),
        tracker=None if action_id else first_field(f, "ActionTrackerId"),
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
            subs = [submission_of(r) for r in conn.execute(q).mappings()]
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
