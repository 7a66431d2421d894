"""The reconciler: ask Salesforce for mapped records changed since a stored cursor, spool the ones
not yet processed as an Outbound Message, so what Salesforce dropped after 24 hours is applied.

It queries the REST API (`/services/data/vXX.X/query?q=SELECT … WHERE <modstamp> >= cursor
ORDER BY <modstamp>`), signed in with OAuth (JWT bearer, or username-password) from secrets. The
records become one spooled message per 100 and go the same way as a received message (the worker,
`ingest.salesforce`): the notification id `reconcile-<record>-<modstamp>` and the newest-modstamp
rule make a record already applied change nothing, so a crash or a restart never applies twice.
The cursor is kept in `salesforce_cursors` and advances only once the records are spooled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from ingest import tables as t
from ingest.config import Settings
from ingest.errors import ConfigError
from ingest.events import file_event
from ingest.salesforce_config import SalesforceMapping, org15
from ingest.salesforce_message import Notification, SObject, actor_of, render_message
from ingest.salesforce_rest import RestClient, SalesforceRefused
from ingest.spool import Spool
from ingest.store import Store

log = logging.getLogger("returnsd.salesforce")
CHANNEL = "salesforce"
PER_MESSAGE = 100  # as Salesforce sends them


@dataclass(frozen=True)
class ReconcileReport:
    """What one run did: records returned, records spooled, the files, the new cursor."""

    campaign: str
    queried: int
    spooled: int
    files: tuple[str, ...]
    cursor: datetime | None


def soql(mapping: SalesforceMapping, cursor: datetime, limit: int) -> str:
    """The query for mapped records modified at or after `cursor` (to the second), oldest first."""
    stamp = mapping.modstamp_field
    return (
        f"SELECT {', '.join(mapping.fields())} FROM {mapping.object} "
        f"WHERE {stamp} >= {cursor.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} "
        f"ORDER BY {stamp} ASC LIMIT {limit}"
    )


def reconcile(
    spool: Spool,
    settings: Settings,
    campaign_id: str,
    *,
    client: RestClient | None = None,
    now: datetime | None = None,
) -> ReconcileReport:
    """Query the campaign's changed records, spool those not processed yet, move the cursor."""
    campaign = settings.campaign(campaign_id)
    mapping = campaign.salesforce if campaign else None
    if mapping is None or mapping.reconcile is None:
        raise ConfigError(f"campaign {campaign_id} has no salesforce.reconcile")
    store = spool.store
    now = now or datetime.now(UTC)
    cursor = read_cursor(store, campaign_id) or now - timedelta(
        hours=mapping.reconcile.lookback_hours
    )
    rest = client or RestClient(mapping.reconcile)
    try:
        session = rest.login()
        query = soql(mapping, cursor, mapping.reconcile.max_records)
        records = [_record(mapping, r) for r in rest.query(session, query)]
    finally:
        if client is None:
            rest.close()
    org = session.org_id or mapping.organization_ids[0]
    if not mapping.knows_org(org):
        raise SalesforceRefused(f"signed in to org {org}, not one of campaign {campaign_id}'s")
    todo = _unprocessed(store, campaign_id, org, mapping, records)
    ids = tuple(_spool(spool, campaign_id, org, chunk) for chunk in _chunks(todo))
    stamps = [s for r in records if (s := _stamp(r, mapping)) is not None]
    newest = max(stamps, default=None)
    if newest is not None:
        write_cursor(store, campaign_id, newest, now)
    log.info(
        "salesforce reconcile %s: %d records changed since %s, %d not yet processed, spooled as %s",
        campaign_id,
        len(records),
        cursor.isoformat(),
        len(todo),
        ", ".join(ids) or "nothing",
    )
    return ReconcileReport(campaign_id, len(records), len(todo), ids, newest or cursor)


def _record(mapping: SalesforceMapping, doc: dict[str, Any]) -> Notification:
    """A REST record as the notification an Outbound Message would have carried."""
    fields = {name: _text(doc.get(name)) for name in mapping.fields()}
    stamp = _instant(fields.get(mapping.modstamp_field))
    fields[mapping.modstamp_field] = _iso(stamp) if stamp else fields.get(mapping.modstamp_field)
    record = fields.get("Id") or "?"
    moment = int(stamp.timestamp() * 1000) if stamp else 0
    return Notification(f"reconcile-{record}-{moment}", SObject(mapping.object, fields))


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _instant(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stamp(n: Notification, mapping: SalesforceMapping) -> datetime | None:
    return _instant(n.sobject.get(mapping.modstamp_field))


def _unprocessed(
    store: Store,
    campaign_id: str,
    org: str,
    mapping: SalesforceMapping,
    records: list[Notification],
) -> list[Notification]:
    """The records newer than the newest modstamp processed for them (the others are applied)."""
    r = t.salesforce_records.c
    ids = sorted({n.sobject.get("Id") or "" for n in records})
    with store.read() as conn:
        q = select(r.record_id, r.modstamp).where(
            r.campaign_id == campaign_id, r.org_id == org15(org), r.record_id.in_(ids)
        )
        known = {row[0]: row[1] for row in conn.execute(q)}
    todo = []
    for n in records:
        stamp, last = _stamp(n, mapping), known.get(n.sobject.get("Id") or "")
        if stamp is None or last is None or stamp > last:
            todo.append(n)
    return todo


def _chunks(items: Sequence[Notification]) -> Iterator[Sequence[Notification]]:
    for i in range(0, len(items), PER_MESSAGE):
        yield items[i : i + PER_MESSAGE]


def _spool(spool: Spool, campaign_id: str, org: str, chunk: Sequence[Notification]) -> str:
    started = time.monotonic()
    name = f"salesforce-{org15(org)}-reconcile-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.xml"
    meta: dict[str, object] = {"salesforce": {"organization_id": org, "reconciled": len(chunk)}}
    acc = spool.accept(
        campaign_id, CHANNEL, name, render_message(org, chunk), sender=actor_of(org), meta=meta
    )
    file_event(
        "received",
        file_id=acc.file_id,
        channel=CHANNEL,
        campaign=campaign_id,
        sender=actor_of(org),
        name=acc.name,
        size=acc.size,
        seconds=time.monotonic() - started,
        outcome=acc.status,
    )
    return acc.file_id


def read_cursor(store: Store, campaign_id: str) -> datetime | None:
    """The modstamp the next query starts at, or None before the first run."""
    c = t.salesforce_cursors.c
    with store.read() as conn:
        found: datetime | None = conn.scalar(select(c.modstamp).where(c.campaign_id == campaign_id))
    return found


def write_cursor(store: Store, campaign_id: str, modstamp: datetime, now: datetime) -> None:
    """Move the cursor forward (never back)."""
    table = t.salesforce_cursors
    with store.begin() as conn:
        old = conn.scalar(select(table.c.modstamp).where(table.c.campaign_id == campaign_id))
        if old is None:
            conn.execute(
                table.insert(),
                {"campaign_id": campaign_id, "modstamp": modstamp, "updated_at": now},
            )
        elif modstamp > old:
            conn.execute(
                table.update()
                .where(table.c.campaign_id == campaign_id)
                .values(modstamp=modstamp, updated_at=now)
            )
