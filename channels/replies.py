"""Giving results back as files: names in a results folder, atomic writes, delivery events.

A results folder (FTP `results/`, the drop folder's `results/`, the pull's `results_folder`) holds,
for every received file, names that carry its file id so that two uploads with the same name
never overwrite each other's replies:

- `receipt_<stem>_<file id>.txt`  written when the file is received,
- `result_<stem>_<file id>.csv`   the line-by-line result (absent for FAILED and DUPLICATE files),
- `result_<stem>_<file id>.json`  the summary (always),

where `<stem>` is the uploaded name without its file-type extensions (`returns.csv.gz` →
`returns`). Mail attachments and HTTP downloads keep the shorter `result_<stem>.csv`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from ingest.events import file_event
from ingest.results import FileOutcome, reply_name
from ingest.spool import Accepted


def folder_name(prefix: str, name: str, ext: str, file_id: str) -> str:
    """The name of a reply in a results folder: `result_returns_<file id>.csv`, …"""
    return reply_name(prefix, name, ext, file_id=file_id)


def receipt_name(file_id: str, name: str) -> str:
    """The receipt's name in a results folder."""
    return folder_name("receipt_", name, ".txt", file_id)


def result_files(outcome: FileOutcome) -> list[tuple[str, bytes]]:
    """The result CSV (when there is one) and the JSON summary, under their folder names."""
    files: list[tuple[str, bytes]] = []
    data = outcome.result_csv()
    if data is not None:
        files.append((folder_name("result_", outcome.name, ".csv", outcome.file_id), data))
    summary = json.dumps(outcome.summary(), indent=2, default=str).encode()
    files.append((folder_name("result_", outcome.name, ".json", outcome.file_id), summary))
    return files


def receipt_text(accepted: Accepted, outcome: FileOutcome | None) -> str:
    """The receipt: the file's recorded outcome, under the name the sender used."""
    if outcome is None:
        return f"file_id: {accepted.file_id}\nname: {accepted.name}\nstatus: {accepted.status}\n"
    return replace(outcome, name=accepted.name).receipt_text()


def write_atomic(target: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write `target` whole or not at all: a temporary file, fsync, then rename into place.

    The temporary file is a hidden name beside `target`, or in `tmp_dir` (same file system) when
    the target's folder is one a user can list and should not see half-written files in.
    """
    folder = tmp_dir if tmp_dir is not None else target.parent
    prefix = ("" if tmp_dir is not None else ".") + target.name[:40] + "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(folder: Path, outcome: FileOutcome, tmp_dir: Path | None = None) -> list[str]:
    """Write a finished file's replies into a local results folder; return the names written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in result_files(outcome):
        write_atomic(folder / name, data, tmp_dir)
        written.append(name)
    return written


def delivered(outcome: FileOutcome, where: str, event: str = "delivered") -> None:
    """Log that a result reached the sender (`delivered`) or was set aside (`outbox`)."""
    file_event(event, file_id=outcome.file_id, channel=outcome.channel, campaign=outcome.campaign,
               sender=outcome.sender, name=outcome.name, outcome=outcome.status,
               where=where)  # fmt: skip
