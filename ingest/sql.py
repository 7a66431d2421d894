"""What differs between SQLite and PostgreSQL, in one adapter the store chooses once.

Bulk paths go below SQLAlchemy to the driver (plain tuples, COPY): the parameter mark, the
timestamp form, the campaign write lock and the bulk insert/update are the only dialect branches,
and they live here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql

_PG_DIALECT: Any = postgresql.dialect()  # type: ignore[no-untyped-call]
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

    def apply_staged(self, conn: Connection, staged: Staged) -> None:
        """Fill one staging table, then UPDATE the target FROM it and INSERT the log FROM it.

        One pass of the rows into the database instead of two; the log's per-file constants
        are bound once per statement, not once per row. The staging table lives in the
        transaction's connection and is dropped before the commit.
        """
        if not length(staged.rows):
            return
        _check_staged(staged)
        with _cursor(conn) as cur:
            self.fill_stage(cur, staged)
            self.before_update(cur, length(staged.rows))
            cur.execute(self.staged_update(staged))
            self.after_update(cur)
            cur.execute(*self.staged_insert(staged))
            cur.execute(f"DROP TABLE {STAGE}")

    def fill_stage(self, cur: Any, staged: Staged) -> None:
        """CREATE the staging table and fill it (SQLite: sorted executemany, typeless columns)."""
        names = list(staged.rows)
        cur.execute(f"CREATE TEMP TABLE {STAGE} ({', '.join(names)})")
        sql = f"INSERT INTO {STAGE} VALUES ({self.marks(len(names))})"
        for rows in batches(staged.rows):
            cur.executemany(sql, rows)

    def before_update(self, cur: Any, n: int) -> None:
        """Session settings for the UPDATE (SQLite: none; its plan is fixed, see staged_update)."""

    def after_update(self, cur: Any) -> None:
        """Undo `before_update`."""

    def staged_update(self, staged: Staged) -> str:
        """UPDATE the target's rows named by the stage's `is_last` rows (SQLite: scan the stage,
        search the target's primary key per row: the join order of UPDATE … FROM)."""
        sets = ", ".join(f"{c} = s.{c}" for c in staged.sets)
        tgt, key = staged.target.name, staged.key
        return (
            f"UPDATE {tgt} SET {sets} FROM {STAGE} s "
            f"WHERE s.{LAST} = 1 AND {tgt}.{key} = s.{staged.stage_key}"
        )

    def staged_insert(self, staged: Staged) -> tuple[str, tuple[Any, ...]]:
        """INSERT … SELECT the log rows in stage order, constants as bound parameters."""
        cols = [*staged.logged, *staged.constants]
        picks = [*(f"s.{c}" for c in staged.logged), *(self.constant(staged.log, c)
                 for c in staged.constants)]  # fmt: skip
        sql = (
            f"INSERT INTO {staged.log.name} ({', '.join(cols)}) "
            f"SELECT {', '.join(picks)} FROM {STAGE} s ORDER BY s.{SEQ}"
        )
        return sql, tuple(staged.constants.values())

    def constant(self, table: Table, column: str) -> str:
        """A bound constant for `table.column` in a SELECT list."""
        return self.mark


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
            n = length(columns)
            for setting in self.join_settings(n):
                cur.execute(setting)
            cur.execute(self.update_from(table, keys, cols, tmp))
            for setting in self.JOIN_DEFAULTS:
                cur.execute(setting)
            cur.execute(f"DROP TABLE {tmp}")

    PK_JOIN_BELOW = 200_000  # rows: below this, an UPDATE … FROM walks the primary key
    JOIN_DEFAULTS = (
        "SET LOCAL enable_hashjoin = DEFAULT",
        "SET LOCAL enable_mergejoin = DEFAULT",
        "SET LOCAL work_mem = DEFAULT",
    )

    def join_settings(self, n: int) -> tuple[str, ...]:
        """Transaction-local planner settings for an `n`-row UPDATE … FROM a staging table.

        A few thousand rows against a ledger of millions: the planner's costs favour a hash
        join that reads the whole table (measured: a sequential scan of 3M actions for 25k
        rows), while the rows are far fewer than the table; probing the primary key per row
        is what follows the file. Many rows: a hash join over the staging table, given the
        memory to build it in one pass (the default 4 MB work_mem spills it to disk).
        """
        if n < self.PK_JOIN_BELOW:
            return ("SET LOCAL enable_hashjoin = off", "SET LOCAL enable_mergejoin = off")
        return (f"SET LOCAL work_mem = '{min(512, max(64, n // 4_000))}MB'",)

    def update_from(self, table: Table, keys: Sequence[str], cols: Sequence[str], tmp: str) -> str:
        """UPDATE `table` from the staging table `tmp` joined on `keys`."""
        sets = ", ".join(f"{c} = u.{c}" for c in cols)
        where = " AND ".join(f"{table.name}.{k} = u.{k}" for k in keys)
        return f"UPDATE {table.name} SET {sets} FROM {tmp} u WHERE {where}"

    def fill_stage(self, cur: Any, staged: Staged) -> None:
        """CREATE the staging table (typed from the arrays) and COPY the rows in; ANALYZE it."""
        types = ", ".join(
            f"{name} {'bigint' if _is_int(values) else 'text'}"
            for name, values in staged.rows.items()
        )
        cur.execute(f"CREATE TEMP TABLE {STAGE} ({types}) ON COMMIT DROP")
        with cur.copy(f"COPY {STAGE} ({', '.join(staged.rows)}) FROM STDIN (FORMAT csv)") as copy:
            for chunk in csv_batches(staged.rows):
                copy.write(chunk)
        cur.execute(f"ANALYZE {STAGE}")

    def before_update(self, cur: Any, n: int) -> None:
        """The join settings for an `n`-row stage (see `join_settings`)."""
        for setting in self.join_settings(n):
            cur.execute(setting)

    def after_update(self, cur: Any) -> None:
        """Back to the session's defaults."""
        for setting in self.JOIN_DEFAULTS:
            cur.execute(setting)

    def constant(self, table: Table, column: str) -> str:
        """A bound constant cast to the column's type (a bare parameter would be text)."""
        return f"CAST(%s AS {table.c[column].type.compile(dialect=_PG_DIALECT)})"

    def insert_many(self, conn: Connection, table: Table, columns: Columns) -> None:
        """INSERT many rows with CSV COPY."""
        if not length(columns):
            return
        _check(table, columns)
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
        with _raw(conn).cursor() as cur, cur.copy(sql) as copy:
            for chunk in csv_batches(columns):
                copy.write(chunk)


STAGE, LAST, SEQ = "_stage", "is_last", "seq"


@dataclass(frozen=True)
class Staged:
    """Rows for `SqlAdapter.apply_staged`: one staging table feeds an UPDATE and a log INSERT.

    `rows` holds one entry per log row, in log order, with `seq` (0…n-1) and `is_last` (1 on the
    one row per target key whose `sets` columns hold the key's final values, 0 elsewhere).
    `sets` are target columns updated from the stage columns of the same name; `logged` are
    stage columns copied into the log table; `constants` are the log's per-call values.
    """

    target: Table
    key: str
    stage_key: str
    sets: tuple[str, ...]
    log: Table
    logged: tuple[str, ...]
    rows: Columns
    constants: dict[str, Any]


def _check_staged(staged: Staged) -> None:
    missing = [c for c in (*staged.sets, *staged.logged, staged.stage_key, LAST, SEQ)
               if c not in staged.rows]  # fmt: skip
    if missing:
        raise KeyError(f"staged rows lack column(s) {missing}")
    _check(staged.target, {c: None for c in (*staged.sets, staged.key)})
    _check(staged.log, {c: None for c in (*staged.logged, *staged.constants)})


def _is_int(values: Any) -> bool:
    return isinstance(values, np.ndarray) and values.dtype.kind in "iub"


@contextmanager
def _cursor(conn: Connection) -> Iterator[Any]:
    cur = _raw(conn).cursor()
    try:
        yield cur
    finally:
        cur.close()


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
