"""A Salesforce Outbound Message read with a hardened XML parser: no DTD, no entities, bounded.

The message is SOAP 1.1: `Envelope/Body/notifications` in the namespace
http://soap.sforce.com/2005/09/outbound holds `OrganizationId`, `ActionId`, `SessionId` (may be
`xsi:nil`), `EnterpriseUrl`, `PartnerUrl` and up to 100 `Notification`s, each an `Id` and an
`sObject` whose `xsi:type` (`sf:Opportunity`, `sf:Return__c`) names the object and whose children
are the fields chosen in Salesforce. Anything else is refused with a message saying what is wrong.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

import defusedxml
import defusedxml.ElementTree as safe_xml

from ingest.errors import TOO_LARGE, FileRejected

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_DEPTH = 12  # Envelope/Body/notifications/Notification/sObject/field is 6 deep
MAX_NOTIFICATIONS = 100  # Salesforce sends at most 100 per message
MAX_FIELDS = 500
MAX_VALUE_CHARS = 32_768
MAX_ID_CHARS = 64

MALFORMED_XML = "MALFORMED_XML"  # not well-formed, or a DTD / entity (refused on purpose)
NOT_A_MESSAGE = "NOT_AN_OUTBOUND_MESSAGE"


@dataclass(frozen=True)
class SObject:
    """One record as sent: its object type and its fields (None for `xsi:nil`)."""

    type: str
    fields: Mapping[str, str | None]

    def get(self, name: str) -> str | None:
        """A field's value, stripped; None when it is absent, nil or empty."""
        value = self.fields.get(name)
        return value.strip() or None if value is not None else None


@dataclass(frozen=True)
class Notification:
    """One notification: Salesforce's id for it and the record's current values."""

    id: str
    sobject: SObject


@dataclass(frozen=True)
class OutboundMessage:
    """A whole message: who sent it, from which Outbound Message action, the notifications."""

    organization_id: str
    action_id: str | None
    session_id: str | None
    enterprise_url: str | None
    partner_url: str | None
    notifications: tuple[Notification, ...]


def actor_of(org_id: str) -> str:
    """Who a message's changes are recorded as (the audit actor, the file's sender): the org."""
    return f"org:{org_id}"


SESSION_ID = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?SessionId)>[^<]*</\1>")


def without_session(data: bytes) -> bytes:
    """The message with its SessionId emptied: a live Salesforce API session is a credential,
    never kept on disk (and two retries differing only in it become the same bytes)."""
    return SESSION_ID.sub(rb"<\1/>", data, count=1)


def parse_message(data: bytes, max_bytes: int) -> OutboundMessage:
    """Read an Outbound Message; raise FileRejected (code, what is wrong) when it is not one."""
    if len(data) > max_bytes:
        raise FileRejected(TOO_LARGE, f"the message is over the {max_bytes:,}-byte limit")
    root = _tree(data)
    body = _child(root, SOAP_ENV, "Body") if _is(root, SOAP_ENV, "Envelope") else None
    box = _child(body, OUTBOUND, "notifications") if body is not None else None
    if box is None:
        raise FileRejected(
            NOT_A_MESSAGE,
            "expected a SOAP Envelope whose Body holds <notifications> in the namespace "
            f"{OUTBOUND}",
        )
    org = _text(box, "OrganizationId")
    if not org:
        raise FileRejected(NOT_A_MESSAGE, "the message has no OrganizationId")
    items = box.findall(f"{{{OUTBOUND}}}Notification")
    if not items:
        raise FileRejected(NOT_A_MESSAGE, "the message holds no Notification")
    if len(items) > MAX_NOTIFICATIONS:
        raise FileRejected(
            NOT_A_MESSAGE, f"{len(items)} notifications: at most {MAX_NOTIFICATIONS} per message"
        )
    return OutboundMessage(
        organization_id=org,
        action_id=_text(box, "ActionId"),
        session_id=_text(box, "SessionId"),
        enterprise_url=_text(box, "EnterpriseUrl"),
        partner_url=_text(box, "PartnerUrl"),
        notifications=tuple(_notification(n, k) for k, n in enumerate(items, start=1)),
    )


