"""The SOAP answers Salesforce's Outbound Messaging understands: the Ack and SOAP 1.1 faults.

Salesforce counts a message delivered only on `<Ack>true</Ack>` in a `notificationsResponse`;
anything else (a fault, a 5xx, a time-out) makes it retry, for up to 24 hours. A fault's
`faultcode` says whose side it is on: `Client` (the message or its sender is refused: fix it in
Salesforce or in returnsd's config) or `Server` (a temporary failure here: the retry will do).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from starlette.responses import Response

MEDIA = "text/xml; charset=utf-8"
ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    "<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>\n"
)
ACK = ENVELOPE.format(
    body='<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    "<Ack>true</Ack></notificationsResponse>"
).encode()


def ack() -> Response:
    """HTTP 200 with `<Ack>true</Ack>`: Salesforce will not send this message again."""
    return Response(ACK, status_code=200, media_type=MEDIA)


def fault_body(side: str, code: str, message: str) -> bytes:
    """A SOAP 1.1 Fault; `side` is Client or Server, `code` returnsd's own code, in `detail`."""
    body = (
        f"<soapenv:Fault><faultcode>soapenv:{side}</faultcode>"
        f"<faultstring>{escape(message)}</faultstring>"
        f'<detail><returnsd xmlns="urn:returnsd"><code>{escape(code)}</code></returnsd></detail>'
        "</soapenv:Fault>"
    )
    return ENVELOPE.format(body=body).encode()


def fault(status: int, code: str, message: str, **headers: str) -> Response:
    """A fault answer: 5xx statuses are the server's side (retry), the others the client's."""
    side = "Server" if status >= 500 else "Client"
    return Response(fault_body(side, code, message), status, headers, media_type=MEDIA)
