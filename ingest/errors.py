"""The exception tree: one root; Transient errors are retried, Terminal ones are not.

The root, its two branches, `FileRejected` and the file-level codes a reader raises are defined in
`parsers.errors` (the lowest layer, so parsers import nothing from ingest) and re-exported here:
`ingest.errors.FileRejected is parsers.errors.FileRejected`, so `except FileRejected` and
`isinstance(exc, Terminal)` hold for a parser's error anywhere. The errors only ingest and the
layers above raise are added below, under the same root.
"""

from __future__ import annotations

from parsers.errors import (
    CORRUPT_ARCHIVE,
    DUPLICATE_COLUMN,
    EMPTY_FILE,
    ENCRYPTED,
    NO_HEADER,
    NO_IDENTIFIER_COLUMN,
    TOO_LARGE,
    TOO_MANY_ROWS,
    UNREADABLE,
    UNSUPPORTED_FORMAT,
    FileRejected,
    ReturnsdError,
    Terminal,
    Transient,
)

__all__ = [
    "CORRUPT_ARCHIVE",
    "DUPLICATE_COLUMN",
    "EMPTY_FILE",
    "ENCRYPTED",
    "NO_HEADER",
    "NO_IDENTIFIER_COLUMN",
    "RESERVED_NAME",
    "TOO_LARGE",
    "TOO_MANY_ROWS",
    "UNREADABLE",
    "UNSUPPORTED_FORMAT",
    "ConfigError",
    "FileRejected",
    "ReturnsdError",
    "SpoolFull",
    "Terminal",
    "Transient",
    "UnknownCampaign",
]


class ConfigError(Terminal):
    """The configuration is invalid; the message lists every problem."""


class UnknownCampaign(Terminal):
    """A file arrived for a campaign that is not configured."""


class SpoolFull(Transient):
    """The spool's file system has no room; the sender should try again later."""


# A name reserved for what returnsd writes back (receipt_*, result_*); refused at intake.
RESERVED_NAME = "RESERVED_NAME"
