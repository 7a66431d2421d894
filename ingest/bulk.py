"""Bulk action I/O: load the actions a file touches as arrays, write them back sorted by key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, select

from ingest import tables as t
from ingest.domain import STATE_CODES, STATE_NAMES, EventTypeRule
from ingest.rules import ActionArrays, Items
from ingest.sql import SqlAdapter

CHUNK = 900
ACTION_COLUMNS = (
    "id",
    "event_type_id",
    "order_id",
    "event_at",
    "currency",
    "amount",
    "payout",
    "customer_status",
    "state",
    "mod_count",
    "orig_amount",
    "orig_payout",
    "orig_customer_status",
    "has_items",
)


def event_types(conn: Connection) -> dict[int, EventTypeRule]:
    """Every event type (all campaigns), by tracker id."""
    rows = conn.execute(select(t.event_types)).mappings()
    return {
        r["id"]: EventTypeRule(
            id=r["id"],
            campaign_id=r["campaign_id"],
            kind=r["kind"],
            payout_type=r["payout_type"],
            payout_value=Decimal(r["payout_value"]),
            lock_months=r["lock_months"],
            lock_days=r["lock_days"],
        )
        for r in rows
    }


INT_COLUMNS = frozenset(
    {
        "event_type_id",
        "amount",
        "payout",
        "mod_count",
        "orig_amount",
        "orig_payout",
        "has_items",
        "locked",
        "state",
    }
)
ORDER_COLUMNS = ("order_id", "event_at")
RESET_COLUMNS = ("orig_amount", "orig_payout", "orig_customer_status")


def load_actions(
    conn: Connection,
    sql: SqlAdapter,
    campaign_id: str,
    action_ids: pd.Series,
    order_ids: pd.Series,
    now: datetime,
    *,
    resets: bool = True,
    statuses: bool = True,
    currencies: bool = True,
) -> pd.DataFrame:
    """The campaign's actions named by id or order id, with a `locked` flag (lock date passed).

    Columns a file cannot need are not read: order id and event time unless some row names an
    order; original values unless some row may RESET (they are then the current values);
    customer status unless some row sets one or may RESET; currency unless some row gives one.
    Missing ones come back as None (and `write_arrays` leaves them alone).
    """
    skip: tuple[str, ...] = () if len(order_ids) else ORDER_COLUMNS
    skip += () if resets else RESET_COLUMNS
    skip += () if statuses or resets else ("customer_status",)
    skip += () if currencies else ("currency",)
    names = [t.actions.c[c].name for c in ACTION_COLUMNS if c not in skip]
    now_p = sql.ts(now)
    columns = [*names, "locked"]
    parts: list[list[np.ndarray]] = []
    raw: Any = conn.connection.driver_connection
    cur = raw.cursor()  # plain tuples: no Row overhead
    try:
        for column, keys in (("id", action_ids), ("order_id", order_ids)):
            # Sorted keys: each query walks the key's index in order (and rows come back sorted).
            wanted = _unique_sorted(keys)
            for start in range(0, len(wanted), sql.lookup_chunk):
                chunk = wanted[start : start + sql.lookup_chunk].to_pylist()
                cur.execute(
                    lookup_query(sql, names, column, len(chunk)),
                    (now_p, *sql.key_params(campaign_id, chunk)),
                )
                parts.append(_columns(cur.fetchall(), columns))  # columns per chunk: bounded
    finally:
        cur.close()
    frame = pd.DataFrame(
        {
            name: np.concatenate([p[i] for p in parts]) if parts else _empty(name)
            for i, name in enumerate(columns)
        },
        copy=False,
    )
    for column in ("customer_status", "currency"):
        if column not in frame:
            frame[column] = pd.Series([None] * len(frame), dtype=object)
    for original, current in zip(
        RESET_COLUMNS, ("amount", "payout", "customer_status"), strict=True
    ):
        if original not in frame:
            frame[original] = frame[current]
    return frame.drop_duplicates("id") if len(order_ids) else frame


def lookup_query(sql: SqlAdapter, names: Sequence[str], key: str, n: int) -> str:
    """SELECT the named columns (state as its code) and a `locked` flag of `n` actions by key.

    Parameters: the time the lock is checked against, then `sql.key_params(campaign, keys)`.
    """
    a = t.actions.c
    locked = f"CASE WHEN {a.lock_at.name} <= {sql.mark} THEN 1 ELSE 0 END AS locked"
    # States come back as their codes (small ints: no string per row to build).
    state = f"CASE {a.state.name} " + " ".join(
        f"WHEN '{name}' THEN {code}" for name, code in STATE_CODES.items()
    )
    select_list = ", ".join(f"{state} END AS state" if c == "state" else c for c in names)
    where = sql.keyed(a.campaign_id.name, a[key].name, n, scope_leads=key == "order_id")
    return f"SELECT {select_list}, {locked} FROM {t.actions.name} WHERE {where}"


def _unique_sorted(keys: pd.Series) -> pa.Array:
    """The distinct keys, sorted (bytewise, as the databases' text keys), nulls dropped."""
    values = pc.unique(pa.array(keys, type=pa.string(), from_pandas=True).drop_null())
    return values.take(pc.sort_indices(values))


def _empty(name: str) -> np.ndarray:
    return np.zeros(0, dtype=np.int64 if name in INT_COLUMNS else object)


def _columns(rows: list[tuple[Any, ...]], names: list[str]) -> list[np.ndarray]:
    """Rows to one array per column (much faster than pandas' generic row path)."""
    if not rows:
        return [_empty(n) for n in names]
    return [
        np.array(col, dtype=np.int64 if name in INT_COLUMNS else object)
        for name, col in zip(names, zip(*rows, strict=True), strict=True)
    ]


ITEM_COLUMNS = (
    "action_id",
    "sku",
    "category",
    "quantity",
    "amount",
    "orig_quantity",
    "orig_amount",
)


def load_items(conn: Connection, sql: SqlAdapter, action_ids: Sequence[str]) -> pd.DataFrame:
    """Items of these actions."""
    i = t.action_items
    cols = [i.c[c].name for c in ITEM_COLUMNS]
    rows: list[Any] = []
    for chunk in _chunks(sorted(set(action_ids)), CHUNK):
        query = (
            f"SELECT {', '.join(cols)} FROM {i.name} "
            f"WHERE {i.c.action_id.name} IN ({sql.marks(len(chunk))})"
        )  # the key's own index: action_id leads the primary key
        rows.extend(conn.exec_driver_sql(query, tuple(chunk)).fetchall())
    return pd.DataFrame.from_records(rows, columns=cols)


def build_arrays(
    actions: pd.DataFrame,
    items: pd.DataFrame,
    rules: dict[int, EventTypeRule],
    *,
    status_known: bool = True,
) -> ActionArrays:
    """Arrays over the loaded actions (position = row of `actions`)."""
    trackers = sorted(rules)
    which = pd.Index(trackers).get_indexer(actions["event_type_id"].to_numpy(dtype=np.int64))
    table = [rules[tr] for tr in trackers]

    def per_rule(values: list[Any], dtype: Any) -> np.ndarray:
        return np.array(values, dtype=dtype)[which] if len(which) else np.zeros(0, dtype)

    pos_of = pd.Index(actions["id"].to_numpy(dtype=object))
    item_pos = pos_of.get_indexer(items["action_id"].to_numpy(dtype=object))

    def ints(frame: pd.DataFrame, col: str) -> np.ndarray:
        return np.array(frame[col].to_numpy(dtype=np.int64, na_value=0), copy=True)

    def objs(frame: pd.DataFrame, col: str) -> np.ndarray:
        column = frame[col].astype(object)
        return np.array(column.where(column.notna(), None).to_numpy(dtype=object), copy=True)

    return ActionArrays(
        ids=actions["id"].to_numpy(dtype=object),
        currency=actions["currency"].to_numpy(dtype=object),
        kind=per_rule([r.kind for r in table], object),
        locked=actions["locked"].to_numpy(dtype=bool),
        fixed_rule=per_rule([r.payout_type == "fixed" for r in table], bool),
        percent_e4=per_rule([r.percent_e4 for r in table], np.int64),
        fixed_cents=per_rule([r.fixed_cents for r in table], np.int64),
        amount=ints(actions, "amount"),
        payout=ints(actions, "payout"),
        state=np.array(actions["state"], dtype=np.int8),
        mod_count=ints(actions, "mod_count"),
        customer_status=objs(actions, "customer_status"),
        orig_amount=ints(actions, "orig_amount"),
        orig_payout=ints(actions, "orig_payout"),
        orig_customer_status=objs(actions, "orig_customer_status"),
        status_known=status_known,
        items=Items(
            action_pos=item_pos.astype(np.int64),
            sku=items["sku"].to_numpy(dtype=object),
            category=objs(items, "category"),
            quantity=ints(items, "quantity"),
            amount=ints(items, "amount"),
            orig_quantity=ints(items, "orig_quantity"),
            orig_amount=ints(items, "orig_amount"),
            touched=np.zeros(len(items), dtype=bool),
        ),
    )


def id_order(arrays: ActionArrays) -> np.ndarray:
    """Positions of the loaded actions sorted by id (arrow's sort: fast on 1M strings)."""
    if arrays.order is None:
        ids = pa.array(arrays.ids, type=pa.string())
        arrays.order = np.asarray(pc.sort_indices(ids), dtype=np.int64)
    return arrays.order


UPDATED = ("amount", "payout", "state", "customer_status", "mod_count")
UPDATED_WITHOUT_STATUS = ("amount", "payout", "state", "mod_count")  # statuses not read


def final_values(arrays: ActionArrays, pos: np.ndarray) -> dict[str, np.ndarray]:
    """The actions' values after the file, one per entry of `pos`, as `actions` stores them.

    `action_id` is the audit's name for the key: the staging table feeds both tables.
    """
    return {
        "action_id": arrays.ids[pos],
        "amount": arrays.amount[pos],
        "payout": arrays.payout[pos],
        "state": STATE_NAMES[arrays.state[pos]],
        "customer_status": arrays.customer_status[pos],
        "mod_count": arrays.mod_count[pos],
    }


def write_items(conn: Connection, sql: SqlAdapter, arrays: ActionArrays) -> int:
    """Write every touched item back, sorted by key; return how many."""
    it = arrays.items
    s = np.flatnonzero(it.touched)
    if len(s):
        keys = sorted(s.tolist(), key=lambda i: (arrays.ids[it.action_pos[i]], it.sku[i]))
        s = np.array(keys, dtype=np.int64)
        item_columns = {
            "quantity": it.quantity[s],
            "amount": it.amount[s],
            "category": it.category[s],
            "action_id": arrays.ids[it.action_pos[s]],
            "sku": it.sku[s],
        }
        sql.update_many(conn, t.action_items, ("action_id", "sku"), item_columns)
    return len(s)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
