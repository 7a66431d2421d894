"""The scheduled pull against a real OpenSSH sshd (and real pyftpdlib servers) on 127.0.0.1."""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from channels.base import ChannelContext, ChannelError
from channels.pull import PullChannel
from channels.pull_remote import is_candidate, parse_url
from channels.pull_report import ALREADY, GROWING
from ingest import tables as t
from ingest.config import Settings
from ingest.errors import SpoolFull
from ingest.pulled import PullLedger
from ingest.results import FileOutcome, ResultStore
from ingest.spool import DUPLICATE, QUEUED, Spool
from ingest.store import Store, prepare
from tests.conftest import campaign_dict, need
from tests.sshd import KeyPair, Sshd, keygen, sshd_missing
from tests.stall_proxy import FreezingProxy

CSV_A = b"ActionId,Amount,Reason\n1000.1.1,0,ITEM_RETURNED\n"
CSV_B = b"ActionId,Amount,Reason\n1000.1.2,12.50,ORDER_UPDATE\n"


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """Host keys (two ed25519, an ecdsa, an rsa) and the advertiser's client key, made once."""
    why = sshd_missing()
    if why:
        need("sshd", why)
    d = tmp_path_factory.mktemp("keys")
    return {
        "host": keygen(d, "host_ed25519"),
        "host2": keygen(d, "host2_ed25519"),
        "ecdsa": keygen(d, "host_ecdsa", "ecdsa"),
        "rsa": keygen(d, "host_rsa", "rsa"),
        "client": keygen(d, "client"),
    }


