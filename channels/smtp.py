"""Inbound SMTP channel: each campaign has an address; attachments become files; replies by mail.

What it checks, in order:

- RCPT TO must be a campaign address (`campaign.smtp.address`, case-insensitive), else `550`;
  more than `channels.smtp.max_recipients` recipients get `452`.
- When the campaign has `smtp.allow_senders` (addresses, or `@domain` for a whole domain), the
  envelope sender (MAIL FROM) must match at RCPT time (`550 5.7.1`), and every address in the
  message's From header must match too, checked after DATA (`550 5.7.1`), so a mail cannot pass by
  forging only one of the two. Neither is authenticated by SMTP itself: for real assurance run
  returnsd behind an MTA that enforces SPF/DKIM/DMARC, or require AUTH (`auth_users`).
  Replies only ever go to the envelope sender, never to From or Reply-To.
- The message may be at most `limits.max_file_bytes` * 4/3 (base64) plus line breaks plus 256 KiB
  of headers and text (`552`, at MAIL FROM when the client declares SIZE, else after DATA).

The `250` after DATA is sent only once every usable attachment is in the spool (a `452` when the
spool's disk is full, `451` on another temporary failure: the sender's MTA retries, and the spool
recognises the same bytes). A receipt mail listing the file ids (or explaining that no usable file
was found) is sent through the relay from a background thread; the result of every file is mailed by
`deliver()` (`event=delivered` once the relay took it); the daemon retries a result while the relay
is down. Without a relay every reply goes to the outbox (`channels.smtp_outbox`) and is sent once a
relay is configured. The sender allow-list is checked at RCPT (the envelope sender is known then).
"""

from __future__ import annotations

import logging
import math
import smtplib
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import TYPE_CHECKING, ClassVar

from channels.base import ChannelContext, ChannelError
from channels.intake import Intake
from channels.replies import delivered
from channels.smtp_mail import Relay, result_mail
from channels.smtp_outbox import Outbox, mail_event, permanently_refused
from ingest.config import SmtpOptions
from ingest.results import FileOutcome

if TYPE_CHECKING:
    from channels.smtp_server import PortController

log = logging.getLogger(f"returnsd.{__name__}")

HEADROOM = 256 * 1024
SPOOL_WORKERS = 2


def message_size_limit(max_file_bytes: int) -> int:
    """Largest message accepted: one maximal file in base64 (76-char lines + CRLF) plus headroom."""
    encoded = math.ceil(max_file_bytes / 3) * 4
    return encoded + math.ceil(encoded / 76) * 2 + HEADROOM


