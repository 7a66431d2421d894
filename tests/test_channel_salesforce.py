"""Salesforce Outbound Messaging through the real HTTP server on 127.0.0.1:0 and httpx.

A message is stored and only then acknowledged; the worker applies each mapped notification
through the operation layer; redeliveries and out-of-order notifications change nothing; wrong
orgs, bad XML, entity bombs and oversize bodies are refused with a SOAP fault and nothing stored;
temporary failures answer 500 so Salesforce retries; mutual TLS is checked per campaign.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import OperationalError

from ingest import files as file_records
from ingest import spool as spool_module
from ingest.config import Settings
from ingest.salesforce_message import parse_message
from tests.conftest import campaign_dict
from tests.sfdc import FIXTURES, ORG, OTHER_ORG, Harness, mapping, note, pki, soap

ACK = b"<Ack>true</Ack>"
T1, T2, T3 = "2026-12-01T10:00:00.000Z", "2026-12-01T10:05:00.000Z", "2026-12-01T10:09:00.000Z"


@pytest.fixture
def harness(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[..., Harness]]:
    """Build a started Harness: campaign acme mapped with `mapping(**sf)`; http options."""
    made: list[Harness] = []

    def build(sf: dict[str, Any] | None = None, db: str | None = None, **http: Any) -> Harness:
        overrides: dict[str, Any] = {"database_url": db} if db else {}
        settings = make_settings(
            channels={"http": {"host": "127.0.0.1", "port": 0, **http}},
            campaigns=[campaign_dict(salesforce=mapping(**(sf or {})))],
            **overrides,
        )
        made.append(Harness(settings, tmp_path))
        return made[-1]

    yield build
    for h in made:
        h.close()


def result_rows(h: Harness, file_id: str) -> list[dict[str, str]]:
    """The result CSV of a file as dicts."""
    outcome = h.results.outcome(file_id)
    assert outcome is not None
    data = outcome.result_csv()
    assert data is not None, outcome
    return list(csv.DictReader(io.StringIO(data.decode())))


def three() -> bytes:
    """A reverse, an approve and an unmapped stage (the fixture Salesforce would send)."""
    return (FIXTURES / "opportunity_several.xml").read_bytes()


def test_three_notifications_ack_one_submission_three_lines(
    harness: Callable[..., Harness], db_url: str
) -> None:
    h = harness(db=db_url)
    h.start()
    r = h.post(three())
    assert r.status_code == 200 and ACK in r.content, r.text
    assert r.headers["content-type"].startswith("text/xml")
    (sub,) = h.files()
    assert (sub.channel, sub.status, sub.sender) == ("salesforce", "QUEUED", f"org:{ORG}")
    assert sub.name.startswith(f"salesforce-{ORG[:15]}-") and sub.name.endswith(".xml")
    assert h.process() == 1
    done = h.results.outcome(sub.file_id)
    assert done is not None and done.status == "COMPLETE", done
    assert done.counts["applied"] == 2 and done.counts["unchanged"] == 1
    rows = result_rows(h, sub.file_id)
    assert [(r["RecordId"], r["Status"], r["State"]) for r in rows] == [
        ("0065g00000Ab1cDAAR", "APPLIED", "REVERSED"),
        ("0065g00000Ab1cEAAR", "APPLIED", "APPROVED"),
        ("0065g00000Ab1cFAAR", "UNCHANGED", ""),
    ]
    assert "'Negotiation/Review' is not in the campaign's mapping" in rows[2]["Message"]
    assert h.state("A1") == ("REVERSED", 0) and h.state("A2")[0] == "APPROVED"
    assert h.state("A3") == ("PENDING", 10000)
    history = h.audit()
    assert [(a["action_id"], a["operation"], a["reason"]) for a in history] == [
        ("A1", "reverse", "CONS_ERROR"),
        ("A2", "approve", "APPROVED"),
    ]
    assert {(a["channel"], a["actor"], a["file_id"]) for a in history} == {
        ("salesforce", f"org:{ORG}", None)
    }


def test_the_same_message_twice_is_applied_once(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    assert ACK in h.post(three()).content
    h.process()
    again = h.post(three())  # the same bytes: a DUPLICATE record, acknowledged
    assert again.status_code == 200 and ACK in again.content
    resent = three().replace(b'<SessionId xsi:nil="true"/>', b"<SessionId>00D!new</SessionId>")
    assert ACK in h.post(resent).content  # a retry with other bytes: deduplicated by id
    h.process()
    first, dup, retry = h.files()
    assert (first.status, dup.status, retry.status) == ("COMPLETE", "DUPLICATE", "COMPLETE")
    rows = result_rows(h, retry.file_id)
    assert {r["Status"] for r in rows} == {"UNCHANGED"}
    assert all("was already processed" in r["Message"] for r in rows), rows
    assert len(h.audit()) == 2


def test_an_older_notification_after_a_newer_changes_nothing(
    harness: Callable[..., Harness], db_url: str
) -> None:
    h = harness(db=db_url)
    h.start()
    newer = note("04l5g00000SCo9AAAT", "0065g00000Ab1cDAAR", "A1", "Returned", T2, Amount="60.0")
    older = note("04l5g00000SCo9BAAT", "0065g00000Ab1cDAAR", "A1", "Closed Lost", T1)
    assert ACK in h.post(soap(newer)).content
    h.process()
    assert h.state("A1") == ("PENDING", 6000)
    assert ACK in h.post(soap(older)).content
    h.process()
    (row,) = result_rows(h, h.files()[-1].file_id)
    assert row["Status"] == "UNCHANGED" and "older than the newest change" in row["Message"]
    assert h.state("A1") == ("PENDING", 6000)
    newest = note("04l5g00000SCo9CAAT", "0065g00000Ab1cDAAR", "A1", "Closed Lost", T3)
    assert ACK in h.post(soap(newest)).content
    h.process()
    assert h.state("A1") == ("REVERSED", 0)


def test_rules_apply_as_to_a_file_row(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    notes = [
        note("04l000000000001AAA", "006000000000001AAA", "NOPE", "Closed Lost", T1),
        note("04l000000000002AAA", "006000000000002AAA", "A4", "Returned", T1),  # no Amount
        note("04l000000000003AAA", "006000000000003AAA", "A5", "Returned", T1, Amount="x"),
        {
            "nid": "04l000000000004AAA",
            "Id": "006000000000004AAA",
            "StageName": "Closed Won",
            "SystemModstamp": T1,
        },
    ]
    assert ACK in h.post(soap(*notes)).content
    h.process()
    rows = result_rows(h, h.files()[0].file_id)
    assert [(r["Status"], r["ErrorCode"]) for r in rows] == [
        ("ERROR", "ACTION_NOT_FOUND"),
        ("ERROR", "MALFORMED"),
        ("ERROR", "MALFORMED"),
        ("ERROR", "MISSING_IDENTIFIER"),
    ]
    assert h.audit() == []


def test_unknown_org_is_refused_and_nothing_stored(
    harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    h = harness()
    h.start()
    r = h.post(soap(note("04l1", "0061", "A1", "Closed Lost", T1), org=OTHER_ORG))
    assert r.status_code == 403 and b"<faultcode>soapenv:Client</faultcode>" in r.content
    assert f"OrganizationId {OTHER_ORG} is not configured".encode() in r.content
    assert h.files() == []
    assert "event=refused" in caplog.text and "outcome=UNKNOWN_ORGANIZATION" in caplog.text


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>&lol3;</OrganizationId>
</notifications></soapenv:Body></soapenv:Envelope>"""


