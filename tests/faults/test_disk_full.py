"""Disk full while receiving: every channel answers a temporary error and stores nothing.

The spool folder is a 6 MiB tmpfs (the database and the FTP homes are elsewhere, unless a test
puts the FTP homes on the same full disk). Once the tmpfs is full, a file sent through FTP must be
answered 452 (or 451), never 226; a mail 452 (or 451) after DATA; an API upload 507 — small bodies
that stay in memory and large ones that spill to the spool's tmp folder alike. Nothing may be
half-stored: no file record, no stray temporary file, no upload left in the FTP home. Once space is
freed, the same files are accepted and processed.
"""

from __future__ import annotations

import ftplib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from ingest.actions import import_actions
from ingest.config import Settings
from ingest.store import prepare
from returnsd.daemon import Daemon
from tests.conftest import need
from tests.faults.helpers import (
    CAMPAIGN,
    HOST,
    Db,
    Plan,
    Secrets,
    campaign_doc,
    ftp_send,
    http_send,
    smtp_send,
    until,
    verify,
)

pytestmark = [pytest.mark.timeout(120)]
BIG_ROWS = 40_000  # padding rows, ~1.4 MB of CSV: over the API's 1 MiB in-memory buffer


def mount_tmpfs(folder: Path, size: str) -> None:
    """Mount a tmpfs of `size` on `folder` (root only); `need` skips or fails when impossible."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        need("tmpfs", f"cannot mount a tmpfs (root needed): {done.stderr.strip()}")


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; return it."""
    filler = folder / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError:
            pass
    with open(folder / "filler-tail", "wb", buffering=0) as out:  # the last partial page
        try:
            while True:
                out.write(b"\0")
        except OSError:
            pass
    return filler


@dataclass
class Rig:
    """An in-process daemon whose spool lives on a tiny tmpfs."""

    daemon: Daemon
    settings: Settings
    keys: Secrets
    plan: Plan
    fs: Path
    ftp_home: Path
    db: Db

    def port(self, channel: str) -> int:
        """The port a channel listens on."""
        return int(cast(Any, self.daemon.channels[channel]).port)

    def leftovers(self) -> dict[str, list[str]]:
        """Files a refused upload may have left: records, spool files, FTP home files."""
        spool = self.settings.path(self.settings.spool_dir)
        return {
            "records": [r["id"] for r in self.db.files()],
            "spool_tmp": sorted(p.name for p in (spool / "tmp").iterdir()),
            "spool": sorted(p.name for p in spool.glob("acme/*")),
            "ftp_home": sorted(p.name for p in self.ftp_home.iterdir() if p.name != "results"),
        }


def build_rig(
    make_settings: Callable[..., Settings], tmp_path: Path, ftp_on_full_disk: bool
) -> Iterator[Rig]:
    """FTP, SMTP and HTTP on loopback; the spool (and the FTP homes if asked) on a small tmpfs."""
    fs = tmp_path / "small"
    mount_tmpfs(fs, "6m")
    try:
        keys = Secrets()
        ftp_root = fs / "ftp" if ftp_on_full_disk else tmp_path / "ftp"
        settings = make_settings(
            spool_dir=str(fs / "spool"),
            campaigns=[campaign_doc(keys)],
            channels={
                "ftp": {"port": 0, "root": str(ftp_root), "close_grace": 0.1},
                "smtp": {"port": 0},
                "http": {"port": 0},
            },
        )
        store = prepare(settings)
        plan = Plan(100)
        import_actions(store, settings, plan.write_actions(tmp_path / "actions.csv"))
        daemon = Daemon(settings, store)
        daemon.start()
        try:
            db = Db(settings.database_url)
            yield Rig(daemon, settings, keys, plan, fs, ftp_root / "acme", db)
        finally:
            daemon.stop()
            store.dispose()
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


@pytest.fixture
def spool_full(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Rig]:
    """The spool on a small tmpfs; database and FTP homes on the ordinary disk."""
    yield from build_rig(make_settings, tmp_path, ftp_on_full_disk=False)


@pytest.fixture
def all_full(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Rig]:
    """The spool and the FTP homes on the same small tmpfs (one var/ disk for both)."""
    yield from build_rig(make_settings, tmp_path, ftp_on_full_disk=True)


