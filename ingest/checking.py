"""Check a file without applying it (SPEC §8's dry run), for every way in: CLI, HTTP, console.

The dry run itself is the engine's (`ingest.engine.dry_run`: parse, match and plan, nothing
written); this module gives it to the layers that may not import the engine (channels).
"""

from __future__ import annotations

from ingest.config import Settings
from ingest.engine import DryRun, dry_run
from ingest.store import Store

__all__ = ["DryRun", "check_file"]


def check_file(
    settings: Settings, store: Store, campaign_id: str, name: str, data: bytes
) -> DryRun:
    """A file's summary and result CSV as a real run would give them, with nothing changed.

    Not recorded on purpose: a dry run's hash would make the real upload of the same bytes a
    DUPLICATE, and the files list stays the list of what was received for applying.
    """
    with store.read() as conn:
        return dry_run(conn, store.sql, settings, campaign_id, name, data)
