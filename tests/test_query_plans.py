"""The engine's action lookups are planned on the key, never as a walk of the campaign.

A query plan is a fact of the database, not a timing: SQLite's plan does not depend on the data
(returnsd never runs ANALYZE), PostgreSQL's is checked on an analysed ledger big enough for the
planner to prefer an index over reading the table.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import text

from ingest import bulk
from ingest import tables as t
from ingest.bulk import ACTION_COLUMNS
from ingest.sql import Staged
from ingest.store import Store

CAMPAIGN = "acme"


def _plan(store: Store, query: str, params: tuple[object, ...]) -> str:
    with store.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        if store.dialect == "sqlite":
            cur.execute(f"EXPLAIN QUERY PLAN {query}", params)
            return "\n".join(str(row[-1]) for row in cur.fetchall())
        cur.execute(f"EXPLAIN {query}", params)
        return "\n".join(str(row[0]) for row in cur.fetchall())


def _fill(store: Store, n: int) -> None:
    """`n` actions of the campaign (COPY on PostgreSQL), then ANALYZE."""
    with store.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        rows = [
            (f"A{i:07d}", CAMPAIGN, 101, f"O{i}", "P1", "2026-11-01 00:00:00+00",
             "2026-12-27 00:00:00+00", "USD", 1000, 100, None, "PENDING", 0, 1000, 100, None, 0)
            for i in range(n)
        ]  # fmt: skip
        cols = ", ".join(c for c in ("id", "campaign_id", "event_type_id", "order_id",
                                     "partner_id", "event_at", "lock_at", "currency", "amount",
                                     "payout", "customer_status", "state", "mod_count",
                                     "orig_amount", "orig_payout", "orig_customer_status",
                                     "has_items"))  # fmt: skip
        with raw.cursor() as cur:
            buf = io.StringIO()
            for r in rows:
                buf.write(",".join("" if v is None else str(v) for v in r) + "\n")
            with cur.copy(f"COPY actions ({cols}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buf.getvalue())
    with store.begin() as conn:
        conn.execute(text("ANALYZE actions"))


@pytest.mark.parametrize("key", ["id", "order_id"])
def test_sqlite_lookup_uses_the_key_index(store: Store, key: str) -> None:
    if store.dialect != "sqlite":
        pytest.skip("the PostgreSQL plan is checked on an analysed ledger below")
    query = bulk.lookup_query(store.sql, list(ACTION_COLUMNS), key, 3)
    plan = _plan(store, query, ("2026-12-01", *store.sql.key_params(CAMPAIGN, ["a", "b", "c"])))
    index = "sqlite_autoindex_actions_1 (id=?)" if key == "id" else "ix_actions_order"
    assert f"SEARCH actions USING INDEX {index}" in plan, plan
    if key == "id":
        assert "ix_actions_order" not in plan, plan


def test_postgres_lookup_uses_the_primary_key(store: Store) -> None:
    if store.dialect != "postgresql":
        pytest.skip("SQLite's plan is checked above")
    _fill(store, 50_000)
    ids = [f"A{i:07d}" for i in range(0, 50_000, 50)]  # 1,000 of the 50,000
    query = bulk.lookup_query(store.sql, list(ACTION_COLUMNS), "id", len(ids))
    plan = _plan(store, query, ("2026-12-01 00:00:00+00", *store.sql.key_params(CAMPAIGN, ids)))
    assert "actions_pkey" in plan, plan
    assert "Seq Scan on actions" not in plan, plan


def _staged(ids: list[str]) -> Staged:
    n = len(ids)
    rows = {
        "seq": np.arange(n, dtype=np.int64),
        "is_last": np.ones(n, dtype=np.int64),
        "action_id": np.array(ids, dtype=object),
        "amount": np.full(n, 500, dtype=np.int64),
        "reason": np.full(n, "ITEM_RETURNED", dtype=object),
    }
    return Staged(t.actions, "id", "action_id", ("amount",), t.audit, ("action_id", "reason"),
                  rows, {"channel": "cli"})  # fmt: skip


def test_update_from_the_stage_searches_the_primary_key(store: Store) -> None:
    sql = store.sql
    if store.dialect == "postgresql":
        _fill(store, 50_000)  # the planner needs a table big enough to prefer an index
    staged = _staged([f"A{i:07d}" for i in range(0, 50_000, 50)])
    with store.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cur = raw.cursor()
        sql.fill_stage(cur, staged)
        sql.before_update(cur, 1000)
        explain = "EXPLAIN QUERY PLAN" if store.dialect == "sqlite" else "EXPLAIN"
        cur.execute(f"{explain} {sql.staged_update(staged)}")
        plan = "\n".join(str(row[-1] if store.dialect == "sqlite" else row[0]) for row in cur)
        cur.execute("DROP TABLE _stage")
        cur.close()
    if store.dialect == "sqlite":
        assert "SCAN s" in plan and "sqlite_autoindex_actions_1 (id=?)" in plan, plan
        assert "SCAN actions" not in plan, plan
    else:
        assert "actions_pkey" in plan, plan
        assert "Seq Scan on actions" not in plan, plan