def send(rig: Rig, key: str, data: bytes) -> str:
    """Send a file through the channel `key` names (ftp…, smtp…, http…); the reply as text."""
    name = f"{key}.csv"
    if key.startswith("ftp"):
        try:
            return ftp_send(rig.port("ftp"), rig.keys.ftp_password, name, data, timeout=3)
        except ftplib.Error as exc:
            return str(exc)
        except OSError as exc:
            return f"000 no reply: {exc!r}"
    if key.startswith("smtp"):
        code, text = smtp_send(rig.port("smtp"), name, data)
        return f"{code} {text}"
    if key.startswith("raw"):
        resp = httpx.post(
            f"http://{HOST}:{rig.port('http')}/v1/campaigns/{CAMPAIGN}/files",
            params={"name": name},
            headers={"Authorization": f"Bearer {rig.keys.api_token}", "Content-Type": "text/csv"},
            content=data,
            timeout=15,
        )
    else:
        resp = http_send(rig.port("http"), rig.keys.api_token, name, data)
    return f"{resp.status_code} {resp.text}"


def code(reply: str) -> int:
    """The status code a reply starts with."""
    return int(reply[:3])


TEMPORARY = tuple(range(400, 500))
WANT_OK = {"ftp": 226, "smtp": 250, "http": 202, "raw": 202}


def refused_then_accepted(rig: Rig, want: dict[str, tuple[int, ...]]) -> None:
    """Fill the disk and send one file per key of `want` (ftp…, smtp…, http…, raw…; `_big`: over
    1 MiB): nothing may be stored and each reply code must be in `want[key]`; then free the space
    and send the same files again: each accepted and processed.
    """
    files = {}
    for key in want:
        f = rig.plan.next_file(key, 5, padding=BIG_ROWS if key.endswith("_big") else 0)
        assert f is not None
        files[key] = f.data
    filler = fill(rig.fs)
    replies = {key: send(rig, key, data) for key, data in files.items()}
    print("\nFAULTS disk-full " + json.dumps(replies))
    assert all(code(r) != WANT_OK[k.split("_")[0]] for k, r in replies.items()), replies
    until(lambda: not rig.leftovers()["ftp_home"], "the refused FTP upload to be deleted", 10)
    assert rig.leftovers() == {"records": [], "spool_tmp": [], "spool": [], "ftp_home": []}
    for key, reply in replies.items():
        assert code(reply) in want[key], f"{key}: {reply}"

    filler.unlink()
    (rig.fs / "filler-tail").unlink()
    again = {key: send(rig, key, data) for key, data in files.items()}
    assert {k: code(r) for k, r in again.items()} == {k: WANT_OK[k.split("_")[0]] for k in want}
    until(
        lambda: (
            len(rig.db.files()) == len(want)
            and all(r["status"] == "COMPLETE" for r in rig.db.files())
        ),
        "every file to be COMPLETE",
        60,
    )
    verdict = verify(rig.db, rig.plan, rig.plan.files)
    assert (verdict.lost, verdict.applied_twice, verdict.wrong_ledger) == ([], [], [])
    assert os.listdir(rig.settings.path(rig.settings.spool_dir) / "tmp") == []


def test_spool_full_every_channel_answers_a_temporary_error(spool_full: Rig) -> None:
    ftp, smtp = (451, 452), (451, 452)
    refused_then_accepted(
        spool_full,
        {"ftp": ftp, "ftp_big": ftp, "smtp": smtp, "smtp_big": smtp, "http": (507,), "raw": (507,)},
    )


@pytest.mark.parametrize("key", ["http_big", "raw_big"])
def test_spool_full_large_api_upload_answers_507(spool_full: Rig, key: str) -> None:
    refused_then_accepted(spool_full, {key: (507,)})


def test_ftp_home_full_large_upload_is_refused_temporarily(all_full: Rig) -> None:
    refused_then_accepted(all_full, {"ftp_big": TEMPORARY})


def test_ftp_home_full_large_upload_answers_452(all_full: Rig) -> None:
    refused_then_accepted(all_full, {"ftp_big": (451, 452)})


def test_ftp_home_full_small_upload_is_refused_temporarily(all_full: Rig) -> None:
    refused_then_accepted(all_full, {"ftp": (451, 452)})
