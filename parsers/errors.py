"""The root of returnsd's error tree and the file-level failures a reader raises; imports nothing.

The tree lives here, in the lowest layer, so that every package above can build on it without an
import cycle: `ingest.errors` re-exports these names and adds its own errors under the same root.
Whether work is tried again is decided by `isinstance` alone: `Transient` is retried, `Terminal`
is not, and `FileRejected` is `Terminal` (the same bytes fail the same way every time).
"""

from __future__ import annotations


class ReturnsdError(Exception):
    """Root of every error returnsd raises on purpose."""


class Transient(ReturnsdError):
    """A failure that may pass if the same work is tried again later."""


class Terminal(ReturnsdError):
    """A failure that trying again will not fix."""


class FileRejected(Terminal):
    """A file-level failure: nothing in the file is applied; `code` names it, `message` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# File-level failure codes a reader raises; the message always says what to fix.
UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
UNREADABLE = "UNREADABLE"
EMPTY_FILE = "EMPTY_FILE"
NO_HEADER = "NO_HEADER"
NO_IDENTIFIER_COLUMN = "NO_IDENTIFIER_COLUMN"
DUPLICATE_COLUMN = "DUPLICATE_COLUMN"
TOO_LARGE = "TOO_LARGE"
TOO_MANY_ROWS = "TOO_MANY_ROWS"
ENCRYPTED = "ENCRYPTED"
CORRUPT_ARCHIVE = "CORRUPT_ARCHIVE"
