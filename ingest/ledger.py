"""Bulk ledger I/O: load the slice of actions a file touches, write it back sorted by key."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
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
    Missing ones come back as None (and `write_ledger` leaves them alone).
    """
    skip: tuple[str, ...] = () if len(order_ids) else ORDER_COLUMNS
    skip += () if resets else RESET_COLUMNS
    skip += () if statuses or resets else ("customer_status",)
    skip += () if currencies else ("currency",)
    names = [c for c in ACTION_COLUMNS if c not in skip]
    p = "?" if conn.dialect.name == "sqlite" else "%s"
    locked = f"CASE WHEN lock_at <= {p} THEN 1 ELSE 0 END AS locked"
    # States come back as their codes (small ints: no string per row to build).
    state = "CASE state " + " ".join(f"WHEN '{n}' THEN {c}" for n, c in STATE_CODES.items())
    select_list = ", ".join(f"{state} END AS state" if c == "state" else c for c in names)
    base = f"SELECT {select_list}, {locked} FROM actions WHERE campaign_id = {p}"
    now_p = ts_param(conn, now)
    raw: Any = conn.connection.driver_connection
    cur = raw.cursor()  # plain tuples: no Row overhead
    rows: list[Any] = []
    scan = len(action_ids) + len(order_ids) >= FULL_SCAN_AT
    if scan:
        cur.execute(base, (now_p, campaign_id))
        rows = cur.fetchall()
    else:
        for column, keys in (("id", action_ids), ("order_id", order_ids)):
            for chunk in _chunks(sorted(set(keys.tolist())), CHUNK):
                marks = ", ".join([p] * len(chunk))
                cur.execute(f"{base} AND {column} IN ({marks})", (now_p, campaign_id, *chunk))
                rows.extend(cur.fetchall())
    cur.close()
    frame = _frame(rows, [*names, "locked"])
    for column in ("customer_status", "currency"):
        if column not in frame:
            frame[column] = pd.Series([None] * len(frame), dtype=object)
    for original, current in zip(
        RESET_COLUMNS, ("amount", "payout", "customer_status"), strict=True
    ):
        if original not in frame:
            frame[original] = frame[current]
    return frame if scan else frame.drop_duplicates("id")


