"""Durable intake: store a received file's bytes, record it, and only then let the channel ack."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from ingest import errors
from ingest import tables as t
from ingest.config import Settings
from ingest.errors import FileRejected, SpoolFull, UnknownCampaign
from ingest.store import Store

QUEUED, PROCESSING, COMPLETE, FAILED, DUPLICATE = (
    "QUEUED",
    "PROCESSING",
    "COMPLETE",
    "FAILED",
    "DUPLICATE",
)
FINISHED = (COMPLETE, FAILED, DUPLICATE)
RESERVED_PREFIXES = ("receipt_", "result_")
# Failures of returnsd itself, not of the file: the same bytes sent again are processed anew.
RETRYABLE = ("INTERNAL_ERROR", "INTERRUPTED")
CHUNK = 1024 * 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Accepted:
    """What `Spool.accept` tells the channel: the file's id and status, safe to acknowledge."""

    file_id: str
    campaign: str
    name: str
    status: str
    size: int
    sha256: str
    duplicate_of: str | None = None

    @property
    def duplicate(self) -> bool:
        """True when the same bytes were already received for this campaign."""
        return self.status == DUPLICATE


def new_file_id(now: datetime | None = None) -> str:
    """A sortable, unguessable file id: UTC timestamp plus random hex."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%d%H%M%S") + secrets.token_hex(5)


def is_reserved_name(name: str) -> bool:
    """True for names returnsd writes back itself (never ingested)."""
    base = os.path.basename(name).lower()
    return base.startswith(RESERVED_PREFIXES)


class Spool:
    """The spool folder plus the `files` table: the one way a file enters returnsd."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.root = settings.path(settings.spool_dir)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._listeners: list[Callable[[Accepted], None]] = []

    def on_queued(self, listener: Callable[[Accepted], None]) -> None:
        """Call `listener` after each file is queued (e.g. to wake a worker)."""
        self._listeners.append(listener)

    def accept(
        self,
        campaign: str,
        channel: str,
        name: str,
        data: bytes | Path | BinaryIO,
        *,
        sender: str | None = None,
        peer: str | None = None,
        meta: dict[str, object] | None = None,
    ) -> Accepted:
        """Store `data` durably (temp name, fsync, rename), record it, and return its id.

        Raises UnknownCampaign, FileRejected (reserved name, too large) or SpoolFull (disk full:
        the channel answers with a temporary error). Same bytes as an earlier file of the same
        campaign: a DUPLICATE record (nothing applied), or, when that earlier file is still
        queued or in progress, that file's id (a resend after a lost acknowledgement).
        """
        if self.settings.campaign(campaign) is None:
            raise UnknownCampaign(f"unknown campaign {campaign!r}")
        # Only the base name, without control characters (they break headers, mails, databases).
        base = CONTROL.sub("_", os.path.basename(name.replace("\\", "/"))) or "upload"
        if is_reserved_name(base):
            raise FileRejected(
                errors.RESERVED_NAME,
                f"{base!r}: names starting receipt_ or result_ are reserved for returnsd's own "
                "replies; rename the file",
            )
        now = datetime.now(UTC)
        file_id = new_file_id(now)
        final = self.root / campaign / file_id
        size, digest = self._store_bytes(data, final)
        try:
            accepted = self._record(
                campaign, channel, base, file_id, final, size, digest, now, sender, peer, meta
            )
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        if accepted.file_id != file_id:
            final.unlink(missing_ok=True)
        if accepted.status == QUEUED:
            for listener in self._listeners:
                listener(accepted)
        return accepted

    def _store_bytes(self, data: bytes | Path | BinaryIO, final: Path) -> tuple[int, str]:
        limit = self.settings.limits.max_file_bytes
        tmp = self.tmp / f"{final.name}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in _chunks(data):
                    size += len(chunk)
                    if size > limit:
                        raise FileRejected(
                            errors.TOO_LARGE,
                            f"file is over the {limit:,}-byte limit; split it into smaller files",
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull("no space left in the spool; try again later") from exc
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()

    def _record(
        self,
        campaign: str,
        channel: str,
        name: str,
        file_id: str,
        path: Path,
        size: int,
        digest: str,
        now: datetime,
        sender: str | None,
        peer: str | None,
        meta: dict[str, object] | None,
    ) -> Accepted:
        row = {
            "id": file_id,
            "campaign_id": campaign,
            "channel": channel,
            "name": name,
            "sender": sender,
            "peer": peer,
            "size": size,
            "sha256": digest,
            "spool_path": str(path),
            "attempts": 0,
            "meta": meta or {},
            "received_at": now,
        }
        for _ in range(3):
            try:
                with self.store.begin() as conn:
                    first = _first_with_hash(conn, campaign, digest)
                    if first is None:
                        conn.execute(
                            t.file_hashes.insert(),
                            {"campaign_id": campaign, "sha256": digest, "file_id": file_id},
                        )
                        conn.execute(t.files.insert(), {**row, "status": QUEUED})
                        return Accepted(file_id, campaign, name, QUEUED, size, digest)
                    first_id, first_status, first_error = first
                    if first_status == FAILED and first_error in RETRYABLE:
                        conn.execute(
                            t.file_hashes.update()
                            .where(
                                t.file_hashes.c.campaign_id == campaign,
                                t.file_hashes.c.sha256 == digest,
                            )
                            .values(file_id=file_id)
                        )
                        conn.execute(t.files.insert(), {**row, "status": QUEUED})
                        return Accepted(file_id, campaign, name, QUEUED, size, digest)
                    if first_status in (QUEUED, PROCESSING):
                        return Accepted(first_id, campaign, name, first_status, size, digest)
                    conn.execute(
                        t.files.insert(),
                        {
                            **row,
                            "spool_path": "",
                            "status": DUPLICATE,
                            "duplicate_of": first_id,
                            "error_code": DUPLICATE,
                            "error_message": f"the same bytes were already received as {first_id}",
                            "finished_at": now,
                        },
                    )
                    return Accepted(file_id, campaign, name, DUPLICATE, size, digest, first_id)
            except IntegrityError:
                continue  # another copy was recorded at the same moment: look again
        raise errors.Transient("could not record the file; try again")


def _first_with_hash(
    conn: Connection, campaign: str, digest: str
) -> tuple[str, str, str | None] | None:
    q = (
        select(t.files.c.id, t.files.c.status, t.files.c.error_code)
        .join(t.file_hashes, t.file_hashes.c.file_id == t.files.c.id)
        .where(t.file_hashes.c.campaign_id == campaign, t.file_hashes.c.sha256 == digest)
    )
    found = conn.execute(q).first()
    return (found[0], found[1], found[2]) if found else None


def _chunks(data: bytes | Path | BinaryIO) -> Iterator[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            yield bytes(view[i : i + CHUNK])
        return
    if isinstance(data, Path):
        with open(data, "rb") as f:
            yield from iter(lambda: f.read(CHUNK), b"")
        return
    yield from iter(lambda: data.read(CHUNK), b"")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
