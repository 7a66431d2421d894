"""The contract every channel fulfils, and what the daemon hands each one."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import ClassVar, Protocol

from ingest.config import Settings
from ingest.errors import ReturnsdError
from ingest.results import FileOutcome, ResultStore
from ingest.spool import Spool


class ChannelError(ReturnsdError):
    """A channel could not start; the message names the channel, the address and the cause."""


@dataclass(frozen=True)
class ChannelContext:
    """What a channel may use: the config, the spool to store files, results to give back.

    `running` names the channels running beside it (for health answers); none by default.
    """

    settings: Settings
    spool: Spool
    results: ResultStore
    running: Callable[[], Collection[str]] = tuple


class Channel(Protocol):
    """A way files arrive: start listening, stop, and give results back to senders."""

    name: ClassVar[str]

    def start(self) -> None:
        """Return once the channel really listens (or is scheduled); raise ChannelError if not."""

    def stop(self) -> None:
        """Stop accepting, finish what is in hand, release every resource."""

    def deliver(self, outcome: FileOutcome) -> bool:
        """Give a finished file's result back; True when nothing is left to retry.

        The channel logs what it did (`event=delivered`, `event=outbox`, …): only it knows.
        """
