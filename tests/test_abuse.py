"""Hostile clients against the real FTP, SMTP and HTTP channels on loopback, and the secrets scan.

Attackers connect from 127.0.0.2 (or .3): still loopback, but another address than the
legitimate client's 127.0.0.1, so per-address limits and bans can be told apart.

Already covered elsewhere (not repeated here): FTP `..`/absolute/symlinks under results/
(test_channel_ftp::test_no_way_out_of_the_home), ban after failures and its expiry
(::test_wrong_password_then_ip_ban), per-IP and total limits with ftplib
(::test_per_ip_connection_limit, ::test_login_attempts_per_connection_and_total_connections),
plain login refused when FTPS is configured (::test_ftps_required_when_configured); SMTP unknown
recipient, too many recipients, oversize with and without SIZE, forged From with an allowed
envelope (test_channel_smtp); HTTP missing/wrong/other campaign's token, 413 declared, chunked and
multipart, 415 content types (test_channel_http).
"""

from __future__ import annotations

import contextlib
import email.message
import ftplib
import io
import logging
import os
import select
import smtplib
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from channels.base import ChannelContext
from channels.ftp import FtpChannel
from channels.http_api import HttpApiChannel
from channels.smtp import SmtpChannel
from ingest.config import Secret, Settings
from ingest.passwords import hash_password
from ingest.results import FileOutcome, ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from tests import secrets_scan
from tests.conftest import campaign_dict

ATTACKER, OTHER_ATTACKER, CLIENT = "127.0.0.2", "127.0.0.3", "127.0.0.1"
LOGIN, PASSWORD = "acme-ftp", "abuse-ftp-password-7"
PASSWORD_HASH = hash_password(PASSWORD)  # by-name import: the secrets scan must still see it
TOKEN = "abuse-api-token-0123456789"
TOKEN_HASH = hash_password(TOKEN)
ADDRESS = "returns+acme@returns.example"
ALLOWED = "ops@advertiser.example"
CSV = b"ActionId,Amount,Reason\r\n1000.1.1,0,ITEM_RETURNED\r\n"
WAIT = 10.0
LONG = os.environ.get("RETURNSD_LONG", "") not in ("", "0")


