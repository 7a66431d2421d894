"""What differs between SQLite and PostgreSQL, in one adapter the store chooses once.

Bulk paths go below SQLAlchemy to the driver (plain tuples, COPY): the parameter mark, the
timestamp form, the campaign write lock and the bulk insert/update are the only dialect branches,
and they live here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Table

Columns = dict[str, Any]  # column name → numpy array (one value per row) or one scalar for all
BATCH = 50_000


class SqlAdapter:
    """The SQLite flavour; `PostgresAdapter` overrides what PostgreSQL does differently."""

    name = "sqlite"
    mark = "?"  # the driver's parameter placeholder

    def ts(self, moment: datetime) -> Any:
        """A timestamp as the driver stores it (SQLite: naive UTC text)."""
        return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")

    def marks(self, n: int) -> str:
        """`n` parameter placeholders, comma-separated."""
        return ", ".join([self.mark] * n)

    lookup_chunk = 5_000  # keys per lookup query (SQLite allows 32,766 parameters)

    def keyed(self, scope: str, key: str, n: int, *, scope_leads: bool = False) -> str:
        """`scope = ? AND key IN (n marks)`, planned on the key's index, never on the scope's.

        Unless `scope_leads` (the key's index starts with the scope, as `ix_actions_order`
        does), the unary `+` makes `scope` unusable as an index term, so SQLite cannot choose
        an index that starts with the campaign and walk the whole campaign per query; it
        searches the key's index once per key instead.
        """
        plus = "" if scope_leads else "+"
        return f"{plus}{scope} = ? AND {key} IN ({self.marks(n)})"

    def key_params(self, scope: Any, keys: Sequence[Any]) -> tuple[Any, ...]:
        """The parameters of `keyed`."""
        return (scope, *keys)

    def campaign_lock(self, conn: Connection, campaign_id: str) -> None:
        """Serialise writers of one campaign's actions (SQLite's write lock already does)."""

    def update_many(
        self, conn: Connection, table: Table, keys: Sequence[str], columns: Columns
    ) -> None:
        """UPDATE many rows by key (sorted executemany); `columns` ends with the key columns."""
        if not length(columns):
            return
        _check(table, columns)
        cols = [c for c in columns if c not in keys]
        sets = ", ".join(f"{c} = ?" for c in cols)
        where = " AND ".join(f"{k} = ?" for k in keys)
        cur = _raw(conn).cursor()
        for rows in batches(columns):
            cur.executemany(f"UPDATE {table.name} SET {sets} WHERE {where}", rows)
        cur.close()

    def insert_many(self, conn: Connection, table: Table, columns: Columns) -> None:
        """INSERT many rows (batched executemany)."""
        if not length(columns):
            return
        _check(table, columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({self.marks(len(columns))})"
        cur = _raw(conn).cursor()
        for rows in batches(columns):
            cur.executemany(sql, rows)
        cur.close()


class PostgresAdapter(SqlAdapter):
    """PostgreSQL: aware timestamps, advisory locks, COPY."""

    name = "postgresql"
    mark = "%s"

    def ts(self, moment: datetime) -> Any:
        """A timestamp as the driver stores it (aware UTC)."""
        return moment.astimezone(UTC)

    lookup_chunk = 10_000  # one array parameter: fewer round trips

    def keyed(self, scope: str, key: str, n: int, *, scope_leads: bool = False) -> str:
        """`scope = %s AND key = ANY(%s)`: one array of keys, found by the key's index.

        Unless `scope_leads`, the scope is compared as an expression (`|| ''`), which no index
        matches: the planner cannot prefer a campaign index (and read the whole campaign)
        whatever its statistics say.
        """
        left = scope if scope_leads else f"({scope} || '')"
        return f"{left} = %s AND {key} = ANY(%s)"

    def key_params(self, scope: Any, keys: Sequence[Any]) -> tuple[Any, ...]:
        """The parameters of `keyed`: the keys as one array."""
        return (scope, list(keys))

    def campaign_lock(self, conn: Connection, campaign_id: str) -> None:
        """Serialise writers of one campaign's actions (transaction-scoped advisory lock)."""
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (campaign_id,))

    def update_many(
        self, conn: Connection, table: Table, keys: Sequence[str], columns: Columns
    ) -> None:
        """UPDATE many rows by key: COPY into a temporary table, then UPDATE … FROM."""
        if not length(columns):
            return
        _check(table, columns)
        names = list(columns)
        cols = [c for c in names if c not in keys]
        tmp = f"_upd_{table.name}"
        with _raw(conn).cursor() as cur:
            cur.execute(
                f"CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT {', '.join(names)} "
                f"FROM {table.name} WITH NO DATA"
            )
            with cur.copy(f"COPY {tmp} ({', '.join(names)}) FROM STDIN (FORMAT csv)") as copy:
                for chunk in csv_batches(columns):
                    copy.write(chunk)
            cur.execute(f"ANALYZE {tmp}")
            sets = ", ".join(f"{c} = u.{c}" for c in cols)
            where = " AND ".join(f"{table.name}.{k} = u.{k}" for k in keys)
            cur.execute(f"UPDATE {table.name} SET {sets} FROM {tmp} u WHERE {where}")
            cur.execute(f"DROP TABLE {tmp}")

    def insert_many(self, conn: Connection, table: Table, columns: Columns) -> None:
        """INSERT many rows with CSV COPY."""
        if not length(columns):
            return
        _check(table, columns)
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
        with _raw(conn).cursor() as cur, cur.copy(sql) as copy:
            for chunk in csv_batches(columns):
                copy.write(chunk)


ADAPTERS: dict[str, SqlAdapter] = {"sqlite": SqlAdapter(), "postgresql": PostgresAdapter()}


def adapter_for(dialect_name: str) -> SqlAdapter:
    """The adapter of a SQLAlchemy dialect name."""
    return ADAPTERS[dialect_name]


def _raw(conn: Connection) -> Any:
    return conn.connection.driver_connection


def _check(table: Table, columns: Columns) -> None:
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise KeyError(f"{table.name} has no column(s) {unknown}")


def length(columns: Columns) -> int:
    """Rows in a column set (its longest array)."""
    return max((len(v) for v in columns.values() if isinstance(v, np.ndarray)), default=0)


def batches(columns: Columns) -> Iterator[list[tuple[Any, ...]]]:
    """Rows as tuples, BATCH at a time (bounded memory)."""
    n = length(columns)
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        parts = [
            v[start:stop].tolist() if isinstance(v, np.ndarray) else repeat(v, stop - start)
            for v in columns.values()
        ]
        yield list(zip(*parts, strict=False))


def csv_batches(columns: Columns) -> Iterator[bytes]:
    """Rows as CSV (no header) for PostgreSQL's COPY, BATCH at a time; None → NULL."""
    n = length(columns)
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
