"""Mail the SMTP channel reads and writes: attachments in, receipts and results out via the relay.

Everything here is plain standard library (`email`, `smtplib`); nothing touches the SMTP server.
"""

from __future__ import annotations

import json
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from email.utils import format_datetime, getaddresses, make_msgid

from channels.names import is_supported_name, supported_list
from channels.smtp_outbox import FILE_ID_HEADER
from ingest.config import SmtpOptions
from ingest.results import FileOutcome

RELAY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Attachment:
    """One usable file found in a mail."""

    name: str
    data: bytes


@dataclass(frozen=True)
class MailFiles:
    """What a mail holds: the usable files, and a description of every other part."""

    files: list[Attachment]
    others: list[str]


def parse_mail(raw: bytes) -> EmailMessage:
    """Parse a received message (bytes as they came over SMTP)."""
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def find_files(msg: Message) -> MailFiles:
    """Every attachment with a supported name (or a nameless text/csv part) becomes a file."""
    files: list[Attachment] = []
    others: list[str] = []
    nameless = 0
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = part.get_filename()
        ctype = part.get_content_type()
        data = part.get_payload(decode=True)
        raw = data if isinstance(data, bytes) else b""
        if name and is_supported_name(name):
            files.append(Attachment(name, raw))
        elif not name and ctype == "text/csv":
            nameless += 1
            files.append(Attachment(f"attachment{nameless}.csv", raw))
        else:
            label = name or ("message text" if ctype.startswith("text/") else "unnamed part")
            others.append(f"{label} ({ctype}, {len(raw):,} bytes)")
    return MailFiles(files, others)


def sender_allowed(allow: list[str], address: str | None) -> bool:
    """True when the allow-list is empty or names this address or its `@domain`."""
    if not allow:
        return True
    if not address or "@" not in address:
        return False
    address = address.lower()
    domain = "@" + address.rsplit("@", 1)[1]
    return any(entry.lower() in (address, domain) for entry in allow)


def header_senders(msg: Message) -> list[str]:
    """The addresses in the message's From header(s)."""
    values = [str(v) for v in msg.get_all("From", [])]
    return [addr for _, addr in getaddresses(values) if addr]


def is_auto_submitted(msg: Message) -> bool:
    """True for machine-generated mail (RFC 3834), which must not get a "no file" notice."""
    value = str(msg.get("Auto-Submitted", "no")).strip().lower()
    return value != "no"


def _reply(options: SmtpOptions, to: str, subject: str, in_reply_to: str | None) -> EmailMessage:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = options.from_address
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=options.hostname)
    msg["Auto-Submitted"] = "auto-replied"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    return msg


def _accepts(max_bytes: int) -> str:
    return (
        f"Accepted attachments: {supported_list()} (any case), or a text/csv "
        f"part; at most {max_bytes:,} bytes each."
    )


def receipt_mail(
    options: SmtpOptions,
    to: str,
    in_reply_to: str | None,
    lines: list[str],
    others: list[str],
    max_bytes: int,
) -> EmailMessage:
    """The receipt sent right after a mail's files are spooled: one line per file, ids included."""
    msg = _reply(options, to, f"[returnsd] received {len(lines)} file(s)", in_reply_to)
    body = ["returnsd received your mail. Files:", *(f"  {line}" for line in lines)]
    if others:
        body += ["", "Ignored (not a supported file):", *(f"  {o}" for o in others)]
    body += ["", "A result mail follows for every queued file.", _accepts(max_bytes)]
    msg.set_content("\n".join(body) + "\n")
    return msg


def no_file_mail(
    options: SmtpOptions, to: str, in_reply_to: str | None, others: list[str], max_bytes: int
) -> EmailMessage:
    """The reply to a mail that held no usable attachment: what was found, what is accepted."""
    msg = _reply(options, to, "[returnsd] no returns file found in your mail", in_reply_to)
    found = [f"  {o}" for o in others] or ["  nothing (an empty message)"]
    body = [
        "returnsd found no file it can read in your mail, so nothing was queued.",
        "",
        "Found:",
        *found,
        "",
        _accepts(max_bytes),
        "Attach the file and send the mail again.",
    ]
    msg.set_content("\n".join(body) + "\n")
    return msg


def result_mail(options: SmtpOptions, outcome: FileOutcome, to: str) -> EmailMessage:
    """The result of one file: counts in subject and body, result CSV and JSON summary attached."""
    counts = _counts(outcome)
    subject = f"[returnsd] result for {outcome.name}: {outcome.status}"
    if counts.get("lines") is not None:
        subject += f", {counts.get('errors', 0)} of {counts['lines']} lines in error"
    msg = _reply(options, to, subject, outcome.meta.get("message_id"))
    msg[FILE_ID_HEADER] = outcome.file_id
    body = outcome.receipt_text()
    if outcome.error_code:
        body += f"error: {outcome.error_code}: {outcome.error_message}\n"
    body += "".join(_count_lines(counts))
    msg.set_content(body)
    csv = outcome.result_csv()
    if csv is not None:
        msg.add_attachment(csv, maintype="text", subtype="csv", filename=outcome.result_name)
    summary = json.dumps(outcome.summary(), indent=2, sort_keys=True, default=str).encode()
    msg.add_attachment(
        summary, maintype="application", subtype="json", filename=outcome.summary_name
    )
    return msg


def _counts(outcome: FileOutcome) -> dict[str, object]:
    counts = outcome.counts or (outcome.summary_doc or {}).get("counts") or {}
    return counts if isinstance(counts, dict) else {}


def _count_lines(counts: dict[str, object]) -> list[str]:
    if counts.get("lines") is None:
        return []
    lines = [
        f"{key}: {counts.get(key, 0)}\n" for key in ("lines", "applied", "unchanged", "errors")
    ]
    by_code = counts.get("by_error_code")
    if isinstance(by_code, dict) and by_code:
        lines += ["errors by code:\n", *(f"  {c}: {n}\n" for c, n in by_code.items())]
    return lines


class Relay:
    """The outbound relay replies go through (`channels.smtp.relay_*`)."""

    def __init__(self, options: SmtpOptions, timeout: float = RELAY_TIMEOUT) -> None:
        self.options = options
        self.timeout = timeout

    @property
    def configured(self) -> bool:
        """True when a relay host is set."""
        return bool(self.options.relay_host)

    def send(self, msg: EmailMessage) -> None:
        """Send one message; raises OSError or smtplib.SMTPException when the relay fails."""
        o = self.options
        assert o.relay_host is not None
        with smtplib.SMTP(
            o.relay_host, o.relay_port, local_hostname=o.hostname, timeout=self.timeout
        ) as smtp:
            if o.relay_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if o.relay_user:
                password = o.relay_password.reveal() if o.relay_password else ""
                smtp.login(o.relay_user, password)
            smtp.send_message(msg, from_addr=o.from_address)
