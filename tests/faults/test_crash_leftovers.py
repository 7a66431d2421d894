"""What a crash leaves in the spool is cleaned up eventually, not kept forever.

A kill -9 while a file is being spooled can leave two kinds of leftovers (the kill -9 rounds of
test_kill9.py count both): a half-written `tmp/<id>.part` (killed before the rename), and complete
bytes renamed to `<campaign>/<id>` whose record was never committed (killed between the rename and
the insert). Neither was acknowledged, so the sender sends again; the leftovers are only disk
space. Retention removes stale `.part` files; it should remove unrecorded spool files too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ingest.config import Settings
from ingest.retention import purge
from ingest.spool import Spool
from ingest.store import prepare
from tests.faults.helpers import Secrets, campaign_doc


def stale(path: os.PathLike[str], days: int) -> None:
    """Set a file's modification time `days` days back."""
    when = time.time() - days * 86400
    os.utime(path, (when, when))


def leftovers(make_settings: Callable[..., Settings]) -> list[str]:
    """Spool one real file, add an old `.part` and an old unrecorded file; run retention."""
    settings = make_settings(campaigns=[campaign_doc(Secrets())], retention_days=30)
    store = prepare(settings)
    try:
        spool = Spool(settings, store)
        kept = spool.accept("acme", "test", "r.csv", b"ActionId,Amount,Reason\n")
        part = spool.tmp / "20200101000000deadbeef00.part"
        orphan = spool.root / "acme" / "20200101000000deadbeef01"
        for p in (part, orphan):
            p.write_bytes(b"ActionId,Amount,Reason\n")
            stale(p, 60)
        purge(settings, store)
        left = sorted(p.name for p in spool.root.rglob("*") if p.is_file())
    finally:
        store.dispose()
    return [n for n in left if n != kept.file_id]


def test_retention_removes_a_stale_part_file(make_settings: Callable[..., Settings]) -> None:
    left = leftovers(make_settings)
    assert "20200101000000deadbeef00.part" not in left


def test_retention_removes_an_unrecorded_spool_file(make_settings: Callable[..., Settings]) -> None:
    left = leftovers(make_settings)
    assert left == []
