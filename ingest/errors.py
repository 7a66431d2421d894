"""The exception tree: one root; Transient errors are retried, Terminal ones are not."""

from __future__ import annotations


class ReturnsdError(Exception):
    """Root of every error returnsd raises on purpose."""


class Transient(ReturnsdError):
    """A failure that may pass if the same work is tried again later."""


class Terminal(ReturnsdError):
    """A failure that trying again will not fix."""


class ConfigError(Terminal):
    """The configuration is invalid; the message lists every problem."""


class UnknownCampaign(Terminal):
    """A file arrived for a campaign that is not configured."""


class SpoolFull(Transient):
    """The spool's file system has no room; the sender should try again later."""


class FileRejected(Terminal):
    """A file-level failure: nothing in the file is applied."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# File-level failure codes (SPEC §3); the message always says what to fix.
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
RESERVED_NAME = "RESERVED_NAME"