@pytest.fixture
def sshd(keys: dict[str, KeyPair], tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd with the `host` ed25519 key."""
    server = Sshd(tmp_path / "sshd", [keys["host"]], keys["client"])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    """The advertiser's folder on their server."""
    folder = tmp_path / "outbox"
    folder.mkdir()
    return folder


@dataclass
class Rig:
    """Everything a pull test touches."""

    settings: Settings
    store: Store
    spool: Spool
    ledger: PullLedger
    channel: PullChannel

    def spooled(self, file_id: str) -> bytes:
        """The bytes the spool holds for a file."""
        with self.store.read() as conn:
            path = conn.scalar(select(t.files.c.spool_path).where(t.files.c.id == file_id))
        assert path is not None
        return Path(path).read_bytes()

    def finish(self, file_id: str) -> None:
        """Mark a file COMPLETE, as the worker would."""
        with self.store.begin() as conn:
            conn.execute(update(t.files).where(t.files.c.id == file_id).values(status="COMPLETE"))

    def outcome(self, file_id: str) -> FileOutcome:
        """The file's record."""
        out = ResultStore(self.store).outcome(file_id)
        assert out is not None
        return out


@pytest.fixture
def rig(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Build campaign `acme` with a `pull` source, a SQLite store, a spool and the channel."""
    stores: list[Store] = []

    def build(
        pull: dict[str, Any],
        spool_class: type[Spool] = Spool,
        settings_extra: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Rig:
        settings = make_settings(
            campaigns=[campaign_dict(pull=pull)],
            channels={"pull": {"state_dir": str(tmp_path / "pullstate")}},
            **(settings_extra or {}),
        )
        store = prepare(settings)
        stores.append(store)
        spool = spool_class(settings, store)
        ledger = PullLedger(store)
        ctx = ChannelContext(settings, spool, ResultStore(store))
        options = {"stable_interval": 0.2, "backoff": 0.05, **kwargs}
        return Rig(settings, store, spool, ledger, PullChannel(ctx, ledger, **options))

    yield build
    for store in stores:
        store.dispose()


def sftp_source(
    server: Sshd, folder: Path, keys: dict[str, KeyPair], pin: str = "host", **extra: Any
) -> dict[str, Any]:
    """A pull source that logs in with the client key and pins `keys[pin]`."""
    return {
        "url": server.url(folder),
        "user": server.user,
        "private_key": {"file": str(keys["client"].path)},
        "host_key": keys[pin].public,
        "timeout_seconds": 5,
        "retries": 1,
        **extra,
    }


def names(report: Any) -> list[str]:
    """The fetched names of a report, sorted."""
    return sorted(f.name for f in report.fetched)


# --- SFTP ----------------------------------------------------------------------------------------


def test_fetches_matching_stable_files_once(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    for name, data in {
        "a.csv": CSV_A, "b.csv": CSV_B, ".hidden.csv": CSV_A, "c.csv.part": CSV_A,
        "d.csv.filepart": CSV_A, "e.tmp": CSV_A, "f.csv~": CSV_A, "result_x.csv": CSV_A,
        "receipt_y.csv": CSV_A, "notes.txt": b"hello",
    }.items():  # fmt: skip
        (outbox / name).write_bytes(data)
    (outbox / "sub.csv").mkdir()
    r = rig(sftp_source(sshd, outbox, keys, pattern="*.csv"))

    report = r.channel.pull("acme")

    assert report.ok and report.attempts == 1, str(report)
    assert names(report) == ["a.csv", "b.csv"]
    by_name = {f.name: f for f in report.fetched}
    assert r.spooled(by_name["a.csv"].file_id) == CSV_A
    assert r.spooled(by_name["b.csv"].file_id) == CSV_B
    out = r.outcome(by_name["a.csv"].file_id)
    assert (out.status, out.channel, out.sender, out.peer) == (
        QUEUED,
        "pull",
        f"{sshd.user}@127.0.0.1",
        "127.0.0.1",
    )
    assert out.meta["remote_path"] == str(outbox / "a.csv")
    assert (outbox / "a.csv").exists(), "after=keep leaves the file"

    again = r.channel.pull("acme")
    assert again.ok and again.fetched == []
    assert again.skipped == {"a.csv": ALREADY, "b.csv": ALREADY}
    assert "0 fetched, 2 skipped" in str(again)
    assert again.as_dict()["skipped"] == [
        {"name": "a.csv", "reason": ALREADY},
        {"name": "b.csv", "reason": ALREADY},
    ]


@pytest.mark.parametrize("after", ["delete", "move:done"])
def test_after_fetch_delete_or_move(
    after: str, sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    r = rig(sftp_source(sshd, outbox, keys, after=after))

    report = r.channel.pull("acme")

    assert report.ok and names(report) == ["a.csv"], str(report)
    assert not (outbox / "a.csv").exists()
    if after == "move:done":
        assert (outbox / "done" / "a.csv").read_bytes() == CSV_A
    assert r.channel.pull("acme").fetched == []


class FullSpool(Spool):
    """A spool whose disk is full."""

    def accept(self, *args: Any, **kwargs: Any) -> Any:
        """Always fail as a full disk does."""
        raise SpoolFull("no space left in the spool; try again later")


def test_nothing_is_deleted_unless_spooled(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    r = rig(sftp_source(sshd, outbox, keys, after="delete", retries=1), spool_class=FullSpool)

    report = r.channel.pull("acme")

    assert not report.ok and report.attempts == 2 and report.fetched == []
    assert "no space left" in report.errors[0]
    assert (outbox / "a.csv").read_bytes() == CSV_A
    stat = (outbox / "a.csv").stat()
    assert not r.ledger.seen("acme", str(outbox / "a.csv"), stat.st_size, int(stat.st_mtime))


def test_a_fetched_file_left_behind_is_deleted_on_the_next_run(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    """The delete after a fetch was lost (connection dropped): the next run finishes it."""
    path = outbox / "a.csv"
    path.write_bytes(CSV_A)
    r = rig(sftp_source(sshd, outbox, keys, after="delete"))
    stat = path.stat()
    r.ledger.record("acme", str(path), stat.st_size, int(stat.st_mtime), "0" * 64, "f0")

    report = r.channel.pull("acme")

    assert report.ok and report.fetched == [] and report.skipped == {"a.csv": ALREADY}
    assert not path.exists()


def test_missing_remote_folder_is_reported_without_retry(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    report = rig(sftp_source(sshd, outbox / "nope", keys, retries=3)).channel.pull("acme")
    assert report.attempts == 1 and len(report.errors) == 1
    assert str(outbox / "nope") in report.errors[0]


def test_too_large_file_is_refused_without_download(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    (outbox / "big.csv").write_bytes(CSV_A * 10)
    (outbox / "a.csv").write_bytes(CSV_A)
    limits = {"limits": {"max_file_bytes": len(CSV_A) * 5}}
    r = rig(sftp_source(sshd, outbox, keys, after="delete"), settings_extra=limits)

    report = r.channel.pull("acme")

    assert names(report) == ["a.csv"] and len(report.errors) == 1
    assert report.errors[0].startswith("big.csv: refused: TOO_LARGE")
    assert (outbox / "big.csv").exists() and not (outbox / "a.csv").exists()
    assert len(list((r.settings.spool_dir / "acme").iterdir())) == 1


def test_changed_host_key_of_same_type_is_refused(
    sshd: Sshd,
    outbox: Path,
    keys: dict[str, KeyPair],
    rig: Callable[..., Rig],
    caplog: pytest.LogCaptureFixture,
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    r = rig(sftp_source(sshd, outbox, keys, retries=2))
    assert names(r.channel.pull("acme")) == ["a.csv"]
    sshd.restart([keys["host2"]])
    (outbox / "b.csv").write_bytes(CSV_B)
    caplog.set_level(logging.INFO)

    report = r.channel.pull("acme")

    assert report.fetched == [] and report.attempts == 1, "a refused host key is not retried"
    assert len(report.errors) == 1 and "does not match the pinned key" in report.errors[0]
    offered, pinned = _fingerprint(keys["host2"]), _fingerprint(keys["host"])
    assert offered in report.errors[0] and pinned in report.errors[0]
    assert offered != pinned
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert offered in logged and pinned in logged and "event=refused" in logged


def test_pinned_key_of_another_type_is_refused(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    r = rig(sftp_source(sshd, outbox, keys, pin="ecdsa"))

    report = r.channel.pull("acme")

    assert report.fetched == [] and report.attempts == 1
    assert f"server offered ssh-ed25519 {_fingerprint(keys['host'])}" in report.errors[0]
    assert f"pinned ecdsa-sha2-nistp256 {_fingerprint(keys['ecdsa'])}" in report.errors[0]


@pytest.mark.parametrize("pin", ["host", "ecdsa", "rsa"])
def test_server_is_asked_for_the_pinned_key_type(
    pin: str, keys: dict[str, KeyPair], tmp_path: Path, outbox: Path, rig: Callable[..., Rig]
) -> None:
    """With several host keys, paramiko must request the pinned key type, not its preferred one."""
    server = Sshd(tmp_path / "multi", [keys["host"], keys["ecdsa"], keys["rsa"]], keys["client"])
    server.start()
    try:
        (outbox / "a.csv").write_bytes(CSV_A)
        report = rig(sftp_source(server, outbox, keys, pin=pin)).channel.pull("acme")
    finally:
        server.stop()
    assert report.ok and names(report) == ["a.csv"], str(report)


def test_growing_file_is_left_for_the_next_run(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    path = outbox / "growing.csv"
    path.write_bytes(b"ActionId,Amount,Reason\n")
    r = rig(sftp_source(sshd, outbox, keys))
    stop = threading.Event()

    def append() -> None:
        while not stop.wait(0.02):
            with open(path, "ab") as f:
                f.write(b"1000.1.1,0,OTHER\n")

    writer = threading.Thread(target=append)
    writer.start()
    try:
        report = r.channel.pull("acme")
    finally:
        stop.set()
        writer.join()

    assert report.fetched == [] and report.skipped == {"growing.csv": GROWING}, str(report)
    later = r.channel.pull("acme")
    assert names(later) == ["growing.csv"]
    assert r.spooled(later.fetched[0].file_id) == path.read_bytes()


def test_password_login_from_an_environment_variable(
    sshd: Sshd,
    outbox: Path,
    keys: dict[str, KeyPair],
    rig: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sshd.password is None:
        need("sshd-password", "password logins need root (sshd in a private mount namespace)")
        return
    monkeypatch.setenv("ACME_PULL_PASSWORD", sshd.password)
    (outbox / "a.csv").write_bytes(CSV_A)
    source = sftp_source(sshd, outbox, keys, password={"env": "ACME_PULL_PASSWORD"})
    del source["private_key"]

    report = rig(source).channel.pull("acme")

    assert report.ok and names(report) == ["a.csv"], str(report)
    assert "Accepted password for" in sshd.log.read_text()


def test_wrong_password_is_refused_without_retry(
    sshd: Sshd,
    outbox: Path,
    keys: dict[str, KeyPair],
    rig: Callable[..., Rig],
    tmp_path: Path,
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    secret = tmp_path / "pw"
    secret.write_text("not-the-password\n")
    source = sftp_source(sshd, outbox, keys, password={"file": str(secret)}, retries=3)
    del source["private_key"]

    report = rig(source).channel.pull("acme")

    assert report.fetched == [] and report.attempts == 1
    assert "login refused" in report.errors[0] and "not-the-password" not in str(report)


def test_stalled_transfer_times_out_and_is_retried(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    data = b"ActionId,Amount,Reason\n" + b"".join(
        b"1000.1.%d,0,OTHER\n" % i for i in range(250_000)
    )
    (outbox / "big.csv").write_bytes(data)
    proxy = FreezingProxy(sshd.port, limit=512 * 1024, freeze=1)
    source = sftp_source(sshd, outbox, keys, timeout_seconds=1, retries=2)
    source["url"] = f"sftp://127.0.0.1:{proxy.port}{outbox}"
    source["host_key"] = keys["host"].public
    r = rig(source)
    try:
        report = r.channel.pull("acme")
    finally:
        proxy.close()

    assert report.ok and names(report) == ["big.csv"], str(report)
    assert report.attempts == 2 and proxy.connections == 2
    assert "stalled" in report.notes[0] or "timed out" in report.notes[0], report.notes
    assert r.spooled(report.fetched[0].file_id) == data


def test_touched_file_is_fetched_again_and_is_a_duplicate(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    path = outbox / "a.csv"
    path.write_bytes(CSV_A)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    r = rig(sftp_source(sshd, outbox, keys))
    first = r.channel.pull("acme").fetched[0]
    r.finish(first.file_id)
    os.utime(path, (1_700_000_100, 1_700_000_100))

    second = r.channel.pull("acme")

    assert [(f.name, f.status) for f in second.fetched] == [("a.csv", DUPLICATE)]
    assert r.outcome(second.fetched[0].file_id).duplicate_of == first.file_id


def test_receipt_and_results_go_to_the_results_folder(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig], tmp_path: Path
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    r = rig(sftp_source(sshd, outbox, keys, results_folder="."))
    fetched = r.channel.pull("acme").fetched[0]
    fid = fetched.file_id
    assert "status: QUEUED" in (outbox / f"receipt_a_{fid}.txt").read_text()

    result = tmp_path / "result.csv"
    result.write_bytes(b"ActionId,Line,Status\n1000.1.1,2,APPLIED\n")
    out = r.outcome(fetched.file_id)
    done = FileOutcome(**{**vars(out), "status": "COMPLETE", "result_path": result,
                          "counts": {"APPLIED": 1}})  # fmt: skip
    assert r.channel.deliver(done) is True

    assert (outbox / f"result_a_{fid}.csv").read_bytes().endswith(b"1000.1.1,2,APPLIED\n")
    summary = json.loads((outbox / f"result_a_{fid}.json").read_text())
    assert summary["file_id"] == fetched.file_id and summary["status"] == "COMPLETE"
    assert not [p.name for p in outbox.iterdir() if p.name.startswith(".")]
    again = r.channel.pull("acme")
    assert again.fetched == [] and set(again.skipped) == {"a.csv"}, "replies are never ingested"


def test_end_to_end_pull_process_deliver(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig], tmp_path: Path
) -> None:
    from ingest.actions import import_actions
    from ingest.worker import Worker

    r = rig(sftp_source(sshd, outbox, keys, after="move:done", results_folder="results"))
    today = dt.datetime.now(dt.UTC).date().isoformat()
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,Payout,"
        f"CustomerStatus\nA1,acme,101,O1,P1,{today}T10:00:00,100.00,USD,10.00,NEW\n"
        f"A2,acme,101,O2,P1,{today}T11:00:00,50.00,USD,5.00,NEW\n"
    )
    assert import_actions(r.store, r.settings, actions).imported == 2
    (outbox / "returns.csv").write_bytes(
        b"ActionId,Amount,Reason\nA1,60.00,ITEM_RETURNED\nA2,0,CONS_FRAUD\nNOPE,1.00,OTHER\n"
    )

    fetched = r.channel.pull("acme").fetched
    assert Worker(r.settings, r.store).drain() == 1
    assert r.channel.deliver(r.outcome(fetched[0].file_id)) is True

    fid = fetched[0].file_id
    text = (outbox / "results" / f"result_returns_{fid}.csv").read_text()
    header, *body = list(csv.reader(io.StringIO(text)))
    status = header.index("Status")
    assert [(row[0], row[status]) for row in body] == [
        ("A1", "APPLIED"),
        ("A2", "APPLIED"),
        ("NOPE", "ERROR"),
    ]
    summary = json.loads((outbox / "results" / f"result_returns_{fid}.json").read_text())
    assert summary["status"] == "COMPLETE" and summary["channel"] == "pull"
    assert (outbox / "done" / "returns.csv").exists() and not (outbox / "returns.csv").exists()


def test_deliver_without_results_folder_is_a_no_op(
    sshd: Sshd, outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig]
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    r = rig(sftp_source(sshd, outbox, keys))
    fetched = r.channel.pull("acme").fetched[0]
    assert r.channel.deliver(r.outcome(fetched.file_id)) is True
    assert sorted(p.name for p in outbox.iterdir()) == ["a.csv"]


def test_deliver_to_an_unreachable_server_is_retried_later(
    outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig], tmp_path: Path
) -> None:
    server = Sshd(tmp_path / "gone", [keys["host"]], keys["client"])  # never started
    r = rig(sftp_source(server, outbox, keys, results_folder="."))
    out = FileOutcome("f1", "acme", "pull", "a.csv", None, None, 1, "0" * 64, "COMPLETE",
                      dt.datetime.now(dt.UTC))  # fmt: skip
    assert r.channel.deliver(out) is False


def test_start_checks_secrets_and_keys(
    outbox: Path, keys: dict[str, KeyPair], rig: Callable[..., Rig], tmp_path: Path
) -> None:
    server = Sshd(tmp_path / "unused", [keys["host"]], keys["client"])
    good = rig(sftp_source(server, outbox, keys))
    good.channel.start()
    good.channel.stop()
    bad_key = tmp_path / "not_a_key"
    bad_key.write_text("hello\n")
    bad = rig(sftp_source(server, outbox, keys, private_key={"file": str(bad_key)}))
    with pytest.raises(ChannelError, match=r"campaign acme: .*private_key"):
        bad.channel.start()
    bad_key.unlink()
    with pytest.raises(ChannelError, match="cannot read secret file"):
        bad.channel.start()
    with pytest.raises(ChannelError, match=r"unknown campaign"):
        good.channel.pull("nope")


def _fingerprint(key: KeyPair) -> str:
    import paramiko

    from channels.pull_sftp import parse_host_key

    assert isinstance(parse_host_key(key.public), paramiko.PKey)
    return str(parse_host_key(key.public).fingerprint)


# --- FTP / FTPS ----------------------------------------------------------------------------------


class FtpServer:
    """A pyftpdlib server (the advertiser's side) in a thread, with user `adv` / `secret`."""

    def __init__(self, home: Path, tls: tuple[Path, Path] | None = None) -> None:
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
        from pyftpdlib.servers import FTPServer

        auth = DummyAuthorizer()
        auth.add_user("adv", "secret", str(home), perm="elradfmwMT")
        attrs: dict[str, Any] = {"authorizer": auth, "auth_failed_timeout": 0.05}
        if tls is not None:
            attrs.update(certfile=str(tls[0]), keyfile=str(tls[1]),
                         tls_control_required=True, tls_data_required=True)  # fmt: skip
        handler = type("AdvertiserHandler", (TLS_FTPHandler if tls else FTPHandler,), attrs)
        self.server = FTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test-ftpd")
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self.server.close_all()

    def close(self) -> None:
        """Stop serving and close every session."""
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def ftp_password(tmp_path: Path) -> dict[str, str]:
    """The FTP password as a secret file."""
    path = tmp_path / "ftp_password"
    path.write_text("secret\n")
    return {"file": str(path)}


def test_ftp_pull_fetches_moves_and_delivers(
    outbox: Path, rig: Callable[..., Rig], ftp_password: dict[str, str], tmp_path: Path
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    (outbox / ".b.csv").write_bytes(CSV_B)
    server = FtpServer(outbox)
    try:
        source = {"url": f"ftp://127.0.0.1:{server.port}/", "user": "adv", "password": ftp_password,
                  "after": "move:archive", "results_folder": "results", "retries": 0}  # fmt: skip
        r = rig(source)
        first = r.channel.pull("acme")
        second = r.channel.pull("acme")
        out = r.outcome(first.fetched[0].file_id)
        delivered = r.channel.deliver(out)
    finally:
        server.close()

    assert first.ok and names(first) == ["a.csv"], str(first)
    assert out.sender == "adv@127.0.0.1"
    assert r.spooled(first.fetched[0].file_id) == CSV_A
    assert (outbox / "archive" / "a.csv").read_bytes() == CSV_A
    assert second.fetched == [] and second.ok
    fid = first.fetched[0].file_id
    assert delivered and json.loads((outbox / "results" / f"result_a_{fid}.json").read_text())
    assert "status: QUEUED" in (outbox / "results" / f"receipt_a_{fid}.txt").read_text()


def test_ftp_growing_file_and_wrong_password(
    outbox: Path, rig: Callable[..., Rig], ftp_password: dict[str, str], tmp_path: Path
) -> None:
    path = outbox / "growing.csv"
    path.write_bytes(b"ActionId,Amount,Reason\n")
    stop = threading.Event()

    def append() -> None:
        while not stop.wait(0.02):
            with open(path, "ab") as f:
                f.write(b"1000.1.1,0,OTHER\n")

    server = FtpServer(outbox)
    writer = threading.Thread(target=append)
    writer.start()
    try:
        url = f"ftp://127.0.0.1:{server.port}/"
        growing = rig({"url": url, "user": "adv", "password": ftp_password}).channel.pull("acme")
        stop.set()
        writer.join()
        wrong = tmp_path / "wrong"
        wrong.write_text("nope")
        refused = rig({"url": url, "user": "adv", "password": {"file": str(wrong)}, "retries": 3})
        report = refused.channel.pull("acme")
    finally:
        stop.set()
        writer.join()
        server.close()

    assert growing.fetched == [] and growing.skipped == {"growing.csv": GROWING}, str(growing)
    assert report.attempts == 1 and "login refused" in report.errors[0]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (as advertisers' own FTPS servers often have)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def test_ftps_pull_checks_the_certificate(
    outbox: Path,
    rig: Callable[..., Rig],
    ftp_password: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (outbox / "a.csv").write_bytes(CSV_A)
    cert, key = _self_signed(tmp_path)
    server = FtpServer(outbox, tls=(cert, key))
    try:
        source = {"url": f"ftps://127.0.0.1:{server.port}/", "user": "adv",
                  "password": ftp_password, "retries": 2}  # fmt: skip
        r = rig(source)
        untrusted = r.channel.pull("acme")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = r.channel.pull("acme")
    finally:
        server.close()

    assert untrusted.fetched == [] and untrusted.attempts == 1
    assert "TLS certificate" in untrusted.errors[0], untrusted.errors
    assert trusted.ok and names(trusted) == ["a.csv"], str(trusted)


# --- small pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sftp://h/srv/out", ("sftp", "h", 22, "/srv/out")),
        ("sftp://h:2222/~/out", ("sftp", "h", 2222, "out")),
        ("sftp://h", ("sftp", "h", 22, ".")),
        ("ftp://h/out", ("ftp", "h", 21, "out")),
        ("ftps://u@h:990//abs", ("ftps", "h", 990, "/abs")),
    ],
)
def test_parse_url(url: str, expected: tuple[str, str, int, str]) -> None:
    target = parse_url(url)
    assert (target.scheme, target.host, target.port, target.folder) == expected
    assert "u@" not in target.display


@pytest.mark.parametrize(
    ("name", "wanted"),
    [("a.csv", True), ("A.CSV", False), (".a.csv", False), ("a.csv.part", False),
     ("a.csv~", False), ("result_a.csv", False), ("Receipt_a.csv", False), ("a.xml", False)],
)  # fmt: skip
def test_candidate_names(name: str, wanted: bool) -> None:
    assert is_candidate(name, "*.csv") is wanted