def wait_for(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `cond` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached before the deadline")
        time.sleep(0.02)


def connect_from(ip: str, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:port whose source address is `ip`."""
    sock = socket.socket()
    sock.settimeout(WAIT)
    sock.bind((ip, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_line(sock: socket.socket) -> bytes:
    """One reply line (up to LF); b"" when the server closed the connection first."""
    out = b""
    while not out.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        out += chunk
    return out


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the server closes `sock` (EOF or reset) within `timeout`; replies are skipped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            try:
                if not sock.recv(4096):
                    return True
            except OSError:
                return True
    return False


class Rig:
    """A channel over its own store, spool and results."""

    def __init__(self, settings: Settings, make: Callable[[ChannelContext], Any]) -> None:
        self.settings = settings
        self.store: Store = prepare(settings)
        self.spool = Spool(settings, self.store)
        self.results = ResultStore(self.store)
        self.channel = make(ChannelContext(settings, self.spool, self.results))

    def files(self, campaign: str = "acme") -> list[FileOutcome]:
        """Files recorded for a campaign, oldest first."""
        return sorted(self.results.recent(campaign=campaign), key=lambda f: f.file_id)

    def close(self) -> None:
        """Stop the channel, release the database."""
        self.channel.stop()
        self.store.dispose()


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    """Rigs made by a test, closed at teardown."""
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


# --- FTP


@pytest.fixture
def ftp_rig(make_settings: Callable[..., Settings], rigs: list[Rig]) -> Callable[..., Rig]:
    """Start an FTP channel; `login_delay` and `channels.ftp` options as keywords."""

    def build(login_delay: float = 0.05, **options: Any) -> Rig:
        settings = make_settings(
            channels={"ftp": {"port": 0, "root": "ftp", **options}},
            campaigns=[
                campaign_dict(ftp={"login": LOGIN, "password_hash": PASSWORD_HASH}),
                campaign_dict("beta", ftp={"login": "beta-ftp", "password_hash": PASSWORD_HASH}),
            ],
        )
        rig = Rig(settings, lambda ctx: FtpChannel(ctx, login_delay=login_delay, close_grace=0.1))
        rigs.append(rig)
        rig.channel.start()
        return rig

    return build


def ftp_client(rig: Rig, ip: str = CLIENT, password: str = PASSWORD) -> ftplib.FTP:
    """An ftplib client from `ip`, logged in."""
    ftp = ftplib.FTP(source_address=(ip, 0))
    ftp.connect("127.0.0.1", rig.channel.port, timeout=WAIT)
    ftp.login(LOGIN, password)
    return ftp


def ftp_upload_works(rig: Rig, name: str) -> bool:
    """True when a client from 127.0.0.1 logs in and gets a 226 for an upload."""
    ftp = ftp_client(rig)
    reply = ftp.storbinary(f"STOR {name}", io.BytesIO(CSV + name.encode()))
    ftp.quit()
    return reply.startswith("226")


def test_ftp_failed_login_is_slowed_and_does_not_stall_others(
    ftp_rig: Callable[..., Rig],
) -> None:
    rig = ftp_rig(login_delay=3.0)
    attacker = connect_from(ATTACKER, rig.channel.port)
    assert read_line(attacker).startswith(b"220")
    attacker.sendall(f"USER {LOGIN}\r\n".encode())
    assert read_line(attacker).startswith(b"331")
    attacker.sendall(b"PASS guess-1\r\n")
    sent = time.monotonic()
    assert ftp_upload_works(rig, "during_delay.csv")  # the IO loop is not held by the delay
    ready, _, _ = select.select([attacker], [], [], max(0.0, sent + 1.0 - time.monotonic()))
    assert not ready, "the failed login was answered before the delay, or before another client"
    assert read_line(attacker).startswith(b"530")
    attacker.close()
    assert [f.name for f in rig.files()] == ["during_delay.csv"]


def test_ftp_brute_force_across_connections_bans_the_address(
    ftp_rig: Callable[..., Rig],
) -> None:
    rig = ftp_rig(max_login_attempts=2, ban_after_failures=3, ban_seconds=900)
    first = ftplib.FTP(source_address=(ATTACKER, 0))
    first.connect("127.0.0.1", rig.channel.port, timeout=WAIT)
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        first.login(LOGIN, "guess-1")
    with pytest.raises(ftplib.error_perm, match=r"^530.*Disconnecting"):
        first.login(LOGIN, "guess-2")
    first.close()
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp_client(rig, ATTACKER, "guess-3")  # third failure from this address: banned
    for password in ("guess-4", PASSWORD):  # even the right password: turned away at connect
        with pytest.raises(ftplib.error_temp, match=r"^421"):
            ftp_client(rig, ATTACKER, password)
    assert ftp_upload_works(rig, "legit.csv")  # another address is not affected
    assert [f.name for f in rig.files()] == ["legit.csv"]


def test_ftp_bans_can_be_switched_off(ftp_rig: Callable[..., Rig]) -> None:
    rig = ftp_rig(max_login_attempts=2, ban_after_failures=2, ban_seconds=0)
    for guess in range(4):
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            ftp_client(rig, ATTACKER, f"guess-{guess}")
    ftp_client(rig, ATTACKER).quit()


def test_ftp_symlinks_and_paths_in_the_home_root_lead_nowhere(
    ftp_rig: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = ftp_rig()
    home = rig.settings.path(Path("ftp")) / "acme"
    beta_home = home.parent / "beta"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.csv"
    target.write_bytes(b"ActionId,Amount,Reason\r\nSECRET,0,OTHER\r\n")
    (home / "link.csv").symlink_to(target)
    (home / "evil.part").symlink_to(target)  # a temporary name: would be renamed into place
    (home / "dirlink").symlink_to(outside)
    (home / "beta.part").symlink_to(beta_home)
    ftp = ftp_client(rig)
    refusals: list[Callable[[], object]] = [
        lambda: ftp.storbinary("STOR link.csv", io.BytesIO(b"overwritten\n")),
        lambda: ftp.storbinary("APPE evil.part", io.BytesIO(b"appended\n")),
        lambda: ftp.retrbinary("RETR link.csv", print),
        lambda: ftp.retrbinary("RETR evil.part", print),
        lambda: ftp.rename("evil.part", "evil.csv"),
        lambda: ftp.delete("link.csv"),
        lambda: ftp.cwd("dirlink"),
        lambda: ftp.cwd("beta.part"),
        lambda: ftp.nlst("dirlink"),
        lambda: ftp.storbinary("STOR dirlink/x.csv", io.BytesIO(CSV)),
        lambda: ftp.storbinary("STOR beta.part/x.csv", io.BytesIO(CSV)),
        lambda: ftp.size("link.csv"),
        lambda: ftp.sendcmd("MDTM link.csv"),
        lambda: ftp.storbinary("STOR /tmp/abs.csv", io.BytesIO(CSV)),
        lambda: ftp.storbinary("STOR ../beta/x.csv", io.BytesIO(CSV)),
        lambda: ftp.mkd("../../escape"),
        lambda: ftp.sendcmd("SITE CHMOD 777 link.csv"),
    ]
    for attempt in refusals:
        with pytest.raises(ftplib.error_perm):
            attempt()
    ftp.storbinary("STOR own.part", io.BytesIO(CSV))
    for destination in ("../beta/own.csv", "/results/own.csv", "dirlink/own.csv"):
        with pytest.raises(ftplib.error_perm):
            ftp.rename("own.part", destination)
    ftp.quit()
    assert target.read_bytes().startswith(b"ActionId,Amount,Reason\r\nSECRET")
    assert sorted(p.name for p in outside.iterdir()) == ["target.csv"]
    assert sorted(p.name for p in beta_home.iterdir()) == ["results"]
    assert not Path("/tmp/abs.csv").exists()
    assert rig.files() == [] and rig.files("beta") == []


def test_ftp_connection_flood_from_one_address_is_capped(ftp_rig: Callable[..., Rig]) -> None:
    rig = ftp_rig(max_connections_per_ip=8)
    with contextlib.ExitStack() as stack:
        banners = []
        for _ in range(50):
            sock = stack.enter_context(connect_from(ATTACKER, rig.channel.port))
            banners.append(read_line(sock))
        assert sum(b.startswith(b"220") for b in banners) == 8
        refused = [b for b in banners if not b.startswith(b"220")]
        assert len(refused) == 42 and all(b.startswith(b"421") for b in refused), refused[:3]
        assert ftp_upload_works(rig, "during_flood.csv")  # while the 8 are still open
    assert [f.name for f in rig.files()] == ["during_flood.csv"]


def test_ftp_total_connection_limit_holds_and_recovers(ftp_rig: Callable[..., Rig]) -> None:
    rig = ftp_rig(max_connections=12, max_connections_per_ip=8)
    with contextlib.ExitStack() as stack:
        banners: dict[str, list[bytes]] = {ATTACKER: [], OTHER_ATTACKER: []}
        for ip, count in ((ATTACKER, 8), (OTHER_ATTACKER, 10)):
            for _ in range(count):
                sock = stack.enter_context(connect_from(ip, rig.channel.port))
                banners[ip].append(read_line(sock))
        assert all(b.startswith(b"220") for b in banners[ATTACKER])
        accepted = [b for b in banners[OTHER_ATTACKER] if b.startswith(b"220")]
        assert len(accepted) == 4  # 12 in all
        assert all(b.startswith(b"421") for b in banners[OTHER_ATTACKER][4:])
        with pytest.raises(ftplib.error_temp, match=r"^421"):
            ftp_client(rig)  # the server is full: everyone waits, the server stays up
    wait_for(lambda: _ftp_connects(rig))
    assert ftp_upload_works(rig, "after_flood.csv")


def _ftp_connects(rig: Rig) -> bool:
    try:
        ftp_client(rig).quit()
    except ftplib.error_temp:
        return False
    return True


def test_ftp_idle_connections_are_dropped(ftp_rig: Callable[..., Rig]) -> None:
    rig = ftp_rig(idle_timeout=5)
    with contextlib.ExitStack() as stack:
        idle = [stack.enter_context(connect_from(ATTACKER, rig.channel.port)) for _ in range(3)]
        for sock in idle:
            assert read_line(sock).startswith(b"220")
        logged_in = stack.enter_context(connect_from(ATTACKER, rig.channel.port))
        assert read_line(logged_in).startswith(b"220")
        logged_in.sendall(f"USER {LOGIN}\r\nPASS {PASSWORD}\r\n".encode())
        assert read_line(logged_in).startswith(b"331")
        assert read_line(logged_in).startswith(b"230")
        for sock in [*idle, logged_in]:  # never sends again: cut off after idle_timeout
            assert closed_by_peer(sock, timeout=30)


# --- SMTP


@pytest.fixture
def smtp_rig(make_settings: Callable[..., Settings], rigs: list[Rig]) -> Callable[..., Rig]:
    """Start an SMTP channel (no relay); `allow` is acme's sender allow-list."""

    def build(allow: list[str] | None = None, **options: Any) -> Rig:
        settings = make_settings(
            channels={"smtp": {"host": "127.0.0.1", "port": 0, **options}},
            campaigns=[campaign_dict(smtp={"address": ADDRESS, "allow_senders": allow or []})],
        )
        rig = Rig(settings, SmtpChannel)
        rigs.append(rig)
        rig.channel.start()
        return rig

    return build


def smtp_client(rig: Rig, ip: str = CLIENT) -> smtplib.SMTP:
    """An smtplib client from `ip`."""
    return smtplib.SMTP(
        "127.0.0.1", rig.channel.port, local_hostname="client", timeout=WAIT, source_address=(ip, 0)
    )


def mail(
    name: str = "r.csv", data: bytes = CSV, from_header: str | None = ALLOWED, **headers: str
) -> EmailMessage:
    """A message with one CSV attachment, CRLF line ends."""
    msg = EmailMessage(policy=policy.SMTP)
    if from_header is not None:
        msg["From"] = from_header
    msg["To"] = ADDRESS
    msg["Subject"] = "returns"
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content("Returns attached.")
    msg.add_attachment(data, maintype="text", subtype="csv", filename=name)
    return msg


def send_raw(rig: Rig, envelope: str, msg: EmailMessage) -> tuple[str, int]:
    """Run one transaction; return ("rcpt", code) when RCPT is refused, else ("data", code)."""
    with smtp_client(rig) as c:
        c.ehlo()
        assert c.mail(envelope)[0] == 250
        code, _ = c.rcpt(ADDRESS)
        if code != 250:
            return "rcpt", code
        return "data", c.data(msg.as_bytes())[0]


def test_smtp_trickler_does_not_block_other_clients(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig()
    trickler = connect_from(ATTACKER, rig.channel.port)
    assert read_line(trickler).startswith(b"220")
    for command, code in (("HELO t", b"250"), (f"MAIL FROM:<{ALLOWED}>", b"250"),
                          (f"RCPT TO:<{ADDRESS}>", b"250"), ("DATA", b"354")):  # fmt: skip
        trickler.sendall(command.encode() + b"\r\n")
        assert read_line(trickler).startswith(code)
    body = mail("slow.csv", CSV + b"2,0,OTHER\r\n").as_bytes()
    for i in range(10):  # one byte at a time, mid-DATA
        trickler.sendall(body[i : i + 1])
        time.sleep(0.1)
    with smtp_client(rig) as c:  # another client is served meanwhile
        c.send_message(mail("fast.csv"), from_addr=ALLOWED)
    assert [f.name for f in rig.files()] == ["fast.csv"]
    trickler.sendall(body[10:] + b"\r\n.\r\n")  # the trickler was not cut off (see the xfails)
    assert read_line(trickler).startswith(b"250")
    trickler.close()
    assert sorted(f.name for f in rig.files()) == ["fast.csv", "slow.csv"]


SMTP_NO_TIMEOUT = (
    "channels/smtp.py: no configurable SMTP timeout; aiosmtpd's default 300 s is in force, and it "
    "is reset by every valid command (not by DATA bytes): pass `timeout=` to PortController from "
    "a new `channels.smtp.idle_timeout` option"
)


def test_smtp_trickler_is_cut_off_by_a_timeout(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig(idle_timeout=5)
    trickler = connect_from(ATTACKER, rig.channel.port)
    assert read_line(trickler).startswith(b"220")
    trickler.sendall(f"HELO t\r\nMAIL FROM:<{ALLOWED}>\r\nRCPT TO:<{ADDRESS}>\r\nDATA\r\n".encode())
    deadline = time.monotonic() + 30
    cut = False
    while not cut and time.monotonic() < deadline:
        try:
            trickler.sendall(b"x")
        except OSError:
            cut = True
        cut = cut or closed_by_peer(trickler, timeout=0.5)
    trickler.close()
    assert cut, "a client trickling DATA was still connected after 30 s"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not LONG, reason="long form (~5 min): set RETURNSD_LONG=1")
def test_smtp_default_timeout_cuts_a_data_trickler(smtp_rig: Callable[..., Rig]) -> None:
    """aiosmtpd's default (300 s from the DATA command) is what bounds a DATA trickler today."""
    rig = smtp_rig()
    trickler = connect_from(ATTACKER, rig.channel.port)
    assert read_line(trickler).startswith(b"220")
    trickler.sendall(f"HELO t\r\nMAIL FROM:<{ALLOWED}>\r\nRCPT TO:<{ADDRESS}>\r\nDATA\r\n".encode())
    deadline = time.monotonic() + 420
    cut = False
    while not cut and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            trickler.sendall(b"x")
        cut = closed_by_peer(trickler, timeout=1.0)
    trickler.close()
    assert cut, "a client trickling DATA one byte a second was still connected after 420 s"


SMTP_NO_CALL_LIMIT = (
    "channels/smtp.py: aiosmtpd's command_call_limit is not set, so NOOP (or RSET, HELP, VRFY) "
    "resets the idle timer forever: pass command_call_limit={'NOOP': 20, ..., '*': 1000}"
)


def test_smtp_noop_loop_is_cut_off(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig()
    with smtp_client(rig, ATTACKER) as c:
        c.ehlo()
        codes = []
        with contextlib.suppress(smtplib.SMTPServerDisconnected):
            for _ in range(200):
                codes.append(c.noop()[0])
    assert 421 in codes or len(codes) < 200


def test_smtp_connection_flood_does_not_block_other_clients(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig()
    with contextlib.ExitStack() as stack:
        for _ in range(50):
            sock = stack.enter_context(connect_from(ATTACKER, rig.channel.port))
            assert read_line(sock)[:3] in (b"220", b"421")
        with smtp_client(rig) as c:
            c.send_message(mail("during_flood.csv"), from_addr=ALLOWED)
    assert [f.name for f in rig.files()] == ["during_flood.csv"]


SMTP_NO_CONNECTION_LIMIT = (
    "channels/smtp.py: the SMTP channel has no connection limit at all (aiosmtpd has none): "
    "one address can hold any number of connections (file descriptors); add "
    "`channels.smtp.max_connections_per_ip` (and a total) answered with 421 in connection_made"
)


def test_smtp_connection_flood_from_one_address_is_capped(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig(max_connections_per_ip=8)
    with contextlib.ExitStack() as stack:
        banners = []
        for _ in range(50):
            sock = stack.enter_context(connect_from(ATTACKER, rig.channel.port))
            banners.append(read_line(sock))
        assert sum(b.startswith(b"220") for b in banners) <= 8
        with smtp_client(rig) as c:
            c.send_message(mail("during_flood.csv"), from_addr=ALLOWED)


ALLOW = [ALLOWED, "@partner.example"]


@pytest.mark.parametrize(
    ("envelope", "from_header", "refused_at"),
    [
        ("x@evil.example", ALLOWED, "rcpt"),  # spoofed header, honest envelope
        ("", ALLOWED, "rcpt"),  # null sender
        ("x@sub.partner.example", "x@sub.partner.example", "rcpt"),  # a subdomain is not the domain
        ("x@partner.example.evil.example", ALLOWED, "rcpt"),
        ('"ops@advertiser.example"@evil.example', ALLOWED, "rcpt"),  # quoted local part
        (ALLOWED, '"ops@advertiser.example" <x@evil.example>', "data"),  # display-name trick
        (ALLOWED, f"{ALLOWED}, x@evil.example", "data"),  # one allowed, one not
        (ALLOWED, None, "data"),  # no From header at all
        ("OPS@Advertiser.Example", "Ops <ops@ADVERTISER.example>", None),  # allowed: any case
        ("x@partner.example", "y@partner.example", None),  # allowed by domain
    ],
)
def test_smtp_sender_must_be_allowed_in_envelope_and_header(
    smtp_rig: Callable[..., Rig], envelope: str, from_header: str | None, refused_at: str | None
) -> None:
    rig = smtp_rig(allow=ALLOW)
    stage, code = send_raw(rig, envelope, mail(from_header=from_header))
    if refused_at is None:
        assert (stage, code) == ("data", 250)
        assert [f.sender for f in rig.files()] == [envelope]
    else:
        assert (stage, code) == (refused_at, 550)
        assert rig.files() == []


def test_smtp_replies_go_to_the_envelope_sender_only(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig(allow=ALLOW)
    msg = mail(Reply_To="x@evil.example", Sender="x@evil.example")
    assert send_raw(rig, ALLOWED, msg) == ("data", 250)
    [f] = rig.files()
    assert f.meta["reply_to"] == ALLOWED


def test_smtp_smuggled_message_is_not_a_second_mail(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig()
    smuggled = mail("smuggled.csv", CSV + b"2,0,OTHER\r\n", from_header="x@evil.example")
    payload = (
        mail("first.csv").as_bytes().rstrip(b"\r\n")
        + b"\n.\r\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<"
        + ADDRESS.encode()
        + b">\r\nDATA\r\n"
        + smuggled.as_bytes()
        + b"\r\n.\r\n"
    )
    with smtp_client(rig) as c:
        c.ehlo()
        c.mail(ALLOWED)
        c.rcpt(ADDRESS)
        assert c.docmd("DATA")[0] == 354
        c.send(payload)
        code, _ = c.getreply()
        assert c.noop()[0] == 250  # exactly one reply: the smuggled commands were data
    assert code == 250
    assert [(f.name, f.sender) for f in rig.files()] == [("first.csv", ALLOWED)]


SPOOL_CONTROL_CHARS = (
    "ingest/spool.py Spool.accept keeps control characters of file names: a NUL fails the INSERT "
    "on PostgreSQL (HTTP 500 / SMTP 451 forever) and CR/LF break the HTTP result header and the "
    "result mail (SmtpChannel.deliver raises ValueError on every delivery attempt)"
)


def test_smtp_attachment_name_with_control_characters(smtp_rig: Callable[..., Rig]) -> None:
    rig = smtp_rig(relay_host="127.0.0.1", relay_port=9)  # nothing listens: deliver says False
    raw = (
        (
            f"From: {ALLOWED}\r\nTo: {ADDRESS}\r\nSubject: r\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="BB"\r\n\r\n--BB\r\nContent-Type: text/csv\r\n'
            "Content-Disposition: attachment; filename*=UTF-8''a%0D%0AX-Evil%3A%201.csv\r\n\r\n"
        ).encode()
        + CSV
        + b"--BB--\r\n"
    )
    with smtp_client(rig) as c:
        c.sendmail(ALLOWED, [ADDRESS], raw)
    [f] = rig.files()
    assert not any(ord(ch) < 32 for ch in f.name), repr(f.name)
    outcome = rig.results.outcome(f.file_id)
    assert outcome is not None
    assert rig.channel.deliver(outcome) in (True, False)  # must not raise


# --- HTTP


@pytest.fixture
def http_rig(make_settings: Callable[..., Settings], rigs: list[Rig]) -> Callable[..., Rig]:
    """Start the HTTP API; `database_url` may name another database."""

    def build(**overrides: Any) -> Rig:
        settings = make_settings(
            channels={"http": {"host": "127.0.0.1", "port": 0}},
            campaigns=[
                campaign_dict(http={"token_hash": TOKEN_HASH}),
                campaign_dict("beta", http={"token_hash": TOKEN_HASH + "x"}),
            ],
            **overrides,
        )
        rig = Rig(settings, HttpApiChannel)
        rigs.append(rig)
        rig.channel.start()
        return rig

    return build


def http_client(rig: Rig, ip: str = CLIENT) -> httpx.Client:
    """An httpx client from `ip`."""
    transport = httpx.HTTPTransport(local_address=ip)
    return httpx.Client(
        base_url=f"http://127.0.0.1:{rig.channel.port}", transport=transport, timeout=WAIT
    )


def post(client: httpx.Client, name: str | None, data: bytes = CSV, **headers: str) -> Any:
    """POST a raw CSV body to acme with ?name=."""
    params = {"name": name} if name is not None else {}
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/csv", **headers}
    return client.post("/v1/campaigns/acme/files", content=data, params=params, headers=headers)


def test_http_path_tricks_in_name_keep_only_the_base_name(
    http_rig: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = http_rig()
    tricks = ["../x.csv", "../../../../tmp/x.csv", "/etc/x.csv", "C:\\Windows\\x.csv",
              "..\\..\\x.csv", "results/../../x.csv", "%2e%2e%2fx.csv", "./x.csv"]  # fmt: skip
    with http_client(rig) as client:
        for i, name in enumerate(tricks):
            r = post(client, name, CSV + f"{i},0,OTHER\r\n".encode())
            assert r.status_code == 202, (name, r.text)
            out = rig.results.outcome(r.json()["file_id"])
            assert out is not None
            assert out.name == ("%2e%2e%2fx.csv" if name.startswith("%") else "x.csv"), name
    spool = rig.settings.path(rig.settings.spool_dir)
    assert sorted(p.name for p in (spool / "acme").iterdir()) == sorted(
        f.file_id for f in rig.files()
    )
    stray = [Path(d, n) for d, _, names in os.walk(tmp_path) for n in names if "x.csv" in n]
    assert stray == [] and not Path("/tmp/x.csv").exists()


def test_http_wrong_tokens_are_refused(http_rig: Callable[..., Rig]) -> None:
    rig = http_rig()
    with http_client(rig, ATTACKER) as client:
        for header in (f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                       f"Bearer {TOKEN_HASH}", "Bearer " + "A" * 5000, "Bearer"):  # fmt: skip
            assert post(client, "r.csv", Authorization=header).status_code == 401, header[:20]
        huge = post(client, "r.csv", Authorization="Bearer " + "A" * 100_000)
        assert 400 <= huge.status_code < 500  # refused (401 without scrypt, or by the parser)
    sock = connect_from(ATTACKER, rig.channel.port)  # raw: httpx would log the URL, token and all
    sock.sendall(
        f"POST /v1/campaigns/acme/files?name=r.csv&token={TOKEN}&access_token={TOKEN} HTTP/1.1\r\n"
        "Host: x\r\nContent-Type: text/csv\r\nContent-Length: 10\r\n\r\n0123456789".encode()
    )
    assert read_line(sock).startswith(b"HTTP/1.1 401")  # a token in the URL is not a token
    sock.close()
    assert rig.results.recent() == []


def test_http_body_declared_small_but_sent_large(http_rig: Callable[..., Rig]) -> None:
    rig = http_rig(limits={"max_file_bytes": 1000})
    sock = connect_from(ATTACKER, rig.channel.port)
    head = (
        "POST /v1/campaigns/acme/files?name=r.csv HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: text/csv\r\n"
        "Content-Length: 10\r\n\r\n"
    )
    sock.sendall(head.encode() + b"y" * 5000)  # more bytes than declared: the rest is garbage
    status = read_line(sock)
    sock.close()
    assert status.startswith(b"HTTP/1.1 202")  # exactly the 10 declared bytes were taken
    [f] = rig.results.recent()
    assert f.size == 10


HTTP_CONTROL_CHARS = SPOOL_CONTROL_CHARS + " (channels/http_body.py check_name lets them through)"


@pytest.mark.parametrize("name", ["x\x00.csv", "a\r\nX-Evil: 1.csv", "tab\there.csv"])
def test_http_control_characters_in_name(
    http_rig: Callable[..., Rig], db_url: str, name: str
) -> None:
    from ingest.worker import Worker

    rig = http_rig(database_url=db_url)
    with http_client(rig) as client:
        r = post(client, name)
        assert r.status_code in (202, 400, 415, 422), r.text
        if r.status_code != 202:
            return
        out = rig.results.outcome(r.json()["file_id"])
        assert out is not None and not any(ord(ch) < 32 for ch in out.name), repr(out)
        Worker(rig.settings, rig.store).drain()
        result = client.get(f"/v1/files/{out.file_id}/result", headers=auth_header())
        assert result.status_code == 200


def auth_header() -> dict[str, str]:
    """The Authorization header of acme's token."""
    return {"Authorization": f"Bearer {TOKEN}"}


HTTP_CONTENT_DISPOSITION = (
    "channels/http_app.py HttpApi.result builds Content-Disposition as f'filename=\"{name}\"': "
    "a name outside Latin-1 gives a 500, a quote breaks the header (parameter injection); use "
    "an escaped ASCII fallback plus filename*=UTF-8''<percent-encoded> (RFC 6266)"
)


@pytest.mark.parametrize(
    "name", ["返品 €.csv", 'a".csv', "x\"; filename*=UTF-8''evil.exe; y=\".csv"]
)
def test_http_result_of_any_file_name_can_be_downloaded(
    http_rig: Callable[..., Rig], name: str
) -> None:
    from ingest.worker import Worker

    rig = http_rig()
    with http_client(rig) as client:
        r = post(client, name)
        assert r.status_code == 202, r.text
        file_id = r.json()["file_id"]
        Worker(rig.settings, rig.store).drain()
        result = client.get(f"/v1/files/{file_id}/result", headers=auth_header())
    assert result.status_code == 200
    parsed = email.message.EmailMessage()
    parsed["Content-Disposition"] = result.headers["content-disposition"]
    assert parsed.get_filename() == "result_" + name


HTTP_NO_CONNECTION_LIMIT = (
    "channels/http_api.py: uvicorn's limit_concurrency (100) is shared by everyone and uvicorn "
    "has no timeout for a request's headers, so 100 idle connections from one address get every "
    "other client a 503 for as long as they stay open; cap connections per address and close "
    "connections that send no complete request within a few seconds (or run behind a proxy)"
)


def test_http_idle_connection_flood_does_not_starve_others(http_rig: Callable[..., Rig]) -> None:
    rig = http_rig()
    with contextlib.ExitStack() as stack:
        for _ in range(100):
            stack.enter_context(connect_from(ATTACKER, rig.channel.port))
        state = rig.channel._server.server_state  # uvicorn's own count, to know they are in
        deadline = time.monotonic() + 5  # a fix may refuse or close them: then go on anyway
        while len(state.connections) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        with http_client(rig) as client:
            assert post(client, "r.csv").status_code == 202


def test_http_headers_trickled_past_the_deadline_are_cut_off(
    make_settings: Callable[..., Settings], rigs: list[Rig]
) -> None:
    settings = make_settings(
        channels={"http": {"host": "127.0.0.1", "port": 0, "header_timeout": 1}},
        campaigns=[campaign_dict(http={"token_hash": TOKEN_HASH})],
    )
    rig = Rig(settings, HttpApiChannel)
    rigs.append(rig)
    rig.channel.start()
    with connect_from(ATTACKER, rig.channel.port) as slow:
        slow.sendall(b"POST /v1/campaigns/acme/files HTTP/1.1\r\nHost: x\r\n")
        assert closed_by_peer(slow, timeout=15), "a request whose headers never end stayed open"
    with http_client(rig) as client:
        assert post(client, "after.csv").status_code == 202


def test_http_over_the_per_address_cap_gets_503_never_a_reset(
    make_settings: Callable[..., Settings], rigs: list[Rig]
) -> None:
    settings = make_settings(
        channels={"http": {"host": "127.0.0.1", "port": 0, "max_connections_per_ip": 4}},
        campaigns=[campaign_dict(http={"token_hash": TOKEN_HASH})],
    )
    rig = Rig(settings, HttpApiChannel)
    rigs.append(rig)
    rig.channel.start()
    with contextlib.ExitStack() as stack:
        for _ in range(4):  # the address's whole allowance, held open
            stack.enter_context(connect_from(ATTACKER, rig.channel.port))
        time.sleep(0.2)
        body = CSV * 2000  # a body still being sent when the answer comes
        with http_client(rig, ATTACKER) as client:
            for _ in range(5):
                r = post(client, "r.csv", body, Connection="close")
                assert r.status_code == 503 and r.headers["Retry-After"] == "1"
                assert r.json()["code"] == "TOO_MANY_CONNECTIONS"
    with http_client(rig, ATTACKER) as client:  # the held connections are gone: room again
        assert post(client, "r.csv").status_code == 202


# --- secrets never in logs (the scan itself: tests/secrets_scan.py)


def test_scan_collects_this_sessions_secrets(tmp_path: Path) -> None:
    assert PASSWORD in secrets_scan.collected_secrets()  # hashed via a by-name import
    assert TOKEN in secrets_scan.collected_secrets()
    secret_file = tmp_path / "relay-password"
    secret_file.write_text("relay-password-from-a-file\n")
    assert Secret(file=secret_file).reveal() == "relay-password-from-a-file"
    assert "relay-password-from-a-file" in secrets_scan.collected_secrets()
    before = secrets_scan.counts()
    logging.getLogger("some.library.nobody.configured").debug("a debug line")
    assert secrets_scan.counts()[0] == before[0] + 1  # DEBUG records of any logger are kept


def test_find_leaks_masks_and_ignores_short_secrets() -> None:
    lines = [
        ("log returnsd INFO", "user=acme password=hunter2-long ok"),
        ("log x DEBUG", "nothing here"),
        ("test[hunter2-long] Captured stdout", "a secret in the source does not count"),
        ("log y DEBUG", "abc is too short to count"),
    ]
    leaks = secrets_scan.find_leaks(lines, {"hunter2-long", "abc"})
    assert [leak.source for leak in leaks] == ["log returnsd INFO"]
    assert leaks[0].masked == "user=acme password=<secret: 12 chars> ok"
    encoded = "dXNlcjpodW50ZXIyLWxvbmc="  # base64 of "user:hunter2-long", as in AUTH lines
    [leak] = secrets_scan.find_leaks(
        [("log mail.log DEBUG", f"AUTH PLAIN {encoded}")], {"hunter2-long"}
    )
    assert "hunter2" not in leak.masked and "<secret in base64: 12 chars>" in leak.masked


def test_key_material_of_a_private_key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    body = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
    found = list(secrets_scan.key_material("key follows\n" + pem))
    assert found[0] == "".join(body) and found[1:] == body[1:]


def test_scan_fails_a_session_that_logs_a_secret(tmp_path: Path) -> None:
    planted = "planted-Secret-value-42"
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            f"""
            import logging
            from ingest.passwords import hash_password

            def test_leaks():
                hash_password({planted!r})
                logging.getLogger("some.lib").debug("connecting with password=%s", {planted!r})

            def test_quiet():
                hash_password("abc")
                logging.getLogger("other").warning("abc is short: ignored")
            """
        )
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    args = ["-q", "-p", "tests.secrets_scan", "-p", "no:cacheprovider", "test_leaky.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 passed" in out and planted not in out
    assert "secrets-scan: LEAK in log some.lib DEBUG: connecting with password=<secret" in out
    assert "secrets-scan: 1 secrets" in out and "1 leaks" in out
