"""Inbound SMTP: real aiosmtpd on port 0, real smtplib clients, a real relay collecting replies."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime as dt
import email
import hashlib
import io
import json
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from channels.base import ChannelContext, ChannelError
from channels.smtp import SmtpChannel, message_size_limit
from channels.smtp_server import PortController
from ingest.config import Settings
from ingest.errors import ConfigError, SpoolFull
from ingest.passwords import hash_password
from ingest.results import FileOutcome, ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from tests.conftest import campaign_dict
from tests.tls import self_signed as _self_signed

ADDRESS = "returns+acme@returns.example"
CSV_A = b"ActionId,Amount,Reason\r\n1000.1.1,0,ITEM_RETURNED\r\n"
CSV_B = b"ActionId,Amount,Reason\r\n1000.1.2,5.00,ORDER_UPDATE\r\n"
WAIT = 10.0
RESULT = b"ActionId,Amount,Reason,Line,Status\r\n1,0,OTHER,2,APPLIED\r\n"


class Collector:
    """An aiosmtpd handler acting as the outbound relay: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Refuse `gone@…` for good, like a mailbox that no longer exists."""
        if address.startswith("gone@"):
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Keep the message (once the gate is open) and wake waiters."""
        while not self.gate.is_set():
            await asyncio.sleep(0.01)
        msg = email.message_from_bytes(envelope.original_content or b"", policy=policy.default)
        with self.cond:
            self.messages.append(msg)
            self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
            self.cond.notify_all()
        return "250 OK"

    def wait(self, count: int = 1) -> list[EmailMessage]:
        """Wait until `count` messages arrived (fail after a generous bound)."""
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.messages) >= count, WAIT), self.messages
            return list(self.messages)


@pytest.fixture
def relay() -> Iterator[tuple[Collector, int]]:
    """A second aiosmtpd on 127.0.0.1:0 acting as the relay."""
    collector = Collector()
    controller = PortController(collector, hostname="127.0.0.1", port=0, server_hostname="relay")
    controller.start()
    yield collector, controller.port
    controller.stop()


class Harness:
    """An SMTP channel over its own SQLite store."""

    def __init__(self, settings: Settings, spool_class: type[Spool] = Spool) -> None:
        self.settings = settings
        self.store: Store = prepare(settings)
        self.spool = spool_class(settings, self.store)
        self.results = ResultStore(self.store)
        self.channel = SmtpChannel(ChannelContext(settings, self.spool, self.results))
        self.started = False

    def start(self) -> SmtpChannel:
        """Start the channel (stopped at teardown)."""
        self.channel.start()
        self.started = True
        return self.channel

    def client(self) -> smtplib.SMTP:
        """An smtplib client connected to the channel."""
        return smtplib.SMTP("127.0.0.1", self.channel.port, local_hostname="client", timeout=WAIT)

    def files(self, campaign: str = "acme") -> list[FileOutcome]:
        """Files recorded for a campaign, oldest first."""
        return sorted(self.results.recent(campaign=campaign), key=lambda f: f.file_id)

    def close(self) -> None:
        """Stop the channel and release the database."""
        if self.started:
            self.channel.stop()
        self.store.dispose()


@pytest.fixture
def harness(
    make_settings: Callable[..., Settings], relay: tuple[Collector, int]
) -> Iterator[Callable[..., Harness]]:
    """Build a Harness; keyword arguments override `channels.smtp` options."""
    made: list[Harness] = []

    def build(
        limits: dict[str, Any] | None = None,
        allow: list[str] | None = None,
        spool_class: type[Spool] = Spool,
        **options: Any,
    ) -> Harness:
        opts = {
            "host": "127.0.0.1",
            "port": 0,
            "relay_host": "127.0.0.1",
            "relay_port": relay[1],
            "from_address": "returns@returns.example",
            **options,
        }
        smtp = {"address": ADDRESS, "allow_senders": allow or []}
        settings = make_settings(
            channels={"smtp": opts},
            campaigns=[campaign_dict(smtp=smtp), campaign_dict("beta")],
            **({"limits": limits} if limits else {}),
        )
        made.append(Harness(settings, spool_class))
        return made[-1]

    yield build
    for h in made:
        h.close()


