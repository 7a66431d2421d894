"""The read-side queries (ingest.queries): filters, keyset pages, tenancy, history, file errors."""

from __future__ import annotations

from datetime import timedelta

from ingest import queries as q
from ingest.config import Settings
from ingest.operations import Change, Operation, Role, apply_change
from ingest.store import Store
from tests.console_data import seed_actions


def test_keyset_pages_cover_every_row_once(store: Store) -> None:
    ids = seed_actions(store, n=230)
    seen: list[str] = []
    cursor = None
    with store.read() as conn:
        for _ in range(10):
            page = q.list_actions(conn, q.ActionFilter("acme"), cursor=cursor, limit=50)
            seen += [r.id for r in page.rows]
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == sorted(ids, reverse=True)


def test_filters_and_ascending_lock_sort(store: Store) -> None:
    seed_actions(store, n=120)
    with store.read() as conn:
        by_partner = q.list_actions(conn, q.ActionFilter("acme", partner_id="P007"), limit=500)
        assert {r.partner_id for r in by_partner.rows} == {"P007"} and len(by_partner.rows) == 3
        one = q.list_actions(conn, q.ActionFilter("acme", order_id="O0000042")).rows
        assert [r.id for r in one] == ["ACME-0000042"]
        first = q.list_actions(conn, q.ActionFilter("acme"), sort="lock_at", descending=False)
        assert first.rows[0].id == "ACME-0000000"
        rows = first.rows
        f = q.ActionFilter("acme", event_from=rows[10].event_at, event_to=rows[20].event_at)
        assert len(q.list_actions(conn, f).rows) == 10
        assert q.count_actions_upto(conn, q.ActionFilter("acme"), cap=100) == (100, True)
        assert q.count_actions_upto(conn, q.ActionFilter("acme", partner_id="P001")) == (3, False)
        soon = q.ActionFilter("acme", locks_within_days=8)
        assert len(q.list_actions(conn, soon, limit=500).rows) == 120
        assert q.list_actions(conn, q.ActionFilter("other")).rows == []


def test_a_tampered_cursor_is_page_one(store: Store) -> None:
    seed_actions(store, n=5)
    with store.read() as conn:
        page = q.list_actions(conn, q.ActionFilter("acme"), cursor="not-a-cursor")
    assert len(page.rows) == 5 and page.next_cursor is None


def test_detail_with_history_and_campaign_scope(store: Store, settings: Settings) -> None:
    seed_actions(store, n=3)
    out = apply_change(
        store,
        settings,
        "acme",
        Change("ACME-0000001", Operation.REVERSE, "ITEM_RETURNED"),
        actor="ann",
        channel="console",
        role=Role.ADVERTISER,
    )
    assert out.status == "APPLIED"
    with store.read() as conn:
        d = q.get_action(conn, "ACME-0000001", ["acme"])
        assert d is not None and d.action.state == "REVERSED"
        (h,) = d.history
        assert (h.actor, h.channel, h.reason, h.new_state) == (
            "ann",
            "console",
            "ITEM_RETURNED",
            "REVERSED",
        )
        assert q.get_action(conn, "ACME-0000001", ["other"]) is None
        assert len(q.get_action(conn, "ACME-0000000").items) == 2  # type: ignore[union-attr]
        assert q.locking_soon(conn, ["acme"], days=30) == 2
        assert d.action.lock_at - d.action.event_at == timedelta(days=27)


def test_sqlite_pages_come_from_an_index_without_sorting(store: Store) -> None:
    """The listing's query plans: a keyset page reads an index in order (no temporary sort)."""
    if store.dialect != "sqlite":
        return
    from datetime import UTC, datetime

    seed_actions(store, n=50)
    now = datetime.now(UTC)
    cursor = q.encode_cursor(now, "ACME-0000010")
    cases = [
        (q.ActionFilter("acme", states=("PENDING",)), "event_at", None, "ix_actions_event"),
        (q.ActionFilter("acme"), "event_at", cursor, "ix_actions_event"),
        (q.ActionFilter("acme"), "lock_at", cursor, "ix_actions_lock"),
        (q.ActionFilter("acme", partner_id="P001", event_from=now), "event_at", None,
         "ix_actions_partner"),
        (q.ActionFilter("acme", order_id="O0000001"), "event_at", None, "ix_actions_order"),
        (q.ActionFilter("acme", action_id="ACME-0000001"), "event_at", None, "sqlite_autoindex"),
    ]  # fmt: skip
    for flt, sort, cur, index in cases:
        query = q.page_query("sqlite", flt, sort=sort, cursor=cur)
        sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.read() as conn:
            plan = " | ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert index in plan, (flt, plan)
        if index in ("ix_actions_event", "ix_actions_lock"):
            assert "TEMP B-TREE" not in plan, (flt, plan)
