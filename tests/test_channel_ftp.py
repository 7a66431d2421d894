"""The hosted FTP(S) channel, driven by real clients (ftplib, curl) against a server on port 0."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import ftplib
import io
import json
import logging
import shutil
import socket
import ssl
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from channels.base import ChannelContext, ChannelError
from channels.ftp import FtpChannel
from ingest.config import Settings
from ingest.errors import SpoolFull
from ingest.passwords import hash_password
from ingest.results import FileOutcome, ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from tests.conftest import campaign_dict, need
from tests.tls import self_signed

LOGIN, PASSWORD = "acme-ftp", "correct horse battery"
CSV = b"ActionId,Amount,Reason\n1000.1.1,0,ITEM_RETURNED\n"
BIG = b"ActionId,Amount,Reason\n" + b"1000.1.1,0,ITEM_RETURNED\n" * 20_000  # ~530 kB


class Ftpd:
    """An FTP channel over its own SQLite store, plus helpers to look at what it did."""

    def __init__(self, settings: Settings, grace: float) -> None:
        self.settings = settings
        self.store: Store = prepare(settings)
        self.spool = Spool(settings, self.store)
        self.results = ResultStore(self.store)
        ctx = ChannelContext(settings, self.spool, self.results)
        self.channel = FtpChannel(ctx, login_delay=0.05, close_grace=grace)
        self.home = settings.path(Path("ftp")) / "acme"

    def files(self) -> list[FileOutcome]:
        """Every file the spool recorded for `acme`, oldest first."""
        return sorted(self.results.recent(campaign="acme"), key=lambda f: f.file_id)

    def client(self, password: str = PASSWORD, login: str = LOGIN) -> ftplib.FTP:
        """A plain ftplib client, logged in."""
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.channel.port, timeout=10)
        ftp.login(login, password)
        return ftp

    def tls_client(self) -> ftplib.FTP_TLS:
        """An FTPS client (certificate not verified: it is self-signed), logged in, PROT P."""
        ftps = ftplib.FTP_TLS(context=_insecure_context())
        ftps.connect("127.0.0.1", self.channel.port, timeout=10)
        ftps.login(LOGIN, PASSWORD)
        ftps.prot_p()
        return ftps

    def root_names(self) -> list[str]:
        """What the user's home holds on disk."""
        return sorted(p.name for p in self.home.iterdir())


