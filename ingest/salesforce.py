"""A spooled Salesforce Outbound Message → one change per mapped notification, one result line each.

The worker hands every file of channel `salesforce` here instead of to the returns-file engine: a
SOAP message is not a returns file. Each notification is decided in message order:

- a notification already processed (same org, same notification id) — a redelivery — is
  UNCHANGED and changes nothing;
- one whose modstamp is not newer than the newest already processed for its record (Salesforce
  delivers out of order and sends the record's current values) is UNCHANGED, saying so;
- a status value the campaign does not map is UNCHANGED ("ignored");
- the others become `ingest.operations.Change`s, applied by `apply_changes_in` under the rules
  every change obeys, with the org as actor and `salesforce` as channel.

The changes, the processed notifications, the records' newest modstamps, the result and the
COMPLETE status commit in one transaction: a crash before it leaves everything to process again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select

from ingest import files
from ingest import tables as t
from ingest.config import Settings
from ingest.domain import error_type
from ingest.engine import campaign_of
from ingest.errors import FileRejected
from ingest.files import FileRecord
from ingest.operations import Change, ChangeOutcome, Operation, Role, apply_changes_in
from ingest.salesforce_config import SalesforceMapping, org15
from ingest.salesforce_message import Notification, OutboundMessage, actor_of, parse_message
from ingest.salesforce_result import ERROR, UNCHANGED, Line, record
from ingest.store import Store

CHANNEL = "salesforce"
UNKNOWN_ORGANIZATION = "UNKNOWN_ORGANIZATION"
NOT_CONFIGURED = "NOT_CONFIGURED"
RECORD_ID = re.compile(r"^[A-Za-z0-9]{1,18}$")  # 15 or 18 characters in Salesforce
WHOLE_NUMBER = re.compile(r"^(\d+)\.0*$")  # Salesforce sends number fields as 101.0


def process_message(
    store: Store, settings: Settings, rec: FileRecord, *, now: datetime | None = None
) -> dict[str, Any]:
    """Apply a spooled message's notifications and record the file COMPLETE; return its summary.

    Raises FileRejected when the file is not a message this campaign takes (it then FAILS).
    """
    started = time.perf_counter()
    campaign = campaign_of(settings, rec.campaign_id)
    mapping = campaign.salesforce
    if mapping is None:
        raise FileRejected(NOT_CONFIGURED, f"campaign {campaign.id} has no salesforce mapping")
    message = parse_message(rec.spool_path.read_bytes(), mapping.max_message_bytes)
    if not mapping.knows_org(message.organization_id):
        raise FileRejected(
            UNKNOWN_ORGANIZATION,
            f"organization {message.organization_id} is not one of campaign {campaign.id}'s",
        )
    drafts = [draft(mapping, n) for n in message.notifications]
    org = org15(message.organization_id)
    timings = {"parse": round(time.perf_counter() - started, 4)}
    with store.begin() as conn:
        store.sql.campaign_lock(conn, campaign.id)
        lines = settle(conn, campaign.id, org, drafts)
        applied = time.perf_counter()
        lines = _apply(conn, store, settings, campaign.id, message, lines)
        timings["apply"] = round(time.perf_counter() - applied, 4)
        remember(conn, campaign.id, org, rec.id, lines, now or datetime.now(UTC))
        outcome = record(settings, rec, message, lines, timings)
        files.complete(conn, rec.id, outcome)
    return outcome.summary


def draft(mapping: SalesforceMapping, n: Notification) -> Line:
    """What one notification asks for, before the database is consulted."""
    obj = n.sobject
    value = obj.get(mapping.status_field)
    stamp = _instant(obj.get(mapping.modstamp_field))
    ident, tracker = _identifier(mapping, n)
    line = Line(n, obj.get("Id"), value, stamp, ident)
    if obj.type != mapping.object:
        why = f"a {obj.type} record: this campaign maps {mapping.object} records"
        return replace(line, outcome=early(ERROR, "MALFORMED", why))
    if line.record_id is None or not RECORD_ID.match(line.record_id):
        why = f"the record's Id {line.record_id!r} is not a Salesforce id"
        return replace(line, outcome=early(ERROR, "MALFORMED", why))
    if stamp is None:
        why = (
            f"{mapping.modstamp_field} is missing or not a date-time: add it to the "
            "Outbound Message's fields (it orders redeliveries)"
        )
        return replace(line, outcome=early(ERROR, "MALFORMED", why))
    rule = mapping.statuses.get(value) if value is not None else None
    if rule is None:
        shown = f"{value!r}" if value is not None else "empty"
        why = f"{mapping.status_field} {shown} is not in the campaign's mapping: ignored"
        return replace(line, outcome=early(UNCHANGED, None, why))
    if ident is None:
        field = mapping.action_id_field or mapping.order_id_field
        why = f"{field} is empty on record {line.record_id}: the action cannot be named"
        return replace(line, outcome=early(ERROR, "MISSING_IDENTIFIER", why))
    op = Operation(rule.operation)
    amount = (
        obj.get(mapping.amount_field) if op == Operation.MODIFY and mapping.amount_field else None
    )
    if op == Operation.MODIFY and amount is None:
        why = f"{mapping.amount_field} is empty: a modification needs the new sale amount"
        return replace(line, outcome=early(ERROR, "MALFORMED", why))
    by_order = mapping.order_id_field is not None
    change = Change(
        action_id=None if by_order else ident,
        operation=op,
        reason=rule.reason,
        amount=amount,
        order_id=ident if by_order else None,
        tracker=tracker,
    )
    return replace(line, change=change)


def _identifier(mapping: SalesforceMapping, n: Notification) -> tuple[str | None, str | None]:
    """(ActionId or OrderId, ActionTrackerId or None) as the record gives them."""
    obj = n.sobject
    if mapping.action_id_field:
        return obj.get(mapping.action_id_field), None
    assert mapping.order_id_field is not None
    tracker = str(mapping.event_type) if mapping.event_type else None
    if mapping.event_type_field:
        tracker = obj.get(mapping.event_type_field)
        if tracker and (whole := WHOLE_NUMBER.match(tracker)):
            tracker = whole.group(1)
    return obj.get(mapping.order_id_field), tracker


def _instant(text: str | None) -> datetime | None:
    """A Salesforce dateTime (2026-12-01T10:00:00.000Z) as an aware datetime, or None."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def early(status: str, code: str | None, message: str) -> ChangeOutcome:
    """An outcome decided without applying anything (nothing changes, no action resolved)."""
    return ChangeOutcome(
        action_id=None,
        status=status,
        error_code=code,
        error_type=error_type(code) if code else None,
        message=message,
        state=None,
        old_amount=None,
        new_amount=None,
        old_payout=None,
        new_payout=None,
    )


