"""The aiosmtpd side of the SMTP channel: recipient and sender checks, spooling, AUTH, the listener.

Imported only when the SMTP channel starts, so aiosmtpd is loaded only if the channel is enabled.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from email.message import EmailMessage, Message
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from channels.connections import PerAddressCap
from channels.intake import Intake, Refusal, RefusalKind, Sender
from channels.smtp_mail import (
    Attachment,
    find_files,
    header_senders,
    is_auto_submitted,
    no_file_mail,
    parse_mail,
    receipt_mail,
    sender_allowed,
)
from ingest.config import Campaign, Settings, SmtpOptions
from ingest.errors import Transient
from ingest.passwords import verify_login

log = logging.getLogger(f"returnsd.{__name__}")

Notify = Callable[[EmailMessage], None]


def _peer(session: Session) -> str | None:
    peer = session.peer
    if isinstance(peer, tuple | list):
        return str(peer[0])
    return str(peer) if peer else None


class SmtpHandler:
    """aiosmtpd handler: refuses unknown recipients and senders, spools attachments, answers."""

    def __init__(self, settings: Settings, intake: Intake, pool: Executor, notify: Notify) -> None:
        assert settings.channels.smtp is not None
        self.options: SmtpOptions = settings.channels.smtp
        self.max_bytes = settings.limits.max_file_bytes
        self.intake = intake
        self.pool = pool
        self.notify = notify
        self.campaigns = {c.smtp.address: c for c in settings.campaigns if c.smtp is not None}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Accept a recipient only if it is a campaign address that this sender may write to."""
        campaign = self.campaigns.get(address.lower())
        sender = envelope.mail_from
        if campaign is None or campaign.smtp is None:
            self.intake.refused(
                None, "UNKNOWN_RECIPIENT", sender=sender, peer=_peer(session), name=address
            )
            return "550 5.1.1 No such returns address here"
        if len(envelope.rcpt_tos) >= self.options.max_recipients:
            return "452 4.5.3 Too many recipients"
        if not sender_allowed(campaign.smtp.allow_senders, sender):
            who = Sender(campaign.id, sender, _peer(session))
            self.intake.refused(who, "SENDER_NOT_ALLOWED", name=address)
            return "550 5.7.1 This sender may not send to this address"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Spool every attachment off the event loop; answer 250 only once all are stored."""
        raw = envelope.original_content or b""
        rcpts = list(envelope.rcpt_tos)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, self.process, raw, envelope.mail_from or "", rcpts, _peer(session)
        )

    def process(self, raw: bytes, mail_from: str, rcpts: list[str], peer: str | None) -> str:
        """Parse one message and spool its files; return the SMTP reply (runs in a worker)."""
        try:
            return self._process(raw, mail_from, rcpts, peer)
        except Refusal as exc:  # only transient refusals get here: the whole mail waits
            log.warning("mail from %s refused for now: %s", mail_from, exc)
            if exc.kind is RefusalKind.SPOOL_FULL:
                return "452 4.3.1 Spool full, try again later"
            return "451 4.3.0 Temporary failure, try again later"
        except Transient as exc:
            log.warning("mail from %s refused with 451: %s", mail_from, exc)
            return "451 4.3.0 Temporary failure, try again later"
        except Exception:
            log.exception("mail from %s could not be stored", mail_from)
            return "451 4.3.0 Internal error, try again later"

    def _process(self, raw: bytes, mail_from: str, rcpts: list[str], peer: str | None) -> str:
        started = time.monotonic()
        msg = parse_mail(raw)
        campaigns = list(
            {self.campaigns[r.lower()].id: self.campaigns[r.lower()] for r in rcpts}.values()
        )
        if not all(self._header_from_allowed(msg, c) for c in campaigns):
            self.intake.refused(None, "FROM_HEADER_NOT_ALLOWED", sender=mail_from, peer=peer)
            return "550 5.7.1 The From header names a sender not allowed for this address"
        found = find_files(msg)
        reply_to = mail_from or None
        meta = {
            "reply_to": reply_to,
            "message_id": str(msg["Message-ID"]).strip() if msg["Message-ID"] else None,
            "subject": str(msg.get("Subject", "")),
        }
        lines = [
            self._spool_one(c, att, mail_from, peer, meta, started)
            for c in campaigns
            for att in found.files
        ]
        in_reply_to = meta["message_id"]
        if not found.files:
            if reply_to and not is_auto_submitted(msg):
                self.notify(
                    no_file_mail(self.options, reply_to, in_reply_to, found.others, self.max_bytes)
                )
            return "250 2.0.0 OK, but no usable attachment was found (a reply explains)"
        if reply_to:
            self.notify(
                receipt_mail(
                    self.options, reply_to, in_reply_to, lines, found.others, self.max_bytes
                )
            )
        return f"250 2.0.0 OK, {len(lines)} file(s) received"

    def _header_from_allowed(self, msg: Message, campaign: Campaign) -> bool:
        assert campaign.smtp is not None
        allow = campaign.smtp.allow_senders
        senders = header_senders(msg)
        return not allow or (bool(senders) and all(sender_allowed(allow, a) for a in senders))

    def _spool_one(
        self,
        campaign: Campaign,
        att: Attachment,
        mail_from: str,
        peer: str | None,
        meta: dict[str, Any],
        started: float,
    ) -> str:
        who = Sender(campaign.id, mail_from, peer)
        try:
            acc = self.intake.accept(who, att.name, att.data, meta=meta, started=started)
        except Refusal as exc:
            if exc.kind.transient:
                raise
            return f"{att.name}: NOT accepted: {exc.code}: {exc.message}"
        where = f"campaign {campaign.id}"
        if acc.duplicate:
            return (
                f"{acc.name}: file {acc.file_id} for {where}: DUPLICATE of {acc.duplicate_of} "
                "(the same bytes were already received; nothing is applied twice)"
            )
        return f"{acc.name}: file {acc.file_id} for {where}: {acc.status}"


class Authenticator:
    """Checks AUTH PLAIN/LOGIN against `channels.smtp.auth_users` (scrypt hashes)."""

    def __init__(self, users: dict[str, str], intake: Intake) -> None:
        self.users = users
        self.intake = intake

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        """Return success only for a known user with the right password."""
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode(errors="replace")
        ok = verify_login(data.password.decode(errors="replace"), self.users.get(user))
        if not ok:
            self.intake.refused(None, "AUTH_FAILED", sender=user, peer=_peer(session))
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


# aiosmtpd resets its idle timer on every valid command: cap the cheap ones so a client cannot
# hold a connection open forever with NOOPs.
COMMAND_CALL_LIMIT = {"NOOP": 20, "HELP": 5, "VRFY": 5, "EXPN": 5, "RSET": 50, "*": 1000}


class LimitedSMTP(SMTP):
    """aiosmtpd's SMTP session, refusing (421) connections over a per-address cap."""

    def __init__(self, *args: Any, cap: PerAddressCap, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cap, self._counted = cap, ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection (once: STARTTLS calls this again); 421 over the cap."""
        if not self._counted:
            peer = transport.get_extra_info("peername") or ("?",)
            ip = str(peer[0])
            if not self._cap.admit(ip):
                cast(asyncio.WriteTransport, transport).write(
                    b"421 4.7.0 Too many connections from your address\r\n"
                )
                transport.close()
                return
            self._counted = ip
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the connection's place under the cap."""
        if self._counted:
            self._cap.release(self._counted)
            self._counted = ""
        super().connection_lost(exc)


class PortController(Controller):
    """aiosmtpd's threaded Controller that works on port 0 and fails at once when bind fails.

    Upstream waits the whole `ready_timeout` before reporting a bind error, and its self-test
    connects to the configured port (0). These overrides of 1.4.6's private hooks fix both.
    """

    def _run(self, ready_event: threading.Event) -> None:
        super()._run(ready_event)
        if self._thread_exception is not None:
            ready_event.set()  # wake start() now; _trigger_server raises the bind error

    def _trigger_server(self) -> None:
        if self._thread_exception is not None:
            raise self._thread_exception
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd is untyped

    def __init__(self, *args: Any, per_ip: int = 1_000_000, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cap = PerAddressCap(per_ip)  # only touched on the controller's event loop

    def factory(self) -> SMTP:
        """A session limited per address."""
        return LimitedSMTP(self.handler, cap=self._cap, **self.SMTP_kwargs)

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server = await super()._create_server()
        sockets = getattr(server, "sockets", None) or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        return server
