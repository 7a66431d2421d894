"""Salesforce Outbound Messaging: one SOAP endpoint per campaign on the HTTP channel's server.

A POST is checked (source address, client certificate, size), read with the hardened parser
(`ingest.salesforce_message`), its OrganizationId checked against the campaign's, and the whole
message stored through `Intake.accept` as `salesforce-<org>-<time>.xml`. Only then is it answered
`<Ack>true</Ack>`. Answers (SOAP faults say why, in `faultstring`):

- `403` the source address, the client certificate or the OrganizationId is not the campaign's;
- `413` the body is over `salesforce.max_message_bytes` (or the spool's file limit);
- `400` not well-formed XML, a DTD or entity, or not an Outbound Message;
- `500` a temporary failure (spool disk full, database down): Salesforce retries later;
- `200` Ack: stored (or the same bytes were stored before: nothing is applied twice).

The worker applies the notifications later (`ingest.salesforce`); Salesforce only needs to know
that the message is safe, and its first retry comes within seconds if the answer is slow.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from channels.base import ChannelContext
from channels.intake import Intake, Refusal, RefusalKind, Sender
from channels.salesforce_soap import ack, fault
from ingest.config import Campaign
from ingest.errors import TOO_LARGE, FileRejected
from ingest.salesforce_config import SalesforceMapping, org15
from ingest.salesforce_message import OutboundMessage, actor_of, parse_message, without_session

CHANNEL = "salesforce"
PEER_CERT = "tls_peer_cert"  # the request state key the HTTP server puts the client's DER in
log = logging.getLogger(f"returnsd.{__name__}")
Handler = Callable[[Request], Awaitable[Response]]


class Denied(Exception):
    """A request refused before its message is stored: HTTP status, code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def mount_salesforce(app: FastAPI, ctx: ChannelContext) -> list[str]:
    """Add each campaign's Outbound Message endpoint to `app`; return the paths."""
    listener = SalesforceListener(ctx)
    paths = []
    for campaign in ctx.settings.campaigns:
        if campaign.salesforce is None:
            continue
        path = campaign.salesforce.endpoint(campaign.id)
        app.add_api_route(
            path, listener.handler(campaign), methods=["POST"], include_in_schema=False
        )
        paths.append(path)
    return paths


class SalesforceListener:
    """Checks, stores and acknowledges Outbound Messages for every mapped campaign."""

    def __init__(self, ctx: ChannelContext) -> None:
        self.ctx = ctx
        self.intake = Intake(ctx.spool, CHANNEL)

    def handler(self, campaign: Campaign) -> Handler:
        """The route of one campaign."""

        async def receive(request: Request) -> Response:
            return await self.receive(request, campaign)

        return receive

    async def receive(self, request: Request, campaign: Campaign) -> Response:
        """Store one message durably, then Ack it; a fault saying why otherwise."""
        started = time.monotonic()
        mapping = campaign.salesforce
        assert mapping is not None
        peer = request.client.host if request.client else None
        who = Sender(campaign.id, None, peer)
        try:
            trusted(request, mapping, peer)
            data = await read_body(request, mapping.max_message_bytes)
            message = await run_in_threadpool(parse_message, data, mapping.max_message_bytes)
            if not mapping.knows_org(message.organization_id):
                raise Denied(
                    403,
                    "UNKNOWN_ORGANIZATION",
                    f"OrganizationId {message.organization_id} is not configured for this endpoint",
                )
        except Denied as exc:
            self.intake.refused(who, exc.code, reason=exc.message, started=started)
            return fault(exc.status, exc.code, exc.message)
        except FileRejected as exc:
            status = 413 if exc.code == TOO_LARGE else 400
            self.intake.refused(who, exc.code, reason=exc.message, started=started)
            return fault(status, exc.code, exc.message)
        except ClientDisconnect:
            self.intake.refused(who, "ABORTED", started=started)
            return Response(status_code=400)
        return await self._store(campaign, message, without_session(data), peer, started)

    async def _store(
        self,
        campaign: Campaign,
        message: OutboundMessage,
        data: bytes,
        peer: str | None,
        started: float,
    ) -> Response:
        org = message.organization_id
        who = Sender(campaign.id, actor_of(org), peer)
        name = f"salesforce-{org15(org)}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}.xml"
        meta: dict[str, object] = {
            "salesforce": {
                "organization_id": org,
                "action_id": message.action_id,
                "notifications": len(message.notifications),
            }
        }
        try:
            await run_in_threadpool(self.intake.accept, who, name, data, meta=meta, started=started)
        except Refusal as exc:
            if exc.kind.transient:
                log.warning("salesforce message for %s not stored: %s", campaign.id, exc.cause)
                return fault(
                    500,
                    exc.code,
                    "temporarily unable to store the message; Salesforce will send it again",
                )
            return fault(413 if exc.kind is RefusalKind.TOO_LARGE else 400, exc.code, exc.message)
        except Exception:
            log.exception("salesforce message for %s not stored", campaign.id)
            return fault(
                500, "INTERNAL_ERROR", "the message could not be stored; it will be retried"
            )
        return ack()


def trusted(request: Request, mapping: SalesforceMapping, peer: str | None) -> None:
    """Raise Denied unless the source address and client certificate are the campaign's."""
    if mapping.allow_from and not _allowed(peer, mapping.allow_from):
        raise Denied(403, "ADDRESS_NOT_ALLOWED", f"source address {peer} is not allowed")
    if not (mapping.require_client_certificate or mapping.client_certificate_sha256):
        return
    der = request.scope.get("state", {}).get(PEER_CERT)
    if not der:
        raise Denied(
            403,
            "CLIENT_CERTIFICATE_REQUIRED",
            "a client certificate is required (enable it on the Outbound Message)",
        )
    pinned = mapping.client_certificate_sha256
    if pinned and hashlib.sha256(der).hexdigest() not in pinned:
        raise Denied(
            403,
            "CLIENT_CERTIFICATE_NOT_ALLOWED",
            "the client certificate is not the one configured",
        )


def _allowed(peer: str | None, networks: list[str]) -> bool:
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is over `limit`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FileRejected(TOO_LARGE, f"the message is over the {limit:,}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FileRejected(TOO_LARGE, f"the message is over the {limit:,}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
