"""The spool stores bytes durably, records them once, and spots duplicates."""

from __future__ import annotations

import pytest

from ingest.errors import FileRejected, UnknownCampaign
from ingest.results import ResultStore
from ingest.spool import DUPLICATE, QUEUED, Spool
from ingest.store import Store


def test_accept_stores_and_records(spool: Spool, store: Store) -> None:
    acc = spool.accept(
        "acme", "cli", "returns.csv", b"ActionId,Amount,Reason\n1,0,OTHER\n", sender="ops"
    )
    assert acc.status == QUEUED
    out = ResultStore(store).outcome(acc.file_id)
    assert out is not None and out.status == QUEUED and out.size == 33
    assert out.sender == "ops" and out.name == "returns.csv"


def test_same_bytes_while_queued_is_the_same_file(spool: Spool) -> None:
    a = spool.accept("acme", "ftp", "a.csv", b"x,y\n")
    b = spool.accept("acme", "smtp", "b.csv", b"x,y\n")
    assert b.file_id == a.file_id and b.status == QUEUED


def test_same_bytes_after_finish_is_duplicate(spool: Spool, store: Store) -> None:
    from sqlalchemy import update

    from ingest import tables as t

    a = spool.accept("acme", "ftp", "a.csv", b"x,y\n")
    with store.begin() as conn:
        conn.execute(update(t.files).where(t.files.c.id == a.file_id).values(status="COMPLETE"))
    b = spool.accept("acme", "ftp", "a.csv", b"x,y\n")
    assert b.status == DUPLICATE and b.duplicate_of == a.file_id and b.file_id != a.file_id


def test_reserved_and_unknown(spool: Spool) -> None:
    with pytest.raises(FileRejected) as exc:
        spool.accept("acme", "ftp", "result_x.csv", b"x")
    assert exc.value.code == "RESERVED_NAME"
    with pytest.raises(UnknownCampaign):
        spool.accept("nope", "ftp", "x.csv", b"x")
