"""The one way a channel hands a file to the spool: accept, log the event, classify a refusal.

Every channel calls `Intake.accept`; it logs `event=received` or `event=duplicate` once the spool
holds the bytes, or `event=refused` and raises `Refusal`, whose `kind` the channel maps to its
protocol's answer (FTP 552/553/452/451, SMTP 452/451, HTTP 413/422/507/503, …).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.errors import TOO_LARGE, FileRejected, SpoolFull, Transient, UnknownCampaign
from ingest.events import file_event
from ingest.spool import Accepted, Spool


class RefusalKind(enum.Enum):
    """Why a file was not stored, in the terms every protocol answers in."""

    TOO_LARGE = "too_large"  # over the size limit: the sender must split the file
    REJECTED = "rejected"  # reserved name, unknown campaign …: resending will not help
    SPOOL_FULL = "spool_full"  # no disk space: try again later
    TEMPORARY = "temporary"  # the database or disk failed for now: try again later

    @property
    def transient(self) -> bool:
        """True when the same file may be taken if sent again later."""
        return self in (RefusalKind.SPOOL_FULL, RefusalKind.TEMPORARY)


class Refusal(Exception):
    """The spool did not take a file; `code` and `message` are for the sender, `cause` the log."""

    def __init__(self, kind: RefusalKind, code: str, message: str, cause: Exception) -> None:
        super().__init__(f"{code}: {message}")
        self.kind = kind
        self.code = code
        self.message = message
        self.cause = cause


@dataclass(frozen=True)
class Sender:
    """Who hands a file to a channel: the campaign it is for, the sender's name and address."""

    campaign: str
    sender: str | None
    peer: str | None


class Intake:
    """One channel's door to the spool (the channel's name is in every event it logs)."""

    def __init__(self, spool: Spool, channel: str) -> None:
        self.spool = spool
        self.channel = channel

    def accept(
        self,
        who: Sender,
        name: str,
        data: bytes | Path | BinaryIO,
        *,
        meta: dict[str, object] | None = None,
        started: float | None = None,
    ) -> Accepted:
        """Store a file durably and log it; raise `Refusal` (logged) when the spool will not."""
        started = time.monotonic() if started is None else started
        try:
            acc = self.spool.accept(
                who.campaign, self.channel, name, data, sender=who.sender, peer=who.peer, meta=meta
            )
        except (FileRejected, UnknownCampaign, SpoolFull, Transient) as exc:
            refusal = classify(exc)
            self.refused(who, refusal.code, name=name, reason=refusal.message, started=started)
            raise refusal from exc
        event = "duplicate" if acc.duplicate else "received"
        file_event(event, file_id=acc.file_id, channel=self.channel, campaign=who.campaign,
                   sender=who.sender, peer=who.peer, name=acc.name, size=acc.size,
                   seconds=time.monotonic() - started, outcome=acc.status)  # fmt: skip
        return acc

    def refused(
        self,
        who: Sender | None,
        outcome: str,
        *,
        name: str | None = None,
        size: int | None = None,
        reason: str | None = None,
        started: float | None = None,
        sender: str | None = None,
        peer: str | None = None,
    ) -> None:
        """Log that something was not taken (a file, a login, a recipient): `event=refused`."""
        seconds = time.monotonic() - started if started is not None else None
        file_event("refused", channel=self.channel, campaign=who.campaign if who else None,
                   sender=who.sender if who else sender, peer=who.peer if who else peer,
                   name=name, size=size, seconds=seconds, outcome=outcome,
                   reason=reason)  # fmt: skip


def classify(exc: Exception) -> Refusal:
    """Translate the spool's errors into a `Refusal` a channel can answer."""
    if isinstance(exc, FileRejected):
        kind = RefusalKind.TOO_LARGE if exc.code == TOO_LARGE else RefusalKind.REJECTED
        return Refusal(kind, exc.code, exc.message, exc)
    if isinstance(exc, UnknownCampaign):
        return Refusal(RefusalKind.REJECTED, "UNKNOWN_CAMPAIGN", str(exc), exc)
    if isinstance(exc, SpoolFull):
        return Refusal(RefusalKind.SPOOL_FULL, "SPOOL_FULL", "no space left on the server", exc)
    return Refusal(RefusalKind.TEMPORARY, "TEMPORARY_ERROR", "the server could not store it", exc)
