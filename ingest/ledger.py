"""Bulk ledger I/O: load the slice of actions a file touches, write it back sorted by key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, select

from ingest import tables as t
from ingest.domain import EventTypeRule
from ingest.rules import STATE_CODES, STATE_NAMES, Items, Ledger

FULL_SCAN_AT = 20_000
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


def ts_param(conn: Connection, moment: datetime) -> Any:
    """A timestamp as the dialect stores it (SQLite: naive UTC text; PostgreSQL: aware)."""
    moment = moment.astimezone(UTC)
    if conn.dialect.name == "sqlite":
        return moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return moment


def campaign_lock(conn: Connection, campaign_id: str) -> None:
    """Serialise writers of one campaign's actions (SQLite's write lock already does)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (campaign_id,))


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


def load_actions(
    conn: Connection,
    campaign_id: str,
    action_ids: Sequence[str],
    order_ids: Sequence[str],
    now: datetime,
) -> pd.DataFrame:
    """The campaign's actions named by id or order id, with a `locked` flag (lock date passed)."""
    cols = ", ".join(ACTION_COLUMNS)
    locked = "CASE WHEN lock_at <= {p} THEN 1 ELSE 0 END AS locked"
    p = "?" if conn.dialect.name == "sqlite" else "%s"
    base = f"SELECT {cols}, {locked.format(p=p)} FROM actions WHERE campaign_id = {p}"
    now_p = ts_param(conn, now)
    rows: list[Any] = []
    if len(action_ids) + len(order_ids) >= FULL_SCAN_AT:
        rows = list(conn.exec_driver_sql(base, (now_p, campaign_id)).fetchall())
    else:
        for column, keys in (("id", action_ids), ("order_id", order_ids)):
            for chunk in _chunks(sorted(set(keys)), CHUNK):
                marks = ", ".join([p] * len(chunk))
                sql = f"{base} AND {column} IN ({marks})"
                rows.extend(conn.exec_driver_sql(sql, (now_p, campaign_id, *chunk)).fetchall())
    frame = pd.DataFrame.from_records(rows, columns=[*ACTION_COLUMNS, "locked"])
    return frame.drop_duplicates("id") if len(frame) else frame


def load_items(conn: Connection, action_ids: Sequence[str]) -> pd.DataFrame:
    """Items of these actions."""
    p = "?" if conn.dialect.name == "sqlite" else "%s"
    cols = ["action_id", "sku", "category", "quantity", "amount", "orig_quantity", "orig_amount"]
    rows: list[Any] = []
    for chunk in _chunks(sorted(set(action_ids)), CHUNK):
        marks = ", ".join([p] * len(chunk))
        sql = f"SELECT {', '.join(cols)} FROM action_items WHERE action_id IN ({marks})"
        rows.extend(conn.exec_driver_sql(sql, tuple(chunk)).fetchall())
    return pd.DataFrame.from_records(rows, columns=cols)


def build_ledger(
    actions: pd.DataFrame, items: pd.DataFrame, rules: dict[int, EventTypeRule]
) -> Ledger:
    """Arrays over the loaded actions (position = row of `actions`)."""
    et = actions["event_type_id"].to_numpy()
    rule = [rules[int(x)] for x in et]
    pos_of = pd.Index(actions["id"].to_numpy(dtype=object))
    item_pos = pos_of.get_indexer(items["action_id"].to_numpy(dtype=object))

    def ints(frame: pd.DataFrame, col: str) -> np.ndarray:
        return np.array(frame[col].to_numpy(dtype=np.int64, na_value=0), copy=True)

    def objs(frame: pd.DataFrame, col: str) -> np.ndarray:
        return np.array([None if pd.isna(v) else v for v in frame[col]], dtype=object)

    return Ledger(
        ids=actions["id"].to_numpy(dtype=object),
        currency=actions["currency"].to_numpy(dtype=object),
        kind=np.array([r.kind for r in rule], dtype=object),
        locked=actions["locked"].to_numpy(dtype=bool),
        fixed_rule=np.array([r.payout_type == "fixed" for r in rule], dtype=bool),
        percent_e4=np.array([r.percent_e4 for r in rule], dtype=np.int64),
        fixed_cents=np.array([r.fixed_cents for r in rule], dtype=np.int64),
        amount=ints(actions, "amount"),
        payout=ints(actions, "payout"),
        state=np.array([STATE_CODES[s] for s in actions["state"]], dtype=np.int8),
        mod_count=ints(actions, "mod_count"),
        customer_status=objs(actions, "customer_status"),
        orig_amount=ints(actions, "orig_amount"),
        orig_payout=ints(actions, "orig_payout"),
        orig_customer_status=objs(actions, "orig_customer_status"),
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


def write_ledger(conn: Connection, ledger: Ledger) -> int:
    """Write every touched action and item back, sorted by key; return the number of actions."""
    w = np.flatnonzero(ledger.touched)
    order = w[np.argsort(ledger.ids[w], kind="stable")]
    rows = list(
        zip(
            ledger.amount[order].tolist(),
            ledger.payout[order].tolist(),
            STATE_NAMES[ledger.state[order]].tolist(),
            ledger.customer_status[order].tolist(),
            ledger.mod_count[order].tolist(),
            ledger.ids[order].tolist(),
            strict=True,
        )
    )
    cols = ("amount", "payout", "state", "customer_status", "mod_count")
    bulk_update(conn, "actions", ("id",), cols, rows)
    it = ledger.items
    s = np.flatnonzero(it.touched)
    if len(s):
        item_rows = [
            (
                int(it.quantity[i]),
                int(it.amount[i]),
                it.category[i],
                ledger.ids[it.action_pos[i]],
                it.sku[i],
            )
            for i in s
        ]
        item_rows.sort(key=lambda r: (r[3], r[4]))
        bulk_update(
            conn,
            "action_items",
            ("action_id", "sku"),
            ("quantity", "amount", "category"),
            item_rows,
        )
    return len(order)


def bulk_update(
    conn: Connection,
    table: str,
    keys: Sequence[str],
    cols: Sequence[str],
    rows: list[tuple[Any, ...]],
) -> None:
    """UPDATE many rows by key: sorted executemany on SQLite, COPY + UPDATE … FROM on PostgreSQL."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _pg_update(conn, table, keys, cols, rows)
        return
    sets = ", ".join(f"{c} = ?" for c in cols)
    where = " AND ".join(f"{k} = ?" for k in keys)
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cur.executemany(f"UPDATE {table} SET {sets} WHERE {where}", rows)
    cur.close()


def _pg_update(
    conn: Connection,
    table: str,
    keys: Sequence[str],
    cols: Sequence[str],
    rows: list[tuple[Any, ...]],
) -> None:
    raw = conn.connection.driver_connection
    names = [*cols, *keys]
    tmp = f"_upd_{table}"
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(
            f"CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {', '.join(names)} "
            f"FROM {table} WITH NO DATA"
        )
        with cur.copy(f"COPY {tmp} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(f"ANALYZE {tmp}")
        sets = ", ".join(f"{c} = u.{c}" for c in cols)
        where = " AND ".join(f"{table}.{k} = u.{k}" for k in keys)
        cur.execute(f"UPDATE {table} SET {sets} FROM {tmp} u WHERE {where}")
        cur.execute(f"DROP TABLE {tmp}")


def bulk_insert(
    conn: Connection, table: str, cols: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """INSERT many rows: executemany on SQLite, COPY on PostgreSQL."""
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(cols))
    cur = raw.cursor()
    cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)
    cur.close()


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
