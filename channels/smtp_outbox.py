"""Reply mails that could not be handed to a relay yet: kept as files, sent once a relay exists.

Without `channels.smtp.relay_host` every reply (receipt, "no file found", result) is written to
`channels.smtp.outbox_dir` as `<time>-<random>.eml` (atomically) and logged `event=outbox`, never
`event=delivered`. When the channel starts with a relay, and every `outbox_flush_seconds` after
that, the outbox is sent oldest first; each mail sent is deleted and logged `event=delivered`. A
recipient the relay refuses for good is logged `event=undeliverable` and its mail moved to
`undeliverable/`; a relay that is down stops the flush until the next one.
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from channels.replies import write_atomic
from ingest.events import file_event

log = logging.getLogger(f"returnsd.{__name__}")

FILE_ID_HEADER = "X-Returnsd-File-Id"
UNDELIVERABLE = "undeliverable"
SendMail = Callable[[EmailMessage], None]  # sends one message; OSError or SMTPException if not


def mail_event(event: str, msg: EmailMessage, **fields: object) -> None:
    """Log what became of a reply mail (`outbox`, `delivered`, `undeliverable`)."""
    file_event(event, file_id=msg.get(FILE_ID_HEADER), channel="smtp", sender=msg["To"],
               name=msg["Subject"], **fields)  # fmt: skip


def permanently_refused(exc: smtplib.SMTPRecipientsRefused) -> bool:
    """True when the relay refused every recipient with a 5xx: sending again cannot help."""
    return all(code >= 500 for code, _ in exc.recipients.values())


class Outbox:
    """A folder of reply mails waiting for a relay."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, msg: EmailMessage) -> Path:
        """Keep a mail for later (durably) and log `event=outbox`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.eml"
        write_atomic(self.folder / name, msg.as_bytes(policy=policy.SMTP))
        mail_event("outbox", msg, where=str(self.folder / name))
        return self.folder / name

    def pending(self) -> list[Path]:
        """The kept mails, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*.eml") if p.is_file())

    def flush(self, send: SendMail) -> int:
        """Send every kept mail through `send`; return how many left the outbox."""
        done = 0
        for path in self.pending():
            msg = message_from_bytes(path.read_bytes(), policy=policy.SMTP)
            assert isinstance(msg, EmailMessage)
            try:
                send(msg)
            except smtplib.SMTPRecipientsRefused as exc:
                if not permanently_refused(exc):
                    log.warning("outbox: relay refused %s for now: %s", path.name, exc)
                    return done
                mail_event("undeliverable", msg, outcome=str(exc.recipients))
                (self.folder / UNDELIVERABLE).mkdir(exist_ok=True)
                path.replace(self.folder / UNDELIVERABLE / path.name)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("outbox: relay failed, %d mail(s) wait: %s", len(self.pending()), exc)
                return done
            else:
                path.unlink(missing_ok=True)
                mail_event("delivered", msg, where="relay (from the outbox)")
            done += 1
        return done