@pytest.fixture(scope="module")
def password_hash() -> str:
    """The scrypt hash of PASSWORD (computed once: scrypt is slow on purpose)."""
    return hash_password(PASSWORD)


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made at test time."""
    return self_signed(tmp_path_factory.mktemp("tls"), "127.0.0.1")


@pytest.fixture
def ftpd(
    make_settings: Callable[..., Settings], password_hash: str
) -> Iterator[Callable[..., Ftpd]]:
    """Build (and start, unless start=False) an Ftpd; keywords override `channels.ftp`."""
    made: list[Ftpd] = []

    def build(
        limits: dict[str, Any] | None = None, start: bool = True, grace: float = 0.1, **options: Any
    ) -> Ftpd:
        settings = make_settings(
            channels={"ftp": {"port": 0, "root": "ftp", **options}},
            campaigns=[
                campaign_dict(ftp={"login": LOGIN, "password_hash": password_hash}),
                campaign_dict("beta", ftp={"login": "beta-ftp", "password_hash": password_hash}),
                campaign_dict("gamma"),  # no FTP login: no home
            ],
            **({"limits": limits} if limits else {}),
        )
        made.append(Ftpd(settings, grace))
        if start:
            made[-1].channel.start()
        return made[-1]

    yield build
    for d in made:
        d.channel.stop()
        d.store.dispose()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `cond` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached before the deadline")
        time.sleep(0.02)


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_upload(ftp: ftplib.FTP, name: str, data: bytes, d: Ftpd) -> socket.socket:
    """Open a STOR, send `data`, and wait until the server has written some of it."""
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd(f"STOR {name}")
    conn.sendall(data)
    wait_for(lambda: (d.home / name).exists() and (d.home / name).stat().st_size > 0)
    return conn


def retr(ftp: ftplib.FTP, path: str) -> bytes:
    """Download a file."""
    out = io.BytesIO()
    ftp.retrbinary(f"RETR {path}", out.write)
    return out.getvalue()


# --- receiving


def test_ftplib_upload_is_spooled_with_a_receipt(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    reply = ftp.storbinary("STOR returns.csv", io.BytesIO(CSV))
    assert reply.startswith("226")
    [f] = d.files()
    assert f.status == "QUEUED" and f.name == "returns.csv" and f.channel == "ftp"
    assert f.sender == LOGIN and f.peer == "127.0.0.1" and f.size == len(CSV)
    assert f.file_id in reply
    assert ftp.nlst() == ["results"]  # the drop box is clean again
    receipt = retr(ftp, f"results/receipt_returns_{f.file_id}.txt").decode()
    assert f"file_id: {f.file_id}" in receipt and "status: QUEUED" in receipt
    ftp.quit()


def test_curl_upload(ftpd: Callable[..., Ftpd], tmp_path: Path) -> None:
    if not shutil.which("curl"):
        need("curl", "curl is not installed")
    d = ftpd()
    src = tmp_path / "returns.csv"
    src.write_bytes(CSV)
    url = f"ftp://{LOGIN}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{d.channel.port}/"
    run = subprocess.run(["curl", "-sS", "-T", str(src), url], capture_output=True, timeout=20)
    assert run.returncode == 0, run.stderr
    assert [f.name for f in d.files()] == ["returns.csv"]
    assert d.root_names() == ["results"]


def test_part_upload_counts_once_renamed(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    ftp.storbinary("STOR x.csv.part", io.BytesIO(CSV))
    assert d.files() == [] and "x.csv.part" in d.root_names()
    assert ftp.rename("x.csv.part", "x.csv").startswith("250")
    [f] = d.files()
    assert f.name == "x.csv" and f.status == "QUEUED"
    assert d.root_names() == ["results"]
    assert f"receipt_x_{f.file_id}.txt" in ftp.nlst("results")
    ftp.storbinary("STOR .y.csv", io.BytesIO(b"other bytes\n"))  # dotfile: also temporary
    assert len(d.files()) == 1
    ftp.quit()


def test_same_bytes_again_is_reported_duplicate(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    ftp.storbinary("STOR a.csv", io.BytesIO(CSV))
    reply = ftp.storbinary("STOR b.csv", io.BytesIO(CSV))  # first one still QUEUED: same file
    assert [f.name for f in d.files()] == ["a.csv"]
    assert d.files()[0].file_id in reply
    ftp.quit()


def test_quit_sent_during_an_upload_still_stores_it(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    conn = start_upload(ftp, "q.csv", BIG, d)
    ftp.putcmd("QUIT")
    assert ftp.getline().startswith("221")
    conn.close()
    assert ftp.getline().startswith("226")
    [f] = d.files()
    assert f.name == "q.csv" and f.size == len(BIG)
    ftp.close()


# --- cut-off uploads are never spooled


def test_upload_aborted_with_abor_is_dropped(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    conn = start_upload(ftp, "cut.csv", BIG[: len(BIG) // 2], d)
    ftp.putcmd("ABOR")
    assert ftp.getline().startswith("426")
    assert ftp.getline().startswith("226")
    conn.close()
    wait_for(lambda: d.root_names() == ["results"])
    assert d.files() == []
    ftp.storbinary("STOR after.csv", io.BytesIO(CSV))  # the session goes on normally
    assert [f.name for f in d.files()] == ["after.csv"]


def test_stor_whose_data_connection_never_opens_is_given_up(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    ftp.sendcmd("PASV")  # the client never connects to it
    assert ftp.sendcmd("STOR lost.csv").startswith("150")
    assert ftp.sendcmd("ABOR").startswith("225")
    assert d.root_names() == ["results"]
    ftp.sendcmd("PASV")
    ftp.sendcmd("STOR lost.csv")
    ftp.storbinary("STOR lost.csv", io.BytesIO(CSV))  # a new PASV + STOR replace the stale one
    [f] = d.files()
    assert f.name == "lost.csv" and f.size == len(CSV)


def test_data_connection_reset_is_dropped(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    conn = start_upload(ftp, "reset.csv", BIG[: len(BIG) // 2], d)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # RST, not FIN
    with pytest.raises(ftplib.error_temp, match=r"^426"):
        ftp.voidresp()
    wait_for(lambda: d.root_names() == ["results"])  # deleted right after the 426 is sent
    assert d.files() == []


@pytest.mark.parametrize("pause", [0, 0.05])  # 0.05 < close_grace: the data end is seen first
def test_client_that_dies_mid_upload_is_dropped(ftpd: Callable[..., Ftpd], pause: float) -> None:
    d = ftpd(grace=0.5)
    ftp = d.client()
    conn = start_upload(ftp, "dead.csv", BIG[: len(BIG) // 2], d)
    conn.close()  # a killed client: FIN on the data connection and on the control connection
    time.sleep(pause)
    ftp.close()
    wait_for(lambda: d.root_names() == ["results"])
    time.sleep(0.6)  # past close_grace: a wrongly kept upload would be spooled by now
    assert d.files() == []


def test_tls_data_connection_without_close_notify_is_dropped(
    ftpd: Callable[..., Ftpd], cert_pair: tuple[Path, Path]
) -> None:
    d = ftpd(tls_cert=str(cert_pair[0]), tls_key=str(cert_pair[1]))
    ftps = d.tls_client()
    conn = start_upload(ftps, "tlscut.csv", BIG[: len(BIG) // 2], d)
    conn.shutdown(socket.SHUT_RDWR)  # plain TCP FIN under the TLS layer: a truncation
    conn.close()
    with pytest.raises(ftplib.error_temp, match=r"426.*close_notify"):
        ftps.voidresp()
    wait_for(lambda: d.root_names() == ["results"])
    assert d.files() == []
    ftps.storbinary("STOR whole.csv", io.BytesIO(BIG))  # a clean TLS upload still works
    assert [f.name for f in d.files()] == ["whole.csv"]


def test_upload_over_the_size_limit_is_refused(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd(limits={"max_file_bytes": 100_000})
    ftp = d.client()
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd("STOR big.csv")
    with contextlib.suppress(OSError):  # the server cuts the data connection: expected
        conn.sendall(BIG)
    conn.close()
    with pytest.raises(ftplib.error_perm, match=r"^552"):
        ftp.voidresp()
    wait_for(lambda: d.root_names() == ["results"])
    assert d.files() == []


# --- names and paths


def test_reserved_names_are_refused(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    with pytest.raises(ftplib.error_perm, match=r"^553"):
        ftp.storbinary("STOR result_foo.csv", io.BytesIO(CSV))
    with pytest.raises(ftplib.error_perm, match=r"^553"):
        ftp.storbinary("STOR Receipt_foo.csv", io.BytesIO(CSV))
    ftp.storbinary("STOR foo.part", io.BytesIO(CSV))
    with pytest.raises(ftplib.error_perm, match=r"^553"):
        ftp.rename("foo.part", "result_foo.csv")
    assert d.files() == [] and d.root_names() == ["foo.part", "results"]


def test_resume_only_under_a_temporary_name(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = d.client()
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.storbinary("APPE x.csv", io.BytesIO(CSV))
    ftp.storbinary("STOR x.csv.part", io.BytesIO(CSV[:10]))
    ftp.storbinary("APPE x.csv.part", io.BytesIO(CSV[10:]))
    ftp.rename("x.csv.part", "x.csv")
    [f] = d.files()
    assert f.size == len(CSV)


def test_no_way_out_of_the_home(ftpd: Callable[..., Ftpd], tmp_path: Path) -> None:
    d = ftpd()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (d.home / "results" / "link").symlink_to(outside)
    (d.home / "results" / "passwd").symlink_to("/etc/passwd")
    ftp = d.client()
    for path in ("../../../../etc/passwd", "/etc/passwd", "results/link/secret.txt",
                 "results/passwd", "/../outside/secret.txt"):  # fmt: skip
        with pytest.raises(ftplib.error_perm):
            retr(ftp, path)
    for folder in ("/etc", "results/link", "/results/link/"):
        with pytest.raises(ftplib.error_perm):
            ftp.cwd(folder)
    ftp.cwd("../../..")
    assert ftp.pwd() == "/"
    for bad in ("results/x.csv", "results/link/x.csv"):
        with pytest.raises(ftplib.error_perm):
            ftp.storbinary(f"STOR {bad}", io.BytesIO(CSV))
    with pytest.raises(ftplib.error_perm):
        ftp.mkd("sub")
    with pytest.raises(ftplib.error_perm):
        ftp.rmd("results")
    ftp.storbinary("STOR ../../escape.csv", io.BytesIO(CSV))  # lands inside the home
    assert [f.name for f in d.files()] == ["escape.csv"]
    assert not (tmp_path / "escape.csv").exists() and not (d.home.parent / "escape.csv").exists()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_each_login_is_jailed_in_its_own_campaign(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    assert sorted(p.name for p in d.home.parent.iterdir()) == [".tmp", "acme", "beta"]
    acme, beta = d.client(), d.client(login="beta-ftp")
    acme.storbinary("STOR returns.csv", io.BytesIO(CSV))
    assert beta.nlst("results") == []
    for path in ("/../acme/results/receipt_returns.txt", "../acme/results/receipt_returns.txt"):
        with pytest.raises(ftplib.error_perm):
            retr(beta, path)
    beta.storbinary("STOR returns.csv", io.BytesIO(b"ActionId,Amount,Reason\nB1,0,OTHER\n"))
    [b] = d.results.recent(campaign="beta")
    assert b.sender == "beta-ftp" and [f.name for f in d.files()] == ["returns.csv"]


def test_concurrent_upload_of_the_same_name_is_refused(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    first, second = d.client(), d.client()
    conn = start_upload(first, "same.csv", BIG, d)
    with pytest.raises(ftplib.error_temp, match=r"^450"):
        second.storbinary("STOR same.csv", io.BytesIO(b"other\n"))
    conn.close()
    assert first.voidresp().startswith("226")
    [f] = d.files()
    assert f.size == len(BIG)


# --- logins, TLS, limits


def test_wrong_password_then_ip_ban(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd(max_login_attempts=5, ban_after_failures=2, ban_seconds=1)
    early = ftplib.FTP()
    early.connect("127.0.0.1", d.channel.port, timeout=10)  # connected before the ban
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        d.client(password="wrong")
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        d.client(password="also wrong")  # second failure: banned
    with pytest.raises(ftplib.error_temp, match=r"^421"):
        d.client()  # turned away at connect
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        early.login(LOGIN, PASSWORD)  # even with the right password
    early.close()

    def can_log_in() -> bool:
        try:
            d.client().quit()
        except ftplib.error_temp:
            return False
        return True

    wait_for(can_log_in, timeout=10)


def test_unknown_login_is_refused(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", d.channel.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp.login("nobody", PASSWORD)
    ftp.close()


def test_per_ip_connection_limit(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd(max_connections_per_ip=2)
    a, b = d.client(), d.client()
    with pytest.raises(ftplib.error_temp, match=r"^421"):
        d.client()
    a.quit()
    wait_for(lambda: _connects(d))
    b.quit()


def _connects(d: Ftpd) -> bool:
    try:
        d.client().quit()
    except ftplib.error_temp:
        return False
    return True


def test_login_attempts_per_connection_and_total_connections(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd(max_login_attempts=2, max_connections=2)
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", d.channel.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp.login(LOGIN, "wrong")
    with pytest.raises(ftplib.error_perm, match=r"^530.*Disconnecting"):
        ftp.login(LOGIN, "wrong again")
    with pytest.raises((EOFError, OSError)):
        ftp.login(LOGIN, PASSWORD)  # the server hung up
    ftp.close()
    a, b = d.client(), d.client(login="beta-ftp")
    with pytest.raises(ftplib.error_temp, match=r"^421"):
        d.client()
    a.quit()
    b.quit()


def test_passive_port_range_and_masquerade_address(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd(passive_ports=[47100, 47119], masquerade_address="198.51.100.7")
    ftp = d.client()
    reply = ftp.sendcmd("PASV")
    *host, hi, lo = (int(n) for n in reply[reply.index("(") + 1 : reply.index(")")].split(","))
    assert host == [198, 51, 100, 7] and 47100 <= hi * 256 + lo <= 47119
    ftp.close()


def test_ftps_required_when_configured(
    ftpd: Callable[..., Ftpd], cert_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    d = ftpd(tls_cert=str(cert_pair[0]), tls_key=str(cert_pair[1]))
    plain = ftplib.FTP()
    plain.connect("127.0.0.1", d.channel.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match=r"^550.*TLS"):
        plain.login(LOGIN, PASSWORD)
    plain.close()
    ftps = ftplib.FTP_TLS(context=_insecure_context())
    ftps.connect("127.0.0.1", d.channel.port, timeout=10)
    ftps.login(LOGIN, PASSWORD)
    with pytest.raises(ftplib.error_perm, match=r"^550.*TLS"):
        ftps.storbinary("STOR clear.csv", io.BytesIO(CSV))  # data in clear: refused
    ftps.prot_p()
    assert ftps.storbinary("STOR tls.csv", io.BytesIO(CSV)).startswith("226")
    ftps.quit()
    if not shutil.which("curl"):
        need("curl", "curl is not installed")
    src = tmp_path / "curl.csv"
    src.write_bytes(b"ActionId,Amount,Reason\n2,0,OTHER\n")
    url = f"ftp://{LOGIN}:{PASSWORD.replace(' ', '%20')}@127.0.0.1:{d.channel.port}/"
    cmd = ["curl", "-sS", "--ssl-reqd", "-k", "-T", str(src), url]
    run = subprocess.run(cmd, capture_output=True, timeout=20)
    assert run.returncode == 0, run.stderr
    assert sorted(f.name for f in d.files()) == ["curl.csv", "tls.csv"]


def test_spool_full_answers_452_and_keeps_nothing(
    ftpd: Callable[..., Ftpd], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = ftpd()

    def full(*args: Any, **kwargs: Any) -> Any:
        raise SpoolFull("no space left in the spool; try again later")

    monkeypatch.setattr(d.spool, "accept", full)
    ftp = d.client()
    with pytest.raises(ftplib.error_temp, match=r"^452"):
        ftp.storbinary("STOR returns.csv", io.BytesIO(CSV))
    assert d.root_names() == ["results"]
    ftp.storbinary("STOR x.part", io.BytesIO(CSV))
    with pytest.raises(ftplib.error_temp, match=r"^452"):
        ftp.rename("x.part", "x.csv")
    assert d.root_names() == ["results", "x.part"]  # the rename can be tried again
    monkeypatch.undo()
    ftp.rename("x.part", "x.csv")
    assert [f.name for f in d.files()] == ["x.csv"]


# --- giving results back


def test_deliver_writes_results_the_user_can_read(
    ftpd: Callable[..., Ftpd], tmp_path: Path
) -> None:
    d = ftpd()
    result = b"ActionId,Amount,Reason,Line,Status\n1000.1.1,0,ITEM_RETURNED,1,APPLIED\n"
    stored = tmp_path / "r.csv"
    stored.write_bytes(result)
    outcome = FileOutcome(
        file_id="f1", campaign="acme", channel="ftp", name="returns.csv", sender=LOGIN,
        peer="127.0.0.1", size=len(CSV), sha256="0" * 64, status="COMPLETE",
        received_at=dt.datetime.now(dt.UTC), counts={"APPLIED": 1}, result_path=stored,
    )  # fmt: skip
    failed = FileOutcome(
        file_id="f2", campaign="acme", channel="ftp", name="bad.xml", sender=LOGIN,
        peer="127.0.0.1", size=3, sha256="1" * 64, status="FAILED",
        received_at=dt.datetime.now(dt.UTC), error_code="UNREADABLE", error_message="not XML",
    )  # fmt: skip
    assert d.channel.deliver(outcome) is True
    assert d.channel.deliver(failed) is True
    ftp = d.client()
    assert sorted(ftp.nlst("results")) == [
        "result_bad_f2.json",
        "result_returns_f1.csv",
        "result_returns_f1.json",
    ]
    assert retr(ftp, "results/result_returns_f1.csv") == result
    assert json.loads(retr(ftp, "results/result_returns_f1.json"))["status"] == "COMPLETE"
    assert json.loads(retr(ftp, "results/result_bad_f2.json"))["error"]["code"] == "UNREADABLE"
    ftp.delete("results/result_returns_f1.csv")  # the user may clean up
    assert "result_returns_f1.csv" not in ftp.nlst("results")
    with pytest.raises(ftplib.error_perm):
        ftp.rename("results/result_returns_f1.json", "results/other.json")
    assert list((d.home.parent / ".tmp").iterdir()) == []


def test_end_to_end_upload_process_deliver(ftpd: Callable[..., Ftpd], tmp_path: Path) -> None:
    from ingest.actions import import_actions
    from ingest.worker import Worker

    d = ftpd()
    today = dt.datetime.now(dt.UTC).date().isoformat()
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,Payout,"
        f"CustomerStatus\nA1,acme,101,O1,P1,{today}T10:00:00,100.00,USD,10.00,NEW\n"
        f"A2,acme,101,O2,P1,{today}T11:00:00,50.00,USD,5.00,NEW\n"
    )
    assert import_actions(d.store, d.settings, actions).imported == 2
    ftp = d.client()
    body = b"ActionId,Amount,Reason\nA1,60.00,ITEM_RETURNED\nA2,0,CONS_FRAUD\nNOPE,1.00,OTHER\n"
    ftp.storbinary("STOR returns.csv", io.BytesIO(body))
    assert Worker(d.settings, d.store).drain() == 1
    outcome = d.results.outcome(d.files()[0].file_id)
    assert outcome is not None and outcome.status == "COMPLETE"
    assert d.channel.deliver(outcome) is True
    fid = outcome.file_id
    rows = list(
        csv.DictReader(io.StringIO(retr(ftp, f"results/result_returns_{fid}.csv").decode()))
    )
    assert [r["Status"] for r in rows] == ["APPLIED", "APPLIED", "ERROR"]
    assert rows[0]["NewAmount"] == "60.00" and rows[1]["State"] == "REVERSED"
    assert rows[2]["ErrorCode"] == "ACTION_NOT_FOUND"
    summary = json.loads(retr(ftp, f"results/result_returns_{fid}.json"))
    assert summary["status"] == "COMPLETE" and summary["channel"] == "ftp"
    ftp.quit()


def test_results_of_same_named_uploads_never_collide(ftpd: Callable[..., Ftpd]) -> None:
    from ingest.worker import Worker

    d = ftpd()
    ftp = d.client()
    first, second = CSV, b"ActionId,Amount,Reason\nA9,0,OTHER\n"
    for body in (first, second, first):  # two different files named returns.csv, then a resend
        assert ftp.storbinary("STOR returns.csv", io.BytesIO(body)).startswith("226")
        Worker(d.settings, d.store).drain()
    files = sorted(d.files(), key=lambda f: f.file_id)
    assert [f.status for f in files].count("DUPLICATE") == 1
    for f in files:
        outcome = d.results.outcome(f.file_id)
        assert outcome is not None and d.channel.deliver(outcome) is True
    names = set(ftp.nlst("results"))
    for f in files:
        assert f"receipt_returns_{f.file_id}.txt" in names
        summary = json.loads(retr(ftp, f"results/result_returns_{f.file_id}.json"))
        assert summary["file_id"] == f.file_id and summary["status"] == f.status
        has_csv = f"result_returns_{f.file_id}.csv" in names
        assert has_csv == (f.status != "DUPLICATE")
    ftp.quit()


def test_reply_names_replace_the_real_extension(ftpd: Callable[..., Ftpd]) -> None:
    import gzip

    d = ftpd()
    ftp = d.client()
    ftp.storbinary("STOR returns_gz.csv.gz", io.BytesIO(gzip.compress(CSV)))
    [f] = d.files()
    assert ftp.nlst("results") == [f"receipt_returns_gz_{f.file_id}.txt"]
    ftp.quit()


def test_failed_login_logs_refused(
    ftpd: Callable[..., Ftpd], caplog: pytest.LogCaptureFixture
) -> None:
    d = ftpd()
    caplog.set_level(logging.INFO, logger="returnsd.files")
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", d.channel.port, timeout=10)
    with pytest.raises(ftplib.error_perm):
        ftp.login(LOGIN, "wrong password")
    ftp.close()
    lines = [r.getMessage() for r in caplog.records if "event=refused" in r.getMessage()]
    assert any("outcome=AUTH_FAILED" in line and f"sender={LOGIN}" in line for line in lines)


# --- lifecycle


def test_start_fails_clearly_when_the_port_is_taken(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd()
    other = ftpd(start=False, port=d.channel.port)
    with pytest.raises(
        ChannelError, match=rf"^ftp: cannot listen on 127\.0\.0\.1:{d.channel.port}"
    ):
        other.channel.start()


def test_start_fails_clearly_on_a_bad_certificate(
    ftpd: Callable[..., Ftpd], tmp_path: Path, cert_pair: tuple[Path, Path]
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    d = ftpd(start=False, tls_cert=str(bad), tls_key=str(cert_pair[1]))
    with pytest.raises(ChannelError, match=r"^ftp: cannot listen on .*bad\.pem"):
        d.channel.start()


def test_start_drops_unconfirmed_uploads_and_stop_closes(ftpd: Callable[..., Ftpd]) -> None:
    d = ftpd(start=False)
    d.home.mkdir(parents=True)
    (d.home / "half.csv").write_bytes(CSV[:5])  # a crash mid-upload: never answered 226
    (d.home / "resume.csv.part").write_bytes(CSV[:5])  # may be resumed: kept
    d.channel.start()
    assert d.root_names() == ["results", "resume.csv.part"]
    port = d.channel.port
    d.channel.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
