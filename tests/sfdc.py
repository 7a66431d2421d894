"""Salesforce test helpers: messages shaped like Salesforce's, a mapped campaign, a harness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
from sqlalchemy import select

from channels.base import ChannelContext
from channels.http_api import HttpApiChannel
from ingest import tables as t
from ingest.actions import import_actions
from ingest.config import Settings
from ingest.results import FileOutcome, ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from ingest.worker import Worker

ORG = "00D5g000004SGxbEAG"
OTHER_ORG = "00D7x000001AbCdEAF"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "salesforce"
ENVELOPE = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" \
xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k5g000000Gm1sAAC</ActionId>
   {session}
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/61.0/00D5g000004SGxb</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/61.0/00D5g000004SGxb</PartnerUrl>
{notifications}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"""
NOTIFICATION = """   <Notification>
    <Id>{id}</Id>
    <sObject xsi:type="sf:{type}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
{fields}
    </sObject>
   </Notification>"""


def soap(
    *notes: dict[str, str], org: str = ORG, session: str | None = None, kind: str = "Opportunity"
) -> bytes:
    """An Outbound Message; each note is {'nid': notification id, field: value, …}."""
    parts = []
    for note in notes:
        fields = "\n".join(
            f"     <sf:{k}>{escape(v)}</sf:{k}>" for k, v in note.items() if k != "nid"
        )
        parts.append(NOTIFICATION.format(id=note["nid"], type=kind, fields=fields))
    sid = f"<SessionId>{session}</SessionId>" if session else '<SessionId xsi:nil="true"/>'
    return ENVELOPE.format(org=org, session=sid, notifications="\n".join(parts)).encode()


def note(
    nid: str, record: str, action: str, stage: str, stamp: str, **extra: str
) -> dict[str, str]:
    """One Opportunity notification (Id, ActionId__c, StageName, SystemModstamp, …)."""
    return {
        "nid": nid,
        "Id": record,
        "ActionId__c": action,
        "StageName": stage,
        "SystemModstamp": stamp,
        **extra,
    }


def mapping(**extra: Any) -> dict[str, Any]:
    """Opportunities name the action in ActionId__c; Closed Lost reverses, Closed Won approves."""
    return {
        "organization_ids": [ORG[:15]],
        "object": "Opportunity",
        "action_id_field": "ActionId__c",
        "status_field": "StageName",
        "statuses": {
            "Closed Lost": {"reverse": "CONS_ERROR"},
            "Closed Won": "approve",
            "Returned": {"modify": "ITEM_RETURNED"},
        },
        "amount_field": "Amount",
        "modstamp_field": "SystemModstamp",
        **extra,
    }


def write_actions(folder: Path, count: int = 5) -> Path:
    """Actions A1…A<count> (orders O1…), PENDING sales of 100.00 from today, tracker 101."""
    today = datetime.now(UTC).date().isoformat()
    rows = [
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,"
        "Payout,CustomerStatus"
    ]
    rows += [
        f"A{i},acme,101,O{i},P1,{today}T10:00:00,100.00,USD,10.00,NEW" for i in range(1, count + 1)
    ]
    path = folder / "actions.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


class Harness:
    """The HTTP channel (serving the Salesforce endpoint) over a store with actions A1…A5."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings = settings
        self.store: Store = prepare(settings)
        import_actions(self.store, settings, write_actions(tmp))
        self.spool = Spool(settings, self.store)
        self.results = ResultStore(self.store)
        self.channel = HttpApiChannel(ChannelContext(settings, self.spool, self.results))
        self.worker = Worker(settings, self.store)
        self.client: httpx.Client | None = None

    def start(self, scheme: str = "http", **client: Any) -> httpx.Client:
        """Start serving; a client for it."""
        self.channel.start()
        base = f"{scheme}://127.0.0.1:{self.channel.port}"
        self.client = httpx.Client(base_url=base, timeout=10, **client)
        return self.client

    def post(self, body: bytes, path: str = "/salesforce/acme", **kw: Any) -> httpx.Response:
        """POST a message as Salesforce does (text/xml, SOAPAction header)."""
        assert self.client is not None
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        return self.client.post(path, content=body, headers=headers, **kw)

    def files(self) -> list[FileOutcome]:
        """Every file record, oldest first."""
        return sorted(self.results.recent(limit=None), key=lambda f: f.received_at)

    def process(self) -> int:
        """Process what is queued; how many files."""
        return self.worker.drain()

    def state(self, action_id: str) -> tuple[str, int]:
        """(state, amount in cents) of an action."""
        with self.store.read() as conn:
            row = conn.execute(
                select(t.actions.c.state, t.actions.c.amount).where(t.actions.c.id == action_id)
            ).one()
        return row[0], row[1]

    def audit(self) -> list[dict[str, Any]]:
        """Every audit row, oldest first."""
        with self.store.read() as conn:
            return [
                dict(r) for r in conn.execute(select(t.audit).order_by(t.audit.c.id)).mappings()
            ]

    def close(self) -> None:
        """Stop the client, the channel and the store."""
        if self.client is not None:
            self.client.close()
            self.channel.stop()
        self.store.dispose()


def harnesses(made: list[Harness]) -> Iterator[None]:
    """Close every harness built in a test."""
    yield
    for h in made:
        h.close()


def pki(folder: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate it signed,
    a second one of the same CA and one of another CA: PEM files named ca, server(.key),
    client(.key), sibling(.key), stranger(.key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(label: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        out[label] = folder / f"{label}.pem"
        out[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{label}.key"] = folder / f"{label}.key"
        out[f"{label}.key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]

    def issue(
        cn: str, issuer: x509.Name, signer: Any, *, ca: bool = False, san: bool = False
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer or key, hashes.SHA256()), key

    ca, ca_key = issue("returnsd test CA", name("returnsd test CA"), None, ca=True)
    write("ca", ca, ca_key)
    write("server", *issue("localhost", ca.subject, ca_key, san=True))
    write("client", *issue("proxy.salesforce.com", ca.subject, ca_key))
    write("sibling", *issue("another client", ca.subject, ca_key))
    other, other_key = issue("other CA", name("other CA"), None, ca=True)
    write("stranger", *issue("stranger", other.subject, other_key))
    return out