def settle(conn: Connection, campaign_id: str, org: str, drafts: Sequence[Line]) -> list[Line]:
    """Mark redeliveries and notifications older than their record's newest as UNCHANGED."""
    seen = _seen(conn, org, [d.notification.id for d in drafts])
    newest = _newest(conn, campaign_id, org, {d.record_id for d in drafts if d.record_id})
    lines = []
    for d in drafts:
        nid = d.notification.id
        if nid in seen:
            why = f"notification {nid} was already processed ({seen[nid]}): nothing changes again"
            lines.append(replace(d, change=None, outcome=early(UNCHANGED, None, why), repeat=True))
            continue
        seen[nid] = "earlier in this message"
        last = newest.get(d.record_id) if d.record_id else None
        if d.modstamp is not None and last is not None and d.modstamp <= last:
            why = (
                f"older than the newest change of record {d.record_id} already processed "
                f"({_iso(d.modstamp)} ≤ {_iso(last)}): Salesforce delivered it out of order; "
                "nothing changes"
            )
            lines.append(replace(d, change=None, outcome=early(UNCHANGED, None, why)))
            continue
        if d.record_id and d.modstamp is not None:
            newest[d.record_id] = d.modstamp
        lines.append(d)
    return lines


def _seen(conn: Connection, org: str, ids: list[str]) -> dict[str, str]:
    n = t.salesforce_notifications.c
    q = select(n.notification_id, n.file_id).where(n.org_id == org, n.notification_id.in_(ids))
    return {row[0]: f"file {row[1]}" for row in conn.execute(q)}


def _newest(conn: Connection, campaign_id: str, org: str, records: set[str]) -> dict[str, datetime]:
    r = t.salesforce_records.c
    q = select(r.record_id, r.modstamp).where(
        r.campaign_id == campaign_id, r.org_id == org, r.record_id.in_(sorted(records))
    )
    return {row[0]: row[1] for row in conn.execute(q)}


def _apply(
    conn: Connection,
    store: Store,
    settings: Settings,
    campaign_id: str,
    message: OutboundMessage,
    lines: list[Line],
) -> list[Line]:
    """Apply the lines that carry a change, in message order; fill in their outcomes."""
    todo = [k for k, line in enumerate(lines) if line.change is not None and line.outcome is None]
    changes = [lines[k].change for k in todo]
    outcomes = apply_changes_in(
        conn,
        store.sql,
        settings,
        campaign_id,
        [c for c in changes if c is not None],
        actor=actor_of(message.organization_id),
        channel=CHANNEL,
        role=Role.ADVERTISER,
    )
    done = list(lines)
    for k, outcome in zip(todo, outcomes, strict=True):
        done[k] = replace(lines[k], outcome=outcome)
    return done


def remember(
    conn: Connection, campaign_id: str, org: str, file_id: str, lines: Iterable[Line], now: datetime
) -> None:
    """Keep each new notification id and each record's newest modstamp, in this transaction."""
    fresh: dict[str, Line] = {}
    newest: dict[str, datetime] = {}
    for line in lines:
        if line.repeat:
            continue
        fresh.setdefault(line.notification.id, line)
        if (
            line.record_id
            and line.modstamp
            and (line.record_id not in newest or line.modstamp > newest[line.record_id])
        ):
            newest[line.record_id] = line.modstamp
    rows = [
        {
            "org_id": org,
            "notification_id": nid,
            "campaign_id": campaign_id,
            "record_id": line.record_id,
            "file_id": file_id,
            "status": line.outcome.status if line.outcome else ERROR,
            "at": now,
        }
        for nid, line in fresh.items()
    ]
    if rows:
        conn.execute(t.salesforce_notifications.insert(), rows)
    _keep_newest(conn, campaign_id, org, file_id, newest)


def _keep_newest(
    conn: Connection, campaign_id: str, org: str, file_id: str, newest: dict[str, datetime]
) -> None:
    r = t.salesforce_records
    known = _newest(conn, campaign_id, org, set(newest))
    for record_id, stamp in sorted(newest.items()):
        key = (r.c.campaign_id == campaign_id, r.c.org_id == org, r.c.record_id == record_id)
        if record_id not in known:
            conn.execute(
                r.insert(),
                {
                    "campaign_id": campaign_id,
                    "org_id": org,
                    "record_id": record_id,
                    "modstamp": stamp,
                    "file_id": file_id,
                },
            )
        elif stamp > known[record_id]:
            conn.execute(r.update().where(*key).values(modstamp=stamp, file_id=file_id))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