@pytest.mark.parametrize(
    ("body", "status", "code", "says"),
    [
        (b"<soapenv:Envelope><unclosed>", 400, "MALFORMED_XML", b"not well-formed XML"),
        (BOMB, 400, "MALFORMED_XML", b"DTDs and entities are not accepted"),
        (b"<a>" * 50 + b"</a>" * 50, 400, "MALFORMED_XML", b"nested deeper than"),
        (b"<x/>", 400, "NOT_AN_OUTBOUND_MESSAGE", b"expected a SOAP Envelope"),
        (b"<x>" + b"y" * 2_000_000 + b"</x>", 413, "TOO_LARGE", b"over the 1,048,576-byte"),
    ],
    ids=["malformed", "entity-bomb", "deep", "not-a-message", "oversize"],
)
def test_bad_bodies_get_a_clear_fault_and_nothing_is_stored(
    harness: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    status: int,
    code: str,
    says: bytes,
) -> None:
    caplog.set_level(logging.INFO)
    h = harness()
    h.start()
    r = h.post(body)
    assert r.status_code == status and says in r.content, r.text
    assert f"<code>{code}</code>".encode() in r.content
    assert h.files() == [] and "Traceback" not in caplog.text
    assert f"outcome={code}" in caplog.text


def test_spool_full_answers_500_so_salesforce_retries(
    harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness()
    h.start()

    def full(*_: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(spool_module, "_fsync_dir", full)  # the write fails as on a full disk
        r = h.post(three())
    assert r.status_code == 500 and b"<faultcode>soapenv:Server</faultcode>" in r.content
    assert b"Salesforce will send it again" in r.content and h.files() == []
    assert ACK in h.post(three()).content  # the retry, once there is room


def test_database_down_answers_500_then_the_retry_is_taken(
    harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness()
    h.start()

    def down(*_: Any) -> Any:
        raise OperationalError("INSERT INTO files", {}, ConnectionRefusedError("refused"))

    with monkeypatch.context() as m:
        m.setattr(file_records, "admit", down)
        r = h.post(three())
    assert r.status_code == 500 and b"soapenv:Server" in r.content
    assert b"refused" not in r.content  # the cause is for the log, not the sender
    assert ACK in h.post(three()).content
    h.process()
    assert h.state("A1") == ("REVERSED", 0)


def test_source_address_allow_list(harness: Callable[..., Harness]) -> None:
    h = harness(sf={"allow_from": ["13.108.0.0/14"]})
    h.start()
    r = h.post(three())
    assert r.status_code == 403 and b"source address 127.0.0.1 is not allowed" in r.content
    assert h.files() == []


def test_custom_object_by_order_id_and_tracker_field(harness: Callable[..., Harness]) -> None:
    h = harness(
        sf={
            "object": "Order_Return__c",
            "action_id_field": None,
            "order_id_field": "Order_Number__c",
            "event_type_field": "Tracker_Id__c",
            "status_field": "Return_Status__c",
            "amount_field": "Kept_Amount__c",
            "modstamp_field": "LastModifiedDate",
            "statuses": {"Partially Returned": {"modify": "ITEM_RETURNED"}},
            "path": "/sf/acme-returns",
        }
    )
    h.start()
    body = (FIXTURES / "return_custom_object.xml").read_bytes()
    assert h.post(body).status_code == 404  # the default path is not served: another one is
    assert ACK in h.post(body, path="/sf/acme-returns").content
    h.process()
    (row,) = result_rows(h, h.files()[0].file_id)
    assert (row["Status"], row["ResolvedActionId"], row["NewAmount"]) == ("APPLIED", "A2", "35.50")
    assert h.state("A2") == ("PENDING", 3550)


def test_a_session_id_is_never_stored(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    body = (FIXTURES / "opportunity_single.xml").read_bytes()
    assert b"!AQ8AQLx9" in body
    assert ACK in h.post(body).content
    (sub,) = h.files()
    stored = (h.settings.path(h.settings.spool_dir) / "acme" / sub.file_id).read_bytes()
    assert b"!AQ8AQLx9" not in stored and b"<SessionId/>" in stored
    assert stored.replace(b"<SessionId/>", b"") == body.replace(
        b"<SessionId>00D5g000004SGxb!AQ8AQLx9pqH7cz7XKWZ0p8sv0.4RBx5Sq3qY3</SessionId>", b""
    )
    h.process()
    assert h.state("A1") == ("REVERSED", 0)


def test_fixtures_parse_as_salesforce_sends_them() -> None:
    single = parse_message((FIXTURES / "opportunity_single.xml").read_bytes(), 1 << 20)
    assert single.organization_id == ORG and single.session_id and len(single.notifications) == 1
    several = parse_message(three(), 1 << 20)
    assert several.session_id is None and len(several.notifications) == 3
    custom = parse_message((FIXTURES / "return_custom_object.xml").read_bytes(), 1 << 20)
    (n,) = custom.notifications
    assert n.sobject.type == "Order_Return__c" and n.sobject.fields["Notes__c"] is None
    assert n.sobject.get("Kept_Amount__c") == "35.5"


def test_mutual_tls_requires_the_configured_client_certificate(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    import hashlib
    import ssl

    from cryptography import x509

    files = pki(tmp_path / "pki")
    client_der = x509.load_pem_x509_certificate(files["client"].read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    pinned = hashlib.sha256(client_der).hexdigest()
    h = harness(
        sf={"require_client_certificate": True, "client_certificate_sha256": [pinned]},
        tls_cert=str(files["server"]),
        tls_key=str(files["server.key"]),
        tls_client_ca=str(files["ca"]),
    )
    h.start("https", verify=ssl.create_default_context(cafile=str(files["ca"])))
    bare = h.post(three())
    assert bare.status_code == 403 and b"a client certificate is required" in bare.content
    assert h.files() == []

    def client(label: str) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(files["ca"]))
        ctx.load_cert_chain(str(files[label]), str(files[f"{label}.key"]))
        return httpx.Client(base_url=f"https://127.0.0.1:{h.channel.port}", verify=ctx)

    with client("client") as good:
        r = good.post("/salesforce/acme", content=three(), headers={"Content-Type": "text/xml"})
        assert r.status_code == 200 and ACK in r.content, r.text
    with client("sibling") as sibling:  # the same CA, but not the pinned certificate
        r = sibling.post("/salesforce/acme", content=three())
        assert r.status_code == 403 and b"CLIENT_CERTIFICATE_NOT_ALLOWED" in r.content
    with client("stranger") as bad, pytest.raises(httpx.HTTPError):
        bad.post("/salesforce/acme", content=three())  # another CA: the handshake fails
    assert len(h.files()) == 1
    verify = ssl.create_default_context(cafile=str(files["ca"]))
    health = httpx.get(f"https://127.0.0.1:{h.channel.port}/healthz", verify=verify)
    assert health.status_code == 200  # the upload API needs no client certificate


def test_config_reports_every_mapping_problem(make_settings: Callable[..., Settings]) -> None:
    from ingest.errors import ConfigError

    bad = mapping(
        organization_ids=["00Dnope"],
        statuses={"Closed Lost": {"reverse": "APPROVED"}, "Won": "approve"},
    )
    with pytest.raises(ConfigError) as caught:
        make_settings(campaigns=[campaign_dict(salesforce=bad)])
    assert "'00Dnope' is not an org id" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        make_settings(
            campaigns=[
                campaign_dict(
                    salesforce=mapping(
                        statuses={"Closed Lost": {"reverse": "APPROVED"}},
                        require_client_certificate=True,
                    )
                )
            ]
        )
    text = str(caught.value)
    assert "configure channels.http" in text and "'APPROVED' is not a reason for reverse" in text
    assert "client certificates need channels.http.tls_cert and tls_client_ca" in text


def test_over_100_notifications_is_not_an_outbound_message(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    notes = [note(f"04l{i:015d}", f"006{i:015d}", "A1", "Closed Lost", T1) for i in range(101)]
    r = h.post(soap(*notes))
    assert r.status_code == 400 and b"101 notifications: at most 100 per message" in r.content
    assert h.files() == []


def test_a_stored_message_of_an_org_no_longer_configured_fails_saying_why(
    harness: Callable[..., Harness], make_settings: Callable[..., Settings]
) -> None:
    from ingest.worker import Worker

    h = harness()
    h.start()
    assert ACK in h.post(three()).content
    changed = make_settings(
        channels={"http": {"port": 0}},
        campaigns=[campaign_dict(salesforce=mapping(organization_ids=[OTHER_ORG]))],
    )
    assert Worker(changed, h.store).drain() == 1
    (sub,) = h.files()
    assert (sub.status, sub.error_code) == ("FAILED", "UNKNOWN_ORGANIZATION")
    assert f"organization {ORG} is not one of campaign acme's" in (sub.error_message or "")
    assert h.audit() == []
