"""The daemon end to end: every channel on loopback, real clients, results back to each sender."""

from __future__ import annotations

import csv
import email.policy
import ftplib
import io
import smtplib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from ingest.actions import import_actions
from ingest.config import Settings
from ingest.errors import ConfigError
from ingest.passwords import hash_password
from ingest.store import prepare
from returnsd.daemon import Daemon
from tests.conftest import campaign_dict
from tests.test_channel_smtp import Collector, relay

__all__ = ["relay"]  # the relay fixture, shared with the SMTP channel's tests
PASSWORD, TOKEN = "ftp-secret-pw", "api-secret-token"


def until(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after a deadline."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def write_actions(folder: Path, count: int) -> Path:
    """An action import file of `count` recent sales of campaign acme."""
    when = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    path = folder / "actions.csv"
    rows = [
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,"
        "Payout,CustomerStatus"
    ]
    rows += [f"D{i},acme,101,O{i},P1,{when},100.00,USD,10.00,NEW" for i in range(count)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def daemon(
    make_settings: Callable[..., Settings], tmp_path: Path, relay: tuple[Collector, int]
) -> Iterator[Daemon]:
    """A running daemon with FTP, SMTP, HTTP and the drop folder on loopback."""
    campaign = campaign_dict(
        ftp={"login": "acme", "password_hash": hash_password(PASSWORD)},
        smtp={"address": "acme@returns.test"},
        http={"token_hash": hash_password(TOKEN)},
    )
    settings = make_settings(
        campaigns=[campaign],
        channels={
            "ftp": {"port": 0, "root": str(tmp_path / "ftp"), "close_grace": 0.1},
            "smtp": {"port": 0, "relay_host": "127.0.0.1", "relay_port": relay[1]},
            "http": {"port": 0},
            "dropdir": {"root": str(tmp_path / "drop"), "stable_seconds": 0.2},
        },
    )
    store = prepare(settings)
    import_actions(store, settings, write_actions(tmp_path, 50))
    d = Daemon(settings, store)
    d.start()
    yield d
    d.stop()
    store.dispose()


def returns(first: int, amount: str) -> bytes:
    """A small returns file changing actions D<first>…D<first+2>."""
    rows = ["ActionId,Amount,Reason"] + [
        f"D{i},{amount},ITEM_RETURNED" for i in range(first, first + 3)
    ]
    return ("\r\n".join(rows) + "\r\n").encode()


def result_lines(data: bytes) -> list[tuple[str, str, str]]:
    """(ResolvedActionId, Status, NewAmount) of each result line."""
    reader = csv.reader(io.StringIO(data.decode()))
    header = next(reader)
    at = {name: len(header) - 1 - header[::-1].index(name) for name in header}
    return [(r[at["ResolvedActionId"]], r[at["Status"]], r[at["NewAmount"]]) for r in reader]


def test_every_channel_delivers_results(
    daemon: Daemon, tmp_path: Path, relay: tuple[Collector, int]
) -> None:
    assert set(daemon.channels) == {"ftp", "smtp", "http", "dropdir"}
    ftp_port = cast(Any, daemon.channels["ftp"]).port
    with ftplib.FTP() as ftp:
        ftp.connect("127.0.0.1", ftp_port)
        ftp.login("acme", PASSWORD)
        reply = ftp.storbinary("STOR ftp.csv", io.BytesIO(returns(0, "80.00")))
        assert reply.startswith("226")
    ftp_id = reply.split("Received as ", 1)[1].split(" ", 1)[0]
    ftp_result = tmp_path / "ftp" / "acme" / "results" / f"result_ftp_{ftp_id}.csv"
    until(ftp_result.exists, "the FTP result file")
    assert result_lines(ftp_result.read_bytes()) == [
        ("D0", "APPLIED", "80.00"),
        ("D1", "APPLIED", "80.00"),
        ("D2", "APPLIED", "80.00"),
    ]

    api = httpx.Client(
        base_url=f"http://127.0.0.1:{cast(Any, daemon.channels['http']).port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    posted = api.post("/v1/campaigns/acme/files", files={"file": ("api.csv", returns(3, "0"))})
    assert posted.status_code == 202
    file_id = posted.json()["file_id"]
    result = until(
        lambda: (r := api.get(f"/v1/files/{file_id}/result")).status_code == 200 and r,
        "the API result",
    )
    assert [s for _, s, _ in result_lines(result.content)] == ["APPLIED"] * 3
    assert api.get(f"/v1/files/{file_id}").json()["status"] == "COMPLETE"
    api.close()

    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"], msg["To"], msg["Subject"] = "ops@adv.test", "acme@returns.test", "returns"
    msg.set_content("returns attached")
    msg.add_attachment(returns(6, "50.00"), maintype="text", subtype="csv", filename="mail.csv")
    with smtplib.SMTP("127.0.0.1", cast(Any, daemon.channels["smtp"]).port) as smtp:
        smtp.send_message(msg)
    mails = relay[0].messages
    result_mail = until(
        lambda: next(
            (
                m
                for m in mails
                if any(p.get_filename() == "result_mail.csv" for p in m.iter_attachments())
            ),
            None,
        ),
        "the result mail",
    )
    attachment = next(
        p for p in result_mail.iter_attachments() if p.get_filename() == "result_mail.csv"
    )
    assert result_mail["To"] == "ops@adv.test"
    assert [a for a, _, _ in result_lines(attachment.get_payload(decode=True))] == [
        "D6",
        "D7",
        "D8",
    ]

    folder = tmp_path / "drop" / "acme"
    (folder / ".drop.csv.part").write_bytes(returns(9, "1.00"))
    (folder / ".drop.csv.part").rename(folder / "drop.csv")
    found = until(lambda: sorted((folder / "results").glob("result_drop_*.csv")), "the drop result")
    drop_result = found[0]
    assert [n for _, _, n in result_lines(drop_result.read_bytes())] == ["1.00"] * 3


def test_channel_that_cannot_listen_stops_the_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    settings = make_settings(channels={"http": {"port": port}, "dropdir": {"enabled": False}})
    store = prepare(settings)
    d = Daemon(settings, store)
    with pytest.raises(Exception, match=f"http.*{port}"):
        d.start()
    taken.close()
    store.dispose()


def test_check_config_reports_every_problem_at_once(make_settings: Callable[..., Settings]) -> None:
    one = campaign_dict(
        "one", ftp={"login": "same", "password_hash": "x"}, smtp={"address": "a@b.test"}
    )
    two = campaign_dict(
        "two", ftp={"login": "same", "password_hash": "x"}, smtp={"address": "A@b.test"}
    )
    with pytest.raises(ConfigError) as exc:
        make_settings(
            campaigns=[one, two],
            lock_schedule="every minute",
            channels={"ftp": {"port": 2121}, "smtp": {"port": 2121}, "http": {"port": 8080}},
        )
    text = str(exc.value)
    for problem in (
        "ftp login 'same'",
        "address 'a@b.test'",
        "both listen on 127.0.0.1:2121",
        "lock_schedule",
    ):
        assert problem in text, text
