"""What the console is built from: config, store, spool, and what the composition root lends."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from email.message import EmailMessage

from ingest.config import ConsoleOptions, Settings
from ingest.spool import Spool
from ingest.store import Store


def _no_channels() -> Collection[str]:
    return ()


@dataclass(frozen=True)
class ConsoleContext:
    """The console's dependencies; `running` names the channels up, `send_mail` mails a report."""

    settings: Settings
    store: Store
    spool: Spool
    options: ConsoleOptions
    running: Callable[[], Collection[str]] = _no_channels
    send_mail: Callable[[EmailMessage], None] | None = None

    @property
    def tls(self) -> bool:
        """True when the console serves HTTPS (cookies get `Secure`)."""
        return self.options.tls_cert is not None and self.options.tls_key is not None
