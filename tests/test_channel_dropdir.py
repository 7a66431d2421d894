"""The drop folder takes each complete file exactly once, skips temporary names, writes results."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from channels.base import ChannelContext, ChannelError
from channels.dropdir import DropdirChannel
from ingest.config import Settings
from ingest.results import FileOutcome, ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from tests.conftest import campaign_dict

CSV = b"ActionId,Amount,Reason\n1000.1.1,0,ITEM_RETURNED\n"


class Harness:
    """A drop-folder channel over its own SQLite store, plus helpers to look at the outcome."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = prepare(settings)
        self.spool = Spool(settings, self.store)
        self.results = ResultStore(self.store)
        self.channel = DropdirChannel(ChannelContext(settings, self.spool, self.results))
        self.started = False

    @property
    def drop(self) -> Path:
        """The `acme` campaign's drop folder."""
        return self.channel.folder("acme")

    def start(self) -> None:
        """Start the channel (stopped again at teardown)."""
        self.channel.start()
        self.started = True

    def files(self) -> list[FileOutcome]:
        """Every file the spool recorded for `acme`, oldest first."""
        return sorted(self.results.recent(campaign="acme"), key=lambda f: f.file_id)

    def spooled_bytes(self, out: FileOutcome) -> bytes:
        """The bytes the spool stored for a file."""
        return (self.settings.path(self.settings.spool_dir) / "acme" / out.file_id).read_bytes()

    def close(self) -> None:
        """Stop the channel and release the database."""
        if self.started:
            self.channel.stop()
        self.store.dispose()


@pytest.fixture
def harness(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Harness]]:
    """Build a Harness; keyword arguments override `channels.dropdir` options."""
    made: list[Harness] = []

    def build(limits: dict[str, Any] | None = None, **options: Any) -> Harness:
        opts = {"root": "drop", "stable_seconds": 0.6, "rescan_seconds": 300, **options}
        settings = make_settings(
            channels={"dropdir": opts},
            campaigns=[campaign_dict(), campaign_dict("beta", dropdir=False)],
            **({"limits": limits} if limits else {}),
        )
        made.append(Harness(settings))
        return made[-1]

    yield build
    for h in made:
        h.close()


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll `cond` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached before the deadline")
        time.sleep(0.05)