def _frame(rows: list[tuple[Any, ...]], names: list[str]) -> pd.DataFrame:
    """Rows to a frame column by column (much faster than pandas' generic row path)."""
    if not rows:
        return pd.DataFrame(
            {n: pd.Series(dtype=np.int64 if n in INT_COLUMNS else object) for n in names}
        )
    columns = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            name: np.array(col, dtype=np.int64 if name in INT_COLUMNS else object)
            for name, col in zip(names, columns, strict=True)
        },
        copy=False,
    )


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
    actions: pd.DataFrame,
    items: pd.DataFrame,
    rules: dict[int, EventTypeRule],
    *,
    status_known: bool = True,
) -> Ledger:
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

    return Ledger(
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


Columns = dict[str, Any]  # column name → numpy array (one value per row) or one scalar for all
BATCH = 50_000


def id_order(ledger: Ledger) -> np.ndarray:
    """Positions of the ledger's actions sorted by id (arrow's sort: fast on 1M strings)."""
    if ledger.order is None:
        ids = pa.array(ledger.ids, type=pa.string())
        ledger.order = np.asarray(pc.sort_indices(ids), dtype=np.int64)
    return ledger.order


def write_ledger(conn: Connection, ledger: Ledger) -> int:
    """Write every touched action and item back, sorted by key; return the number of actions."""
    order = id_order(ledger)
    order = order[ledger.touched[order]]
    columns = {
        "amount": ledger.amount[order],
        "payout": ledger.payout[order],
        "state": STATE_NAMES[ledger.state[order]],
        "customer_status": ledger.customer_status[order],
        "mod_count": ledger.mod_count[order],
        "id": ledger.ids[order],
    }
    if not ledger.status_known:  # not read, so not written either
        del columns["customer_status"]
    bulk_update(conn, "actions", ("id",), columns)
    it = ledger.items
    s = np.flatnonzero(it.touched)
    if len(s):
        keys = sorted(s.tolist(), key=lambda i: (ledger.ids[it.action_pos[i]], it.sku[i]))
        s = np.array(keys, dtype=np.int64)
        item_columns = {
            "quantity": it.quantity[s],
            "amount": it.amount[s],
            "category": it.category[s],
            "action_id": ledger.ids[it.action_pos[s]],
            "sku": it.sku[s],
        }
        bulk_update(conn, "action_items", ("action_id", "sku"), item_columns)
    return len(order)


def _length(columns: Columns) -> int:
    return max((len(v) for v in columns.values() if isinstance(v, np.ndarray)), default=0)


def _batches(columns: Columns) -> Iterator[list[tuple[Any, ...]]]:
    """Rows as tuples, BATCH at a time (bounded memory)."""
    n = _length(columns)
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        parts = [
            v[start:stop].tolist() if isinstance(v, np.ndarray) else repeat(v, stop - start)
            for v in columns.values()
        ]
        yield list(zip(*parts, strict=False))


def _csv_batches(columns: Columns) -> Iterator[bytes]:
    """Rows as CSV (no header) for PostgreSQL's COPY, BATCH at a time; None → NULL."""
    n = _length(columns)
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        arrays = [
            _arrow(v[start:stop] if isinstance(v, np.ndarray) else v, stop - start)
            for v in columns.values()
        ]
        table = pa.Table.from_arrays(arrays, names=list(columns))
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
        yield sink.getvalue().to_pybytes()


def _arrow(values: Any, n: int) -> pa.Array:
    if not isinstance(values, np.ndarray):
        text = (
            None
            if values is None
            else (values.isoformat() if isinstance(values, datetime) else str(values))
        )
        return pa.array([text] * n, type=pa.string())
    if values.dtype.kind in "iub":
        return pa.array(values)
    return pa.array(values, type=pa.string(), from_pandas=True)


def bulk_update(conn: Connection, table: str, keys: Sequence[str], columns: Columns) -> None:
    """UPDATE many rows by key: sorted executemany on SQLite, COPY + UPDATE … FROM on PostgreSQL.

    `columns` holds the new values, then the key columns last.
    """
    if not _length(columns):
        return
    cols = [c for c in columns if c not in keys]
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        _pg_update(raw, table, keys, cols, columns)
        return
    sets = ", ".join(f"{c} = ?" for c in cols)
    where = " AND ".join(f"{k} = ?" for k in keys)
    cur = raw.cursor()
    for rows in _batches(columns):
        cur.executemany(f"UPDATE {table} SET {sets} WHERE {where}", rows)
    cur.close()


def _pg_update(
    raw: Any, table: str, keys: Sequence[str], cols: list[str], columns: Columns
) -> None:
    names = list(columns)
    tmp = f"_upd_{table}"
    with raw.cursor() as cur:
        cur.execute(
            f"CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {', '.join(names)} "
            f"FROM {table} WITH NO DATA"
        )
        with cur.copy(f"COPY {tmp} ({', '.join(names)}) FROM STDIN (FORMAT csv)") as copy:
            for chunk in _csv_batches(columns):
                copy.write(chunk)
        cur.execute(f"ANALYZE {tmp}")
        sets = ", ".join(f"{c} = u.{c}" for c in cols)
        where = " AND ".join(f"{table}.{k} = u.{k}" for k in keys)
        cur.execute(f"UPDATE {table} SET {sets} FROM {tmp} u WHERE {where}")
        cur.execute(f"DROP TABLE {tmp}")


def bulk_insert(conn: Connection, table: str, columns: Columns) -> None:
    """INSERT many rows: batched executemany on SQLite, CSV COPY on PostgreSQL."""
    if not _length(columns):
        return
    raw: Any = conn.connection.driver_connection
    names = ", ".join(columns)
    if conn.dialect.name == "postgresql":
        with (
            raw.cursor() as cur,
            cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv)") as copy,
        ):
            for chunk in _csv_batches(columns):
                copy.write(chunk)
        return
    marks = ", ".join("?" * len(columns))
    cur = raw.cursor()
    for rows in _batches(columns):
        cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
    cur.close()


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