def _tree(data: bytes) -> Element:
    """Parse with DTDs and entities forbidden, and the nesting depth bounded while reading."""
    depth = 0
    root: Element | None = None
    try:
        events = safe_xml.iterparse(io.BytesIO(data), ("start", "end"), forbid_dtd=True)
        for event, element in events:
            if event == "start":
                depth += 1
                root = element if root is None else root
                if depth > MAX_DEPTH:
                    raise FileRejected(
                        MALFORMED_XML, f"elements nested deeper than {MAX_DEPTH} levels"
                    )
            else:
                depth -= 1
    except defusedxml.DefusedXmlException as exc:
        raise FileRejected(
            MALFORMED_XML, f"DTDs and entities are not accepted ({type(exc).__name__})"
        ) from exc
    except ParseError as exc:
        raise FileRejected(MALFORMED_XML, f"not well-formed XML: {exc}") from exc
    if root is None:
        raise FileRejected(MALFORMED_XML, "the message is empty")
    return root


def _notification(item: Element, k: int) -> Notification:
    nid = _text(item, "Id")
    obj = _child(item, OUTBOUND, "sObject")
    if not nid or obj is None:
        raise FileRejected(NOT_A_MESSAGE, f"notification {k} has no Id or no sObject")
    if len(nid) > MAX_ID_CHARS:
        raise FileRejected(NOT_A_MESSAGE, f"notification {k}: an Id of {len(nid)} characters")
    xsi_type = obj.get(f"{{{XSI}}}type") or ""
    kind = xsi_type.rpartition(":")[2]
    if not kind:
        raise FileRejected(NOT_A_MESSAGE, f"notification {k}: the sObject has no xsi:type")
    fields: dict[str, str | None] = {}
    for child in list(obj)[:MAX_FIELDS]:
        name = _local(child.tag)
        nil = child.get(f"{{{XSI}}}nil") == "true"
        fields[name] = None if nil else (child.text or "")[:MAX_VALUE_CHARS]
    return Notification(nid, SObject(kind, MappingProxyType(fields)))


def _is(element: Element, ns: str, name: str) -> bool:
    return bool(element.tag == f"{{{ns}}}{name}")


def _child(element: Element, ns: str, name: str) -> Element | None:
    return element.find(f"{{{ns}}}{name}")


def _text(element: Element, name: str) -> str | None:
    found = element.find(f"{{{OUTBOUND}}}{name}")
    if found is None or found.get(f"{{{XSI}}}nil") == "true":
        return None
    return (found.text or "").strip() or None


def _local(tag: Any) -> str:
    return str(tag).rpartition("}")[2]


def render_message(org_id: str, notifications: Sequence[Notification]) -> bytes:
    """An Outbound Message as Salesforce shapes it (the reconciler spools records this way)."""
    parts = []
    for n in notifications:
        fields = "".join(_field(name, value) for name, value in n.sobject.fields.items())
        parts.append(
            f'<Notification><Id>{escape(n.id)}</Id><sObject xsi:type="sf:{n.sobject.type}" '
            f'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{fields}</sObject></Notification>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:xsi="{XSI}"><soapenv:Body>'
        f'<notifications xmlns="{OUTBOUND}"><OrganizationId>{escape(org_id)}</OrganizationId>'
        '<SessionId xsi:nil="true"/>'
        f"{''.join(parts)}</notifications></soapenv:Body></soapenv:Envelope>\n"
    ).encode()


def _field(name: str, value: str | None) -> str:
    if value is None:
        return f'<sf:{name} xsi:nil="true"/>'
    return f"<sf:{name}>{escape(value)}</sf:{name}>"
