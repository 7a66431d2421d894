"""Durable intake: store a received file's bytes, record it, and only then let the channel ack.

Single node: the bytes are fsynced under `spool_dir` and renamed before the record commits. In
cluster mode they go into the database (`ingest.blobs`) in the same transaction as the record,
so one commit makes both durable and any node can process the file.
"""

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

from sqlalchemy.exc import IntegrityError

from ingest import blobs, errors, files
from ingest.config import Settings
from ingest.errors import FileRejected, SpoolFull, UnknownCampaign
from ingest.files import FINISHED, FileStatus, NewFile
from ingest.store import Store

QUEUED, PROCESSING, COMPLETE, FAILED, DUPLICATE = (
    FileStatus.QUEUED,
    FileStatus.PROCESSING,
    FileStatus.COMPLETE,
    FileStatus.FAILED,
    FileStatus.DUPLICATE,
)
RESERVED_PREFIXES = ("receipt_", "result_")
CHUNK = 1024 * 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Accepted:
    """What `Spool.accept` tells the channel: the file's id and status, safe to acknowledge."""

    file_id: str
    campaign: str
    name: str
    status: FileStatus
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
        self.shared = settings.cluster.enabled  # bytes in the database, read by every node
        self.node_id: str | None = None  # cluster mode: the node that receives (set by the root)
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
        final = self.tmp / f"{file_id}.shared" if self.shared else self.root / campaign / file_id
        size, digest = self._store_bytes(data, final)
        where = blobs.db_path(file_id) if self.shared else final
        if self.node_id:
            meta = {**(meta or {}), "node": self.node_id}  # this node gives the result back
        try:
            new = NewFile(
                file_id, campaign, channel, base, size, digest, where, now, sender, peer, meta or {}
            )
            accepted = self._record(new, final)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        if accepted.file_id != file_id or self.shared:
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
                if not self.shared:  # shared: the database commit makes the bytes durable
                    os.fsync(out.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            if not self.shared:
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

    def _record(self, new: NewFile, stored: Path) -> Accepted:
        for _ in range(3):
            try:
                with self.store.begin() as conn:
                    admitted = files.admit(conn, new)
                    if self.shared and admitted.file_id == new.id and admitted.status == QUEUED:
                        blobs.put(conn, new.id, blobs.SPOOL, stored)
            except IntegrityError:
                continue  # another copy was recorded at the same moment: look again
            return Accepted(
                admitted.file_id,
                new.campaign_id,
                new.name,
                admitted.status,
                new.size,
                new.sha256,
                admitted.duplicate_of,
            )
        raise errors.Transient("could not record the file; try again")


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


__all__ = [
    "COMPLETE",
    "DUPLICATE",
    "FAILED",
    "FINISHED",
    "PROCESSING",
    "QUEUED",
    "Accepted",
    "Spool",
    "is_reserved_name",
    "new_file_id",
]
