"""The API submissions queue: concurrent requests share commits, nothing is applied twice."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from ingest import tables as t
from ingest.applier import AlreadyApplied, Applier, Recorded, items_of, write_records
from ingest.config import Settings
from ingest.store import Store
from ingest.submissions import (
    Submissions,
    SubmissionStatus,
    SubmissionType,
    purge_submissions,
)


def enqueue(subs: Submissions, action: str = "A-1") -> str:
    """Queue one modification."""
    return subs.enqueue(
        sid="IRtest000001", token_id="tok_1", campaigns=["acme"],
        kind=SubmissionType.MODIFICATION,
        fields=[("ActionId", action), ("Amount", "1.00"), ("Reason", "ORDER_UPDATE")],
        payload=f"ActionId={action}&Amount=1.00&Reason=ORDER_UPDATE",
    )  # fmt: skip


def test_concurrent_requests_are_all_stored_once(store: Store) -> None:
    subs = Submissions(store)
    ids: list[str] = []
    threads = [threading.Thread(target=lambda i=i: ids.append(enqueue(subs, f"A-{i}")))
               for i in range(40)]  # fmt: skip
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(ids)) == 40
    with store.read() as conn:
        assert conn.scalar(select(func.count()).select_from(t.api_submissions)) == 40
    got = subs.get("IRtest000001", ids[0])
    assert got is not None and got.status is SubmissionStatus.QUEUED
    assert subs.get("IRother00001", ids[0]) is None  # another account sees nothing


def test_a_submission_is_completed_once(settings: Settings, store: Store) -> None:
    subs = Submissions(store)
    enqueue(subs)
    (taken,) = Applier(settings, store)._take()
    assert subs.get("IRtest000001", taken.batch_id).status is SubmissionStatus.IN_PROGRESS  # type: ignore[union-attr]
    record = Recorded(taken.seq, "acme", None, None, {"status": "APPLIED"})
    with store.begin() as conn:
        write_records(conn, [record])
    with pytest.raises(AlreadyApplied), store.begin() as conn:
        write_records(conn, [record])


def test_items_sku_quantity_and_numbered_items() -> None:
    fields = [("ActionId", "A"), ("Sku", "X"), ("Quantity", "0"), ("Sku2", "Y"),
              ("Quantity2", "2"), ("Amount2", "9.50"), ("ItemCategory2", "Hats"),
              ("Reason", "ORDER_UPDATE")]  # fmt: skip
    one, two = items_of(fields)
    assert (one.sku, one.quantity, one.amount) == ("X", "0", None)
    assert (two.sku, two.quantity, two.amount, two.category) == ("Y", "2", "9.50", "Hats")
    assert items_of([("ActionId", "A"), ("Amount", "5.00")]) == ()  # the action's own Amount


def test_complete_submissions_are_kept_as_long_as_results(settings: Settings, store: Store) -> None:
    subs = Submissions(store)
    batch = enqueue(subs)
    (taken,) = Applier(settings, store)._take()
    with store.begin() as conn:
        write_records(conn, [Recorded(taken.seq, "acme", None, None, None)])
    assert purge_submissions(settings, store) == 0
    later = datetime.now(UTC) + timedelta(days=settings.retention_days + 1)
    assert purge_submissions(settings, store, now=later) == 1
    assert subs.get("IRtest000001", batch) is None