def test_folders_created_per_campaign(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    assert (h.drop / "results").is_dir()
    assert not h.channel.folder("beta").exists()


def test_slow_writer_is_taken_once_when_complete(
    harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="returnsd.files")
    h = harness()
    h.start()
    chunks = [CSV] + [f"1000.1.{i},12.50,ITEM_RETURNED\n".encode() for i in range(2, 9)]
    target = h.drop / "slow.csv"

    def write_slowly() -> None:
        with open(target, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                time.sleep(0.2)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    wait_for(lambda: not writer.is_alive() and not target.exists())
    writer.join()
    files = h.files()
    assert [f.name for f in files] == ["slow.csv"]
    assert h.spooled_bytes(files[0]) == b"".join(chunks)
    receipt = (h.drop / "results" / f"receipt_slow_{files[0].file_id}.txt").read_text()
    assert f"file_id: {files[0].file_id}" in receipt and "status: QUEUED" in receipt
    assert "event=received" in caplog.text and "channel=dropdir" in caplog.text


def test_tmp_then_rename_is_taken_once(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    tmp = h.drop / "upload.csv.tmp"
    tmp.write_bytes(CSV)
    os.rename(tmp, h.drop / "upload.csv")
    wait_for(lambda: not (h.drop / "upload.csv").exists())
    files = h.files()
    assert [f.name for f in files] == ["upload.csv"]
    assert h.spooled_bytes(files[0]) == CSV


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_mv_from_outside_is_taken(
    harness: Callable[..., Harness], tmp_path: Path, polling: bool
) -> None:
    h = harness(polling=polling)
    h.start()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "moved.csv").write_bytes(CSV)
    os.rename(outside / "moved.csv", h.drop / "moved.csv")
    wait_for(lambda: len(h.files()) == 1)
    assert h.files()[0].name == "moved.csv"
    wait_for(lambda: not (h.drop / "moved.csv").exists())


def test_file_present_before_start_is_taken(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.drop.mkdir(parents=True)
    (h.drop / "early.csv").write_bytes(CSV)
    h.start()
    wait_for(lambda: len(h.files()) == 1)
    assert h.files()[0].name == "early.csv"


def test_temporary_names_are_left_alone(harness: Callable[..., Harness]) -> None:
    h = harness()
    h.start()
    ignored = [".hidden.csv", "a.csv.part", "b.filepart", "c~"]
    for n, name in enumerate(ignored):
        (h.drop / name).write_bytes(CSV + str(n).encode())
    (h.drop / "results" / "inside.csv").write_bytes(CSV + b"results")
    (h.drop / "barrier.csv").write_bytes(CSV)  # taken after the others were seen
    wait_for(lambda: not (h.drop / "barrier.csv").exists())
    h.channel.rescan()
    wait_for(lambda: not h.channel._pending)
    assert [f.name for f in h.files()] == ["barrier.csv"]
    assert all((h.drop / name).exists() for name in ignored)


def test_same_bytes_again_is_a_duplicate_not_a_new_file(harness: Callable[..., Harness]) -> None:
    h = harness(stable_seconds=0.2)
    h.start()
    (h.drop / "a.csv").write_bytes(CSV)
    wait_for(lambda: not (h.drop / "a.csv").exists())
    (h.drop / "again.csv").write_bytes(CSV)
    [f] = h.files()
    receipt = h.drop / "results" / f"receipt_again_{f.file_id}.txt"
    wait_for(receipt.exists)
    assert [f.name for f in h.files()] == ["a.csv"]  # still queued: the same file id
    assert f"file_id: {f.file_id}" in receipt.read_text()


def test_too_large_is_moved_aside_with_a_receipt(harness: Callable[..., Harness]) -> None:
    h = harness(stable_seconds=0.2, limits={"max_file_bytes": 10})
    h.start()
    (h.drop / "big.csv").write_bytes(CSV)
    wait_for(lambda: not (h.drop / "big.csv").exists())
    assert (h.drop / "results" / "rejected_big.csv").read_bytes() == CSV
    assert "TOO_LARGE" in (h.drop / "results" / "receipt_big.txt").read_text()
    assert h.files() == []


def test_reserved_names_are_refused_moved_aside_and_logged(
    harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="returnsd.files")
    h = harness(stable_seconds=0.2)
    h.start()
    for name in ("result_x.csv", "receipt_x.txt"):
        (h.drop / name).write_bytes(CSV)
    for name in ("result_x.csv", "receipt_x.txt"):
        wait_for(lambda name=name: not (h.drop / name).exists())  # type: ignore[misc]
        assert (h.drop / "results" / f"rejected_{name}").read_bytes() == CSV
    receipt = (h.drop / "results" / "receipt_result_x.txt").read_text()
    assert "error_code: RESERVED_NAME" in receipt and "status: REJECTED" in receipt
    assert h.files() == []
    refused = [r.getMessage() for r in caplog.records if "event=refused" in r.getMessage()]
    assert any("name=result_x.csv" in r and "outcome=RESERVED_NAME" in r for r in refused)


def test_deliver_writes_result_csv_and_json(
    harness: Callable[..., Harness], tmp_path: Path
) -> None:
    h = harness()
    h.start()
    result = b"ActionId,Amount,Reason,Line,Status\n1000.1.1,0,ITEM_RETURNED,1,APPLIED\n"
    stored = tmp_path / "r.csv"
    stored.write_bytes(result)
    outcome = FileOutcome(
        file_id="f1", campaign="acme", channel="dropdir", name="returns.csv", sender="dropdir:acme",
        peer="local", size=len(CSV), sha256="0" * 64, status="COMPLETE",
        received_at=datetime.now(UTC),
        counts={"APPLIED": 1}, result_path=stored,
    )  # fmt: skip
    assert h.channel.deliver(outcome) is True
    out = h.drop / "results"
    assert (out / "result_returns_f1.csv").read_bytes() == result
    summary = json.loads((out / "result_returns_f1.json").read_text())
    assert summary["file_id"] == "f1" and summary["status"] == "COMPLETE"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_end_to_end_drop_process_deliver(harness: Callable[..., Harness], tmp_path: Path) -> None:
    from ingest.actions import import_actions
    from ingest.worker import Worker

    h = harness(stable_seconds=0.2)
    today = datetime.now(UTC).date().isoformat()
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,Payout,"
        f"CustomerStatus\nA1,acme,101,O1,P1,{today}T10:00:00,100.00,USD,10.00,NEW\n"
        f"A2,acme,101,O2,P1,{today}T11:00:00,50.00,USD,5.00,NEW\n"
    )
    assert import_actions(h.store, h.settings, actions).imported == 2
    h.start()
    (h.drop / "returns.csv").write_bytes(
        b"ActionId,Amount,Reason\nA1,60.00,ITEM_RETURNED\nA2,0,CONS_FRAUD\nNOPE,1.00,OTHER\n"
    )
    wait_for(lambda: len(h.files()) == 1)
    assert Worker(h.settings, h.store).drain() == 1
    outcome = h.results.outcome(h.files()[0].file_id)
    assert outcome is not None and outcome.status == "COMPLETE"
    assert h.channel.deliver(outcome) is True
    fid = outcome.file_id
    text = (h.drop / "results" / f"result_returns_{fid}.csv").read_text()
    header, *body = list(csv.reader(io.StringIO(text)))
    rows = [dict(zip(header, row, strict=True)) for row in body]  # last ActionId: the resolved one
    assert [(row[0], r["Status"]) for row, r in zip(body, rows, strict=True)] == [
        ("A1", "APPLIED"),
        ("A2", "APPLIED"),
        ("NOPE", "ERROR"),
    ]
    assert rows[0]["NewAmount"] == "60.00" and rows[0]["NewPayout"] == "6.00"
    assert rows[1]["State"] == "REVERSED"
    assert rows[2]["ErrorCode"] == "ACTION_NOT_FOUND"
    summary = json.loads((h.drop / "results" / f"result_returns_{fid}.json").read_text())
    assert summary["status"] == "COMPLETE" and summary["channel"] == "dropdir"


def test_periodic_rescan_finds_a_file_whose_event_was_lost(harness: Callable[..., Harness]) -> None:
    h = harness(stable_seconds=0.2, rescan_seconds=0.5)
    h.start()
    observer = h.channel._observer
    assert observer is not None
    observer.stop()  # from now on no event arrives, as after an inotify queue overflow
    observer.join()
    (h.drop / "lost.csv").write_bytes(CSV)
    wait_for(lambda: len(h.files()) == 1)
    assert h.files()[0].name == "lost.csv"


def test_unusable_root_is_a_channel_error(harness: Callable[..., Harness], tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    h = harness(root=str(tmp_path / "plain-file" / "drop"))
    with pytest.raises(ChannelError, match="dropdir: cannot create folders"):
        h.channel.start()
