"""The file record's one owner: its status, and every write to the `files`/`results` rows.

`ingest.files.record` holds the record's types and the transitions made inside a caller's
transaction (admit, duplicate, complete, fail); `ingest.files.lifecycle` the ones that open their
own (claim, renew, release, recover, deliver, reprocess, purge). Nothing else writes those rows.
"""

from ingest.files.lifecycle import FileLifecycle
from ingest.files.record import (
    FINISHED,
    INTERNAL_ERROR,
    INTERRUPTED,
    RETRYABLE,
    Admitted,
    Completed,
    FileRecord,
    FileStatus,
    LostClaim,
    NewFile,
    admit,
    complete,
    duplicate,
    fail,
)

__all__ = [
    "FINISHED",
    "INTERNAL_ERROR",
    "INTERRUPTED",
    "RETRYABLE",
    "Admitted",
    "Completed",
    "FileLifecycle",
    "FileRecord",
    "FileStatus",
    "LostClaim",
    "NewFile",
    "admit",
    "complete",
    "duplicate",
    "fail",
]