def mail(
    *attachments: tuple[str, bytes, str],
    sender: str = "ops@advertiser.example",
    to: str = ADDRESS,
    body: str = "Returns attached.",
) -> EmailMessage:
    """A message with CRLF line ends (policy SMTP) and the given (name, bytes, type) attachments."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = "returns"
    msg["Message-ID"] = "<orig-1@advertiser.example>"
    msg.set_content(body)
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name or None)
    return msg


def send(h: Harness, msg: EmailMessage, sender: str = "ops@advertiser.example") -> None:
    """Send one message through smtplib."""
    with h.client() as c:
        c.send_message(msg, from_addr=sender)


def test_two_attachments_become_two_files_and_a_receipt(
    harness: Callable[..., Harness], relay: tuple[Collector, int]
) -> None:
    h = harness()
    h.start()
    send(
        h, mail(("returns.csv", CSV_A, "text/csv"), ("MORE.CSV", CSV_B, "application/octet-stream"))
    )
    files = sorted(h.files(), key=lambda f: f.name, reverse=True)
    assert [f.name for f in files] == ["returns.csv", "MORE.CSV"]
    assert [f.sha256 for f in files] == [hashlib.sha256(d).hexdigest() for d in (CSV_A, CSV_B)]
    assert all(f.channel == "smtp" and f.sender == "ops@advertiser.example" for f in files)
    assert files[0].meta["reply_to"] == "ops@advertiser.example"
    assert files[0].meta["message_id"] == "<orig-1@advertiser.example>"
    assert files[0].peer == "127.0.0.1"
    (receipt,) = relay[0].wait(1)
    assert relay[0].envelopes[0] == ("returns@returns.example", ["ops@advertiser.example"])
    assert receipt["In-Reply-To"] == "<orig-1@advertiser.example>"
    text = receipt.get_body().get_content()  # type: ignore[union-attr]
    assert files[0].file_id in text and files[1].file_id in text
    assert "message text" in text  # the body part is listed as ignored


def test_receipt_is_sent_outside_the_smtp_transaction(
    harness: Callable[..., Harness], relay: tuple[Collector, int]
) -> None:
    h = harness()
    h.start()
    relay[0].gate.clear()  # the relay hangs: an inline send would block the 250
    try:
        send(h, mail(("returns.csv", CSV_A, "text/csv")))
        assert len(h.files()) == 1 and relay[0].messages == []
    finally:
        relay[0].gate.set()
    assert len(relay[0].wait(1)) == 1


def test_unknown_recipient_is_refused_at_rcpt(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        send(h, mail(("r.csv", CSV_A, "text/csv"), to="nobody@returns.example"))
    assert exc.value.recipients["nobody@returns.example"][0] == 550
    assert h.files() == []


def test_recipient_address_is_case_insensitive(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    with h.client() as c:
        c.send_message(mail(("r.csv", CSV_A, "text/csv")), to_addrs=[ADDRESS.upper()])
    assert len(h.files()) == 1


def test_too_many_recipients(harness: Callable[..., Harness]) -> None:
    h = harness(max_recipients=1)
    h.start()
    with h.client() as c:
        c.ehlo()
        c.mail("ops@advertiser.example")
        assert c.rcpt(ADDRESS)[0] == 250
        assert c.rcpt(ADDRESS)[0] == 452


def test_sender_allow_list(harness: Callable[..., Harness]) -> None:
    h = harness(allow=["@advertiser.example", "boss@other.example"])
    h.start()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
        send(h, mail(("r.csv", CSV_A, "text/csv"), sender="x@evil.example"), "x@evil.example")
    assert exc.value.recipients[ADDRESS][0] == 550
    # Allowed envelope, forged From header: refused after DATA.
    with pytest.raises(smtplib.SMTPDataError) as data_exc:
        send(h, mail(("r.csv", CSV_A, "text/csv"), sender="x@evil.example"))
    assert data_exc.value.smtp_code == 550
    assert h.files() == []
    send(h, mail(("r.csv", CSV_A, "text/csv"), sender="BOSS@other.example"), "boss@other.example")
    assert len(h.files()) == 1


def test_oversize_message_gets_552(harness: Callable[..., Harness]) -> None:
    h = harness(limits={"max_file_bytes": 1000})
    h.start()
    big = mail(("big.csv", b"x" * (message_size_limit(1000) + 10), "text/csv"))
    with pytest.raises(smtplib.SMTPSenderRefused) as exc:  # SIZE declared at MAIL FROM
        send(h, big)
    assert exc.value.smtp_code == 552
    with h.client() as c:  # no SIZE: the limit is enforced while DATA streams in
        c.ehlo()
        c.mail("ops@advertiser.example")
        c.rcpt(ADDRESS)
        code, _ = c.data(big.as_bytes())
    assert code == 552
    assert h.files() == []


def test_attachment_over_file_limit_is_reported(
    harness: Callable[..., Harness], relay: tuple[Collector, int]
) -> None:
    h = harness(limits={"max_file_bytes": 1000})
    h.start()
    send(h, mail(("big.csv", b"y" * 1500, "text/csv"), ("ok.csv", CSV_A, "text/csv")))
    assert [f.name for f in h.files()] == ["ok.csv"]
    text = relay[0].wait(1)[0].get_body().get_content()  # type: ignore[union-attr]
    assert "big.csv: NOT accepted: TOO_LARGE" in text


def test_mail_without_attachment_gets_a_reply(
    harness: Callable[..., Harness], relay: tuple[Collector, int]
) -> None:
    h = harness()
    h.start()
    with h.client() as c:
        c.ehlo()
        c.mail("ops@advertiser.example")
        c.rcpt(ADDRESS)
        code, answer = c.data(mail(("logo.png", b"\x89PNG", "image/png")).as_bytes())
    assert code == 250 and b"no usable attachment" in answer
    assert h.files() == []
    (reply,) = relay[0].wait(1)
    text = reply.get_body().get_content()  # type: ignore[union-attr]
    assert "no file" in text and "logo.png (image/png" in text and ".xlsx" in text
    assert reply["To"] == "ops@advertiser.example"


def test_reserved_name_reported_others_spooled_and_nameless_csv(
    harness: Callable[..., Harness], relay: tuple[Collector, int]
) -> None:
    h = harness()
    h.start()
    send(h, mail(("result_old.csv", CSV_B, "text/csv"), ("", CSV_A, "text/csv")))
    assert [f.name for f in h.files()] == ["attachment1.csv"]
    text = relay[0].wait(1)[0].get_body().get_content()  # type: ignore[union-attr]
    assert "result_old.csv: NOT accepted: RESERVED_NAME" in text


def test_same_file_twice_is_one_file(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    send(h, mail(("r.csv", CSV_A, "text/csv")))
    send(h, mail(("r.csv", CSV_A, "text/csv")))  # a resend after a lost 250
    assert len(h.files()) == 1


class FullSpool(Spool):
    """A spool whose disk is full."""

    def accept(self, *args: Any, **kwargs: Any) -> Any:
        """Always fail like a full disk."""
        raise SpoolFull("no space left in the spool; try again later")


def test_spool_full_gets_452(harness: Callable[..., Harness]) -> None:
    h = harness(spool_class=FullSpool)
    h.start()
    with pytest.raises(smtplib.SMTPDataError) as exc:
        send(h, mail(("r.csv", CSV_A, "text/csv")))
    assert exc.value.smtp_code == 452


def _outcome(tmp_path: Path, **meta: Any) -> FileOutcome:
    result = tmp_path / "result.csv"
    result.write_bytes(RESULT)
    return FileOutcome(
        file_id="20260101000000abcdef0123",
        campaign="acme",
        channel="smtp",
        name="returns.csv",
        sender="ops@advertiser.example",
        peer="127.0.0.1",
        size=10,
        sha256="0" * 64,
        status="COMPLETE",
        received_at=dt.datetime.now(dt.UTC),
        counts={"APPLIED": 1},
        meta=meta,
        result_path=result,
    )


def test_deliver_mails_the_result(
    harness: Callable[..., Harness], relay: tuple[Collector, int], tmp_path: Path
) -> None:
    h = harness()
    out = _outcome(tmp_path, reply_to="ops@advertiser.example", message_id="<orig-1@a.example>")
    assert h.channel.deliver(out) is True
    (msg,) = relay[0].wait(1)
    assert msg["To"] == "ops@advertiser.example" and msg["In-Reply-To"] == "<orig-1@a.example>"
    parts = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}
    assert parts["result_returns.csv"] == RESULT.decode()
    assert b'"status": "COMPLETE"' in parts["result_returns.json"]
    assert h.channel.deliver(_outcome(tmp_path)) is True  # no reply_to: nothing to do


def test_deliver_gives_up_on_a_permanently_refused_recipient(
    harness: Callable[..., Harness],
    relay: tuple[Collector, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    h = harness()
    assert h.channel.deliver(_outcome(tmp_path, reply_to="gone@advertiser.example")) is True
    assert relay[0].messages == [] and "event=undeliverable" in caplog.text


def test_deliver_false_when_relay_down_true_without_relay(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once the socket is closed
    out = _outcome(tmp_path, reply_to="ops@advertiser.example")
    assert harness(relay_port=closed).channel.deliver(out) is False
    assert harness(relay_host=None).channel.deliver(out) is True


def test_start_fails_with_address_when_port_taken(harness: Callable[..., Harness]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        h = harness(port=port)
        with pytest.raises(ChannelError, match=f"127.0.0.1:{port}"):
            h.channel.start()


@pytest.mark.parametrize("require_starttls", [True, False])
def test_starttls_and_auth(
    harness: Callable[..., Harness],
    tmp_path: Path,
    require_starttls: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    cert, key = _self_signed(tmp_path)
    h = harness(
        tls_cert=str(cert),
        tls_key=str(key),
        require_starttls=require_starttls,
        auth_users={"adv": hash_password("s3cret")},
    )
    h.start()
    client_ctx = ssl.create_default_context(cafile=str(cert))
    with h.client() as c:
        c.ehlo()
        assert c.has_extn("starttls") and not c.has_extn("auth")
        # AUTH PLAIN with the right password, in clear text: refused
        code = c.docmd("AUTH", "PLAIN AGFkdgBzM2NyZXQ=")[0]
        assert code == (530 if require_starttls else 538)
        assert c.docmd("MAIL", "FROM:<ops@advertiser.example>")[0] == 530
    with h.client() as c:
        c.starttls(context=client_ctx)
        c.ehlo()
        assert c.has_extn("auth")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("adv", "wrong")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("nobody", "s3cret")
        assert c.docmd("MAIL", "FROM:<ops@advertiser.example>")[0] == 530
        c.login("adv", "s3cret")
        c.send_message(mail(("r.csv", CSV_A, "text/csv")))
    assert len(h.files()) == 1
    assert "AUTH_FAILED" in caplog.text and "s3cret" not in caplog.text
    assert "AGFkdgBzM2NyZXQ=" not in caplog.text  # nor the base64 credentials


def test_auth_without_tls_is_a_config_error(harness: Callable[..., Harness]) -> None:
    with pytest.raises(ConfigError, match="auth_users need tls_cert"):
        harness(auth_users={"adv": hash_password("s3cret")})


def _import_two_actions(h: Harness, tmp_path: Path) -> None:
    from ingest.actions import import_actions

    today = dt.datetime.now(dt.UTC).date().isoformat()
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,Payout,"
        f"CustomerStatus\nA1,acme,101,O1,P1,{today}T10:00:00,100.00,USD,10.00,NEW\n"
        f"A2,acme,101,O2,P1,{today}T11:00:00,50.00,USD,5.00,NEW\n"
    )
    assert import_actions(h.store, h.settings, actions).imported == 2


def test_end_to_end_mail_process_result_mail(
    harness: Callable[..., Harness], relay: tuple[Collector, int], tmp_path: Path
) -> None:
    from ingest.worker import Worker

    h = harness()
    _import_two_actions(h, tmp_path)
    h.start()
    returns = (
        b"ActionId,Amount,Reason\r\nA1,60.00,ITEM_RETURNED\r\nA2,0,CONS_FRAUD\r\nNOPE,1,OTHER\r\n"
    )
    send(h, mail(("returns.csv", returns, "text/csv")))
    relay[0].wait(1)  # the receipt
    assert Worker(h.settings, h.store).drain() == 1
    outcome = h.results.outcome(h.files()[0].file_id)
    assert outcome is not None and outcome.status == "COMPLETE"
    assert h.channel.deliver(outcome) is True
    result = relay[0].wait(2)[1]
    assert result["In-Reply-To"] == "<orig-1@advertiser.example>"
    assert result["To"] == "ops@advertiser.example"
    parts = {p.get_filename(): p.get_content() for p in result.iter_attachments()}
    rows = list(csv.DictReader(io.StringIO(parts["result_returns.csv"])))
    assert [r["Status"] for r in rows] == ["APPLIED", "APPLIED", "ERROR"]
    assert rows[0]["NewAmount"] == "60.00" and rows[1]["State"] == "REVERSED"
    assert rows[2]["ErrorCode"] == "ACTION_NOT_FOUND"
    assert json.loads(parts["result_returns.json"])["status"] == "COMPLETE"


def test_without_relay_replies_wait_in_the_outbox_until_a_relay_exists(
    harness: Callable[..., Harness],
    relay: tuple[Collector, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ingest.worker import Worker

    caplog.set_level(logging.INFO, logger="returnsd.files")
    outbox = tmp_path / "outbox"
    h = harness(relay_host=None, outbox_dir=str(outbox))
    _import_two_actions(h, tmp_path)
    h.start()
    returns = b"ActionId,Amount,Reason\r\nA1,60.00,ITEM_RETURNED\r\nNOPE,1,OTHER\r\n"
    send(h, mail(("returns.csv", returns, "text/csv")))
    assert Worker(h.settings, h.store).drain() == 1
    outcome = h.results.outcome(h.files()[0].file_id)
    assert outcome is not None and h.channel.deliver(outcome) is True
    h.channel.stop()
    h.started = False
    kept = sorted(outbox.glob("*.eml"))
    assert len(kept) == 2  # the receipt and the result
    events = [r.getMessage() for r in caplog.records]
    assert sum("event=outbox" in e for e in events) == 2
    assert not any("event=delivered" in e for e in events)
    assert relay[0].messages == []

    later = harness(outbox_dir=str(outbox))  # the operator configures the relay and restarts
    later.start()
    got = relay[0].wait(2)
    subjects = sorted(str(m["Subject"]) for m in got)
    assert subjects[1] == "[returnsd] result for returns.csv: COMPLETE, 1 of 2 lines in error"
    deadline = time.monotonic() + WAIT
    while list(outbox.glob("*.eml")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the relay answered; the outbox file goes right after
    assert list(outbox.glob("*.eml")) == []
    delivered = [e for e in (r.getMessage() for r in caplog.records) if "event=delivered" in e]
    assert any(f"file_id={outcome.file_id}" in e for e in delivered)


def test_result_mail_carries_counts(
    harness: Callable[..., Harness], relay: tuple[Collector, int], tmp_path: Path
) -> None:
    out = _outcome(tmp_path, reply_to="ops@advertiser.example")
    counts = {"lines": 10, "applied": 3, "unchanged": 0, "errors": 7,
              "by_error_code": {"ACTION_NOT_FOUND": 7}}  # fmt: skip
    out = dataclasses.replace(out, counts=counts)
    assert harness().channel.deliver(out) is True
    (msg,) = relay[0].wait(1)
    assert msg["Subject"] == "[returnsd] result for returns.csv: COMPLETE, 7 of 10 lines in error"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "errors: 7" in text and "ACTION_NOT_FOUND: 7" in text


def test_attachments_named_like_the_parsers_read_them_are_taken(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    h.start()
    tsv = b"ActionId\tAmount\tReason\r\n1000.1.1\t0\tITEM_RETURNED\r\n"
    psv = b"ActionId|Amount|Reason\r\n1000.1.2|0|ITEM_RETURNED\r\n"
    send(h, mail(("r.tsv", tsv, "text/tab-separated-values"), ("r.psv", psv, "text/plain")))
    assert sorted(f.name for f in h.files()) == ["r.psv", "r.tsv"]