class SmtpChannel:
    """Inbound SMTP server (aiosmtpd) for the campaigns' addresses, replying through the relay."""

    name: ClassVar[str] = "smtp"

    def __init__(self, ctx: ChannelContext) -> None:
        self.ctx = ctx
        self.options: SmtpOptions = ctx.settings.channels.smtp or SmtpOptions(port=0)
        self.relay = Relay(self.options)
        self.outbox = Outbox(ctx.settings.path(self.options.outbox_dir))
        self.port = self.options.port
        self._flusher: threading.Thread | None = None
        self._stopping = threading.Event()
        self._controller: PortController | None = None
        self._spool_pool: ThreadPoolExecutor | None = None
        self._reply_pool: ThreadPoolExecutor | None = None

    @property
    def address(self) -> str:
        """host:port the server listens on (the real port once started)."""
        return f"{self.options.host}:{self.port}"

    def start(self) -> None:
        """Listen; return once the server answers, or raise ChannelError (address and cause)."""
        from channels.smtp_server import (
            COMMAND_CALL_LIMIT,
            Authenticator,
            PortController,
            SmtpHandler,
        )

        if self.ctx.settings.channels.smtp is None:
            raise ChannelError("smtp: channels.smtp is not configured")
        tls = self._tls_context()
        users = self.options.auth_users
        if users and tls is None:
            raise ChannelError(
                f"smtp on {self.address}: auth_users needs tls_cert and tls_key "
                "(AUTH is only offered after STARTTLS)"
            )
        self._spool_pool = ThreadPoolExecutor(SPOOL_WORKERS, thread_name_prefix="smtp-spool")
        self._reply_pool = ThreadPoolExecutor(1, thread_name_prefix="smtp-reply")
        intake = Intake(self.ctx.spool, self.name)
        handler = SmtpHandler(self.ctx.settings, intake, self._spool_pool, self.send_later)
        controller = PortController(
            handler,
            hostname=self.options.host,
            port=self.options.port,
            server_hostname=self.options.hostname,
            data_size_limit=message_size_limit(self.ctx.settings.limits.max_file_bytes),
            tls_context=tls,
            require_starttls=self.options.require_starttls,
            authenticator=Authenticator(users, intake) if users else None,
            auth_required=bool(users),
            auth_require_tls=True,
            timeout=self.options.idle_timeout,
            command_call_limit=COMMAND_CALL_LIMIT,
            per_ip=self.options.max_connections_per_ip,
        )
        try:
            controller.start()
        except Exception as exc:
            controller.stop(no_assert=True)
            if not controller.loop.is_closed():
                controller.loop.close()
            self._shutdown_pools()
            raise ChannelError(f"smtp: cannot listen on {self.address}: {exc}") from exc
        self._controller = controller
        self.port = controller.port
        self._start_flusher()
        log.info("smtp listening on %s", self.address)

    def _start_flusher(self) -> None:
        """With a relay, send what waits in the outbox now and every `outbox_flush_seconds`."""
        if not self.relay.configured:
            waiting = len(self.outbox.pending())
            if waiting:
                log.warning("smtp: no relay configured; %d reply mail(s) wait in %s",
                            waiting, self.outbox.folder)  # fmt: skip
            return
        self._stopping.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="smtp-outbox", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            try:
                self.outbox.flush(self.relay.send)
            except Exception:  # the loop must survive anything; the next round retries
                log.exception("smtp: outbox flush failed")
            if self._stopping.wait(self.options.outbox_flush_seconds):
                return

    def _tls_context(self) -> ssl.SSLContext | None:
        o = self.options
        if o.tls_cert is None or o.tls_key is None:
            return None
        settings = self.ctx.settings
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(settings.path(o.tls_cert), settings.path(o.tls_key))
        except (OSError, ssl.SSLError) as exc:
            raise ChannelError(f"smtp on {self.address}: cannot load TLS cert/key: {exc}") from exc
        return context

    def stop(self) -> None:
        """Stop listening, finish mails being stored and replies being sent, free the threads."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self._shutdown_pools()
        self._stopping.set()
        if self._flusher is not None:
            self._flusher.join(timeout=60)
            self._flusher = None

    def _shutdown_pools(self) -> None:
        # Spool workers first: a mail being stored may still queue its receipt on the reply pool.
        for pool in (self._spool_pool, self._reply_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._spool_pool = self._reply_pool = None

    def send_later(self, msg: EmailMessage) -> None:
        """Queue a receipt (or "no file found") mail for the relay, off the SMTP transaction."""
        if not self.relay.configured or self._reply_pool is None:
            self.outbox.put(msg)
            return
        self._reply_pool.submit(self._send_or_keep, msg)

    def _send_or_keep(self, msg: EmailMessage) -> None:
        try:
            self.relay.send(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            if permanently_refused(exc):
                mail_event("undeliverable", msg, outcome=str(exc.recipients))
            else:
                self.outbox.put(msg)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("reply %r to %s kept in the outbox: %s", msg["Subject"], msg["To"], exc)
            self.outbox.put(msg)

    def deliver(self, outcome: FileOutcome) -> bool:
        """Mail the result to the envelope sender (or keep it in the outbox without a relay)."""
        to = outcome.meta.get("reply_to")
        if not to:
            return True  # null sender (bounce) or unknown: nobody to tell
        msg = result_mail(self.options, outcome, to)
        if not self.relay.configured:
            self.outbox.put(msg)
            return True
        try:
            self.relay.send(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            if permanently_refused(exc):
                mail_event("undeliverable", msg, outcome=str(exc.recipients))
                return True  # permanently refused: retrying cannot help
            return self._relay_failed(outcome, exc)
        except (OSError, smtplib.SMTPException) as exc:
            return self._relay_failed(outcome, exc)
        delivered(outcome, f"relay {self.options.relay_host}:{self.options.relay_port} to {to}")
        return True

    def _relay_failed(self, outcome: FileOutcome, exc: Exception) -> bool:
        log.warning("result of %s not mailed, relay failed: %s", outcome.file_id, exc)
        return False
