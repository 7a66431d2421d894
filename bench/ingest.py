"""End-to-end ingest benchmark: `returnsd ingest` of an N-row returns CSV against its floor.

Run with the project's venv, from anywhere:

    .venv/bin/python bench/ingest.py --rows 1000000 --json
    .venv/bin/python bench/ingest.py --rows 1000000 --db postgresql://postgres@127.0.0.1/returnsd_bench

Steps: write a config and an N-action ledger (bulk-loaded straight into `actions`, schema from
`returnsd db upgrade`), write an N-row returns CSV (≈70 % modifications, ≈30 % reversals, each
action once, random order), time `returnsd --config CFG ingest FILE --campaign C --json` as a
subprocess (wall time, peak RSS), reload the ledger, then time the floor: a pyarrow parse of the
same file plus one key-sorted bulk write of the same updates and audit rows (see bench/README.md).

This file must not import the `ingest` package: run as a script, its own folder comes first on
sys.path and `import ingest` would find this module. It drives returnsd through its CLI only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN = "1000"
SALE, LEAD = 4636, 4637
PERCENT_E4 = 80_000  # the sale tracker pays 8 % (percent × 10,000)
LEAD_CENTS = 1_200  # the lead tracker pays a fixed 12.00
LOCK_DAYS = 27
LEAD_SHARE, REVERSE_SHARE = 0.2, 0.3
MOD_REASONS = ("ITEM_RETURNED", "ORDER_UPDATE", "ITEM_OUT_OF_STOCK")
REV_REASONS = ("CONS_FRAUD", "ITEM_RETURNED", "REJECTED")
PG_MARK = "returnsd bench scratch database"
ACTION_COLUMNS = (
    "id", "campaign_id", "event_type_id", "order_id", "partner_id", "event_at", "lock_at",
    "currency", "amount", "payout", "customer_status", "state", "mod_count", "orig_amount",
    "orig_payout", "orig_customer_status", "has_items",
)  # fmt: skip
AUDIT_COLUMNS = (
    "action_id", "file_id", "line", "channel", "actor", "reason", "operation", "old_state",
    "new_state", "old_amount", "new_amount", "old_payout", "new_payout", "at",
)  # fmt: skip
SQLITE_PRAGMAS = (  # what ingest/store.py sets on every engine connection
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=60000",
    "PRAGMA cache_size=-200000",
    "PRAGMA temp_store=MEMORY",
)

I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

_started = time.perf_counter()


def log(message: str) -> None:
    """Progress and details go to stderr, so stdout holds only the JSON result."""
    print(f"[{time.perf_counter() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


def load_note() -> str:
    """The 1-minute load average against the CPU count: other work skews every wall time."""
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


# --- data -----------------------------------------------------------------------------------


@dataclass
class Ledger:
    """The generated actions, in generation (insert) order."""

    ids: list[str]
    tracker: I64
    amount: I64
    payout: I64
    event_at: npt.NDArray[np.datetime64]
    lock_at: npt.NDArray[np.datetime64]
    by_key: I64 = field(init=False)  # positions sorted by id (bytewise: the primary-key order)

    def __post_init__(self) -> None:
        self.by_key = pc.sort_indices(pa.array(self.ids, pa.string())).to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Expected:
    """What the ledger must hold after the file is applied."""

    amount: int
    payout: int
    reversed: int


def payout_of(amount: I64, lead: Bools) -> I64:
    """Payout under the bench trackers: 8 % half-up for sales, 12.00 for leads."""
    return np.where(lead, LEAD_CENTS, (amount * PERCENT_E4 + 500_000) // 1_000_000)


def make_ledger(n: int, rng: np.random.Generator, now: datetime) -> Ledger:
    """N pending actions: 80 % sales, 20 % leads, events in the last 3 days (nothing locked)."""
    lead = rng.random(n) < LEAD_SHARE
    tracker = np.where(lead, LEAD, SALE).astype(np.int64)
    ids = [f"{CAMPAIGN}.{t}.{i}" for t, i in zip(tracker.tolist(), range(1, n + 1), strict=True)]
    amount = rng.integers(200, 50_001, n, dtype=np.int64)
    now_us = np.datetime64(now.replace(tzinfo=None), "us")
    event_at = now_us - rng.integers(60_000_000, 3 * 86_400_000_000, n).astype("timedelta64[us]")
    # lock rule {days: 27} in UTC: the lock moment is the end of (event date + 27 days)
    lock_at = (event_at.astype("datetime64[D]") + np.timedelta64(LOCK_DAYS + 1, "D")).astype(
        "datetime64[us]"
    )
    return Ledger(ids, tracker, amount, payout_of(amount, lead), event_at, lock_at)


def make_returns(ledger: Ledger, rng: np.random.Generator, path: Path) -> Expected:
    """Write the returns CSV (each action once, random order); return the expected totals."""
    n = len(ledger)
    order = rng.permutation(n)
    rev = rng.random(n) < REVERSE_SHARE
    new_amount = np.where(rev, 0, rng.integers(1, ledger.amount[order]))  # always a change
    reasons = np.where(rev, rng.choice(REV_REASONS, n), rng.choice(MOD_REASONS, n)).tolist()
    ids = [ledger.ids[i] for i in order.tolist()]
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("ActionId,Amount,Reason\n")
        f.writelines(
            f"{i},{a // 100}.{a % 100:02d},{r}\n"
            for i, a, r in zip(ids, new_amount.tolist(), reasons, strict=True)
        )
    lead = ledger.tracker[order] == LEAD
    payout = np.where(rev, 0, payout_of(new_amount, lead))
    return Expected(int(new_amount.sum()), int(payout.sum()), int(rev.sum()))


def action_table(ledger: Ledger, postgres: bool) -> pa.Table:
    """The ledger as an arrow table with the `actions` columns, timestamps as the DB stores them.

    SQLite: SQLAlchemy's DateTime text, naive UTC 'YYYY-MM-DD HH:MM:SS.ffffff'. PostgreSQL:
    the same text with '+00' (timestamptz).
    """
    n = len(ledger)

    def stamp(values: npt.NDArray[np.datetime64]) -> pa.Array:
        text = pc.strftime(pa.array(values, pa.timestamp("us")), format="%Y-%m-%d %H:%M:%S")
        return pc.binary_join_element_wise(text, pa.scalar("+00"), "") if postgres else text

    def const(value: Any, type_: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, type_), n)

    numbers = range(1, n + 1)
    columns = {
        "id": pa.array(ledger.ids, pa.string()),
        "campaign_id": const(CAMPAIGN, pa.string()),
        "event_type_id": pa.array(ledger.tracker),
        "order_id": pa.array([f"ORD-{i}" for i in numbers], pa.string()),
        "partner_id": pa.array([f"P{i % 997}" for i in numbers], pa.string()),
        "event_at": stamp(ledger.event_at),
        "lock_at": stamp(ledger.lock_at),
        "currency": const("USD", pa.string()),
        "amount": pa.array(ledger.amount),
        "payout": pa.array(ledger.payout),
        "customer_status": pa.nulls(n, pa.string()),
        "state": const("PENDING", pa.string()),
        "mod_count": const(0, pa.int64()),
        "orig_amount": pa.array(ledger.amount),
        "orig_payout": pa.array(ledger.payout),
        "orig_customer_status": pa.nulls(n, pa.string()),
        "has_items": const(0, pa.int64()),
    }
    return pa.table(columns)


def csv_bytes(table: pa.Table) -> bytes:
    """Headerless CSV for PostgreSQL's COPY … (FORMAT csv): nulls as unquoted empty fields."""
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue()


# --- databases --------------------------------------------------------------------------------


class Database:
    """Where the ledger lives: load/restore it, check it, and run the floor against it."""

    kind = ""

    def __init__(self, url: str) -> None:
        self.url = url

    def create(self) -> None:
        """Make an empty database (refuse to clobber one the bench did not create)."""

    def drop(self) -> None:
        """Remove what `create` made."""

    def load(self, ledger: Ledger) -> None:
        """Empty files/results/audit/actions and bulk-load the ledger, ready for a timed run."""
        raise NotImplementedError

    def totals(self) -> tuple[int, int, int, int]:
        """(sum amount, sum payout, reversed actions, audit rows)."""
        raise NotImplementedError

    def floor_write(self, upd: pa.Table, audit: pa.Table) -> dict[str, float]:
        """One transaction: the key-sorted updates, then the audit rows; return step timings."""
        raise NotImplementedError

    def floor_staged(self, upd: pa.Table, audit: pa.Table) -> dict[str, float]:
        """One transaction: one staging table, UPDATE … FROM it, INSERT INTO audit … SELECT."""
        raise NotImplementedError


STAGED_AUDIT = {  # audit column ← staging column or per-file constant (a SQL literal)
    "action_id": "s.id", "line": "s.line", "reason": "s.reason", "operation": "s.operation",
    "old_state": "s.old_state", "new_state": "s.state", "old_amount": "s.old_amount",
    "new_amount": "s.amount", "old_payout": "s.old_payout", "new_payout": "s.payout",
}  # fmt: skip
STAGE_COLUMNS = (
    "id", "amount", "payout", "state", "line", "reason", "operation", "old_state", "old_amount",
    "old_payout",
)  # fmt: skip


def literal(value: Any) -> str:
    """A constant as an SQL literal (text quoted, NULL for None)."""
    if value is None:
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def staged_parts(upd: pa.Table, audit: pa.Table) -> tuple[pa.Table, str, str]:
    """The staging table's rows, the UPDATE and the INSERT … SELECT (constants as literals)."""
    stage = pa.table({
        **{c: upd[c] for c in upd.column_names},
        **{c: audit[c] for c in ("line", "reason", "operation", "old_state", "old_amount",
                                  "old_payout")},
    })  # fmt: skip
    consts = {c: literal(audit[c][0].as_py()) for c in ("file_id", "channel", "actor", "at")}
    picks = {**STAGED_AUDIT, **consts}
    update = (
        "UPDATE actions SET amount = s.amount, payout = s.payout, state = s.state "
        "FROM _floor s WHERE actions.id = s.id"
    )
    insert = (
        f"INSERT INTO audit ({', '.join(picks)}) SELECT {', '.join(picks.values())} "
        "FROM _floor s ORDER BY s.seq"
    )
    return stage.select(list(STAGE_COLUMNS)), update, insert


class Sqlite(Database):
    """A SQLite file with the engine's pragmas (WAL, synchronous=NORMAL, 200 MB cache)."""

    kind = "sqlite"

    def __init__(self, url: str, default: Path) -> None:
        path = Path(url.removeprefix("sqlite:///")).expanduser().resolve() if url else default
        super().__init__("sqlite:///" + str(path))
        self.path = path

    def create(self) -> None:
        if self.path.exists() and self.path.stat().st_size:
            raise SystemExit(f"bench: {self.path} exists; give a new path (the bench fills it)")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma)
            yield conn
        finally:
            conn.close()

    def load(self, ledger: Ledger) -> None:
        table = action_table(ledger, postgres=False)
        marks = ", ".join("?" * len(ACTION_COLUMNS))
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            for name in ("results", "file_hashes", "files", "audit", "actions"):
                conn.execute(f"DELETE FROM {name}")
            for batch in table.to_batches(max_chunksize=100_000):  # bounded bench memory
                rows = zip(*(batch.column(c).to_pylist() for c in ACTION_COLUMNS), strict=True)
                conn.executemany(
                    f"INSERT INTO actions ({', '.join(ACTION_COLUMNS)}) VALUES ({marks})", rows
                )
            conn.execute("COMMIT")  # no ANALYZE: returnsd never runs it, so no stats in real life
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def totals(self) -> tuple[int, int, int, int]:
        with self.connect() as conn:
            a, p, r = conn.execute(
                "SELECT sum(amount), sum(payout), sum(state = 'REVERSED') FROM actions"
            ).fetchone()
            (audit,) = conn.execute("SELECT count(*) FROM audit").fetchone()
        return int(a), int(p), int(r), int(audit)

    def floor_write(self, upd: pa.Table, audit: pa.Table) -> dict[str, float]:
        t0 = time.perf_counter()
        updates = list(zip(*(upd.column(c).to_pylist() for c in upd.column_names), strict=True))
        audit_rows = list(
            zip(*(audit.column(c).to_pylist() for c in audit.column_names), strict=True)
        )
        t1 = time.perf_counter()
        sets = ", ".join(f"{c} = ?" for c in upd.column_names[1:])
        marks = ", ".join("?" * audit.num_columns)
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"UPDATE actions SET {sets} WHERE id = ?",
                ((*row[1:], row[0]) for row in updates),
            )
            t2 = time.perf_counter()
            conn.executemany(
                f"INSERT INTO audit ({', '.join(audit.column_names)}) VALUES ({marks})",
                audit_rows,
            )
            t3 = time.perf_counter()
            conn.execute("COMMIT")
        t4 = time.perf_counter()
        return {"to_tuples": t1 - t0, "update": t2 - t1, "audit": t3 - t2, "commit": t4 - t3}

    def floor_staged(self, upd: pa.Table, audit: pa.Table) -> dict[str, float]:
        t0 = time.perf_counter()
        stage, update, insert = staged_parts(upd, audit)
        columns = [stage.column(c).to_pylist() for c in stage.column_names]
        rows = list(zip(range(stage.num_rows), *columns, strict=True))
        t1 = time.perf_counter()
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"CREATE TEMP TABLE _floor (seq, {', '.join(stage.column_names)})")
            marks = ", ".join("?" * (stage.num_columns + 1))
            conn.executemany(f"INSERT INTO _floor VALUES ({marks})", rows)
            conn.execute(update)
            t2 = time.perf_counter()
            conn.execute(insert)
            conn.execute("DROP TABLE _floor")
            t3 = time.perf_counter()
            conn.execute("COMMIT")
        t4 = time.perf_counter()
        return {"to_tuples": t1 - t0, "stage_update": t2 - t1, "audit": t3 - t2, "commit": t4 - t3}


class Postgres(Database):
    """A PostgreSQL database the bench creates (marked by a comment) and drops afterwards."""

    kind = "postgresql"

    def __init__(self, url: str) -> None:
        url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        url = url.replace("postgres://", "postgresql://", 1)
        super().__init__(url)
        parts = urlsplit(url)
        self.name = parts.path.lstrip("/")
        if not self.name or not self.name.replace("_", "").isalnum():
            raise SystemExit(f"bench: give a database name of letters, digits and _: {url}")
        self.admin_url = urlunsplit(parts._replace(path="/postgres"))

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True)

    def create(self) -> None:
        with self._admin() as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (self.name,),
            ).fetchone()
            if row is not None and row[0] != PG_MARK:
                raise SystemExit(
                    f"bench: database {self.name} exists and was not made by the bench; "
                    "choose another name"
                )
            if row is not None:
                conn.execute(f'DROP DATABASE "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
            conn.execute(f"COMMENT ON DATABASE \"{self.name}\" IS '{PG_MARK}'")

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url)

    def load(self, ledger: Ledger) -> None:
        data = csv_bytes(action_table(ledger, postgres=True))
        with self.connect() as conn:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("TRUNCATE results, file_hashes, files, audit, actions")
                sql = f"COPY actions ({', '.join(ACTION_COLUMNS)}) FROM STDIN (FORMAT csv)"
                with cur.copy(sql) as copy:
                    copy.write(data)
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE actions")
            conn.execute("VACUUM ANALYZE audit")
            conn.execute("CHECKPOINT")  # both timed runs start with a clean WAL

    def totals(self) -> tuple[int, int, int, int]:
        with self.connect() as conn:
            a, p, r = conn.execute(
                "SELECT sum(amount), sum(payout), count(*) FILTER (WHERE state = 'REVERSED') "
                "FROM actions"
            ).fetchone()
            (audit,) = conn.execute("SELECT count(*) FROM audit").fetchone()
        return int(a), int(p), int(r), int(audit)

    def floor_write(self, upd: pa.Table, audit: pa.Table) -> dict[str, float]:
        t0 = time.perf_counter()
        upd_csv, audit_csv = csv_bytes(upd), csv_bytes(audit)
        t1 = time.perf_counter()
        cols = upd.column_names
        sets = ", ".join(f"{c} = u.{c}" for c in cols[1:])
        with self.connect() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE _floor (id text, amount bigint, payout bigint, state text) "
                "ON COMMIT DROP"
            )
            with cur.copy(f"COPY _floor ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(upd_csv)
            cur.execute("ANALYZE _floor")
            cur.execute(f"UPDATE actions a SET {sets} FROM _floor u WHERE a.id = u.id")
            t2 = time.perf_counter()
            sql = f"COPY audit ({', '.join(audit.column_names)}) FROM STDIN (FORMAT csv)"
            with cur.copy(sql) as copy:
                copy.write(audit_csv)
            t3 = time.perf_counter()
        t4 = time.perf_counter()
        return {"to_csv": t1 - t0, "update": t2 - t1, "audit": t3 - t2, "commit": t4 - t3}

    def floor_staged(self, upd: pa.Table, audit: pa.Table) -> dict[str, float]:
        t0 = time.perf_counter()
        stage, update, insert = staged_parts(upd, audit)
        stage = stage.add_column(0, "seq", pa.array(np.arange(stage.num_rows, dtype=np.int64)))
        data = csv_bytes(stage)
        t1 = time.perf_counter()
        types = ("bigint", "text", "bigint", "bigint", "text", "bigint", "text", "text", "text",
                 "bigint", "bigint")  # fmt: skip
        cols = ", ".join(f"{c} {ty}" for c, ty in zip(stage.column_names, types, strict=True))
        work_mem = max(64, stage.num_rows // 4_000)  # the engine's setting for a large file
        with self.connect() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE _floor ({cols}) ON COMMIT DROP")
            with cur.copy(
                f"COPY _floor ({', '.join(stage.column_names)}) FROM STDIN (FORMAT csv)"
            ) as copy:
                copy.write(data)
            cur.execute("ANALYZE _floor")
            cur.execute(f"SET LOCAL work_mem = '{min(512, work_mem)}MB'")
            cur.execute(update)
            t2 = time.perf_counter()
            cur.execute(insert)
            t3 = time.perf_counter()
        t4 = time.perf_counter()
        return {"to_csv": t1 - t0, "stage_update": t2 - t1, "audit": t3 - t2, "commit": t4 - t3}


def open_database(url: str | None, folder: Path) -> Database:
    """The database named by --db (default: a SQLite file in the temp folder)."""
    if not url or url.startswith("sqlite:"):
        return Sqlite(url or "", folder / "bench.db")
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return Postgres(url)
    raise SystemExit(f"bench: unsupported --db {url!r} (sqlite:///PATH or postgresql://…)")


# --- the real path and the floor --------------------------------------------------------------


def write_config(folder: Path, db: Database, rows: int, file_bytes: int) -> Path:
    """config.yaml (JSON is YAML): one campaign, a percent sale and a fixed lead tracker."""
    lock = {"days": LOCK_DAYS}
    config = {
        "database_url": db.url,
        "spool_dir": "spool",
        "results_dir": "results",
        "log_level": "WARNING",
        "limits": {
            "max_file_bytes": max(file_bytes * 2, 200 << 20),
            "max_rows": max(rows, 2_000_000),
            "max_uncompressed_bytes": max(file_bytes * 4, 1 << 30),
        },
        "campaigns": [
            {
                "id": CAMPAIGN,
                "name": "Bench Outfitters",
                "currency": "USD",
                "timezone": "UTC",
                "event_types": [
                    {
                        "id": SALE,
                        "name": "Online Sale",
                        "kind": "sale",
                        "payout": {"type": "percent", "value": "8"},
                        "locking": lock,
                    },
                    {
                        "id": LEAD,
                        "name": "Newsletter Lead",
                        "kind": "lead",
                        "payout": {"type": "fixed", "value": "12.00"},
                        "locking": lock,
                    },
                ],
            }
        ],
    }
    path = folder / "config.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def child_env() -> dict[str, str]:
    """The environment for returnsd: no variable may redirect it to another database."""
    env = dict(os.environ)
    for name in ("RETURNSD_DATABASE_URL", "RETURNSD_CONFIG"):
        env.pop(name, None)
    return env


def returnsd_bin() -> Path:
    """The venv's `returnsd` entry point."""
    here = Path(sys.executable).parent / "returnsd"
    return here if here.exists() else ROOT / ".venv" / "bin" / "returnsd"


@dataclass(frozen=True)
class Run:
    """One finished child process: wall seconds, peak RSS, exit code and output."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    code: int
    stdout: str
    stderr: str


TIME = Path("/usr/bin/time")


def run_child(argv: Sequence[str], cwd: Path) -> Run:
    """Run a command; its own peak RSS comes from GNU time (the child alone).

    `wait4` from this process would not do: a child's `ru_maxrss` starts from the parent's at
    fork, so a child of a 1.5 GB bench reports ≥ 1.5 GB even for `/bin/true`. GNU time is a
    small process started before the command, so what it reports is the command's own peak.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".time") as peak:  # fmt: skip
        wrapped = [str(TIME), "-f", "%M", "-o", peak.name, *argv] if TIME.exists() else argv
        started = time.perf_counter()
        proc = subprocess.Popen(wrapped, cwd=cwd, env=child_env(), stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        lines = [ln for ln in Path(peak.name).read_text().splitlines() if ln.strip().isdigit()]
        rss_kib = int(lines[-1]) if lines else usage.ru_maxrss  # KiB on Linux either way
        out.seek(0)
        err.seek(0)
        return Run(
            seconds,
            usage.ru_utime + usage.ru_stime,
            rss_kib / 1024,
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def ingest_argv(config: Path, returns: Path, profile: Path | None = None) -> list[str]:
    """`returnsd --config CFG ingest FILE --campaign C --json`, optionally under cProfile."""
    tail = ["--config", str(config), "ingest", str(returns), "--campaign", CAMPAIGN, "--json"]
    if profile is None:
        return [str(returnsd_bin()), *tail]
    return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "returnsd", *tail]


def real_run(config: Path, returns: Path, folder: Path, rows: int) -> tuple[Run, dict[str, Any]]:
    """Time the real path and check its JSON: COMPLETE with every row applied."""
    run = run_child(ingest_argv(config, returns), folder)
    try:
        doc = json.loads(run.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(run.stdout[-4000:] + run.stderr[-4000:])
        raise SystemExit(f"bench: returnsd ingest exited {run.code} without JSON") from None
    applied = (doc.get("counts") or {}).get("applied")
    if doc.get("status") != "COMPLETE" or applied != rows or run.code != 0:
        sys.stderr.write(json.dumps(doc, indent=2)[-4000:] + "\n" + run.stderr[-4000:])
        raise SystemExit(
            f"bench: ingest gave status {doc.get('status')}, applied {applied} of {rows} "
            f"(exit {run.code})"
        )
    return run, doc


def floor_run(
    db: Database, returns: Path, ledger: Ledger, file_id: str, *, classic: bool = False
) -> tuple[float, dict[str, float]]:
    """Parse with pyarrow, sort by key, compute the new values, write them in one transaction.

    The floor matches rows to the ledger by position after sorting both by key (each action
    appears once), so it does no database read: the ledger's current values are in memory.
    """
    keyed_ids = pa.array([ledger.ids[i] for i in ledger.by_key.tolist()], pa.string())
    old_amount, old_payout = ledger.amount[ledger.by_key], ledger.payout[ledger.by_key]
    lead = ledger.tracker[ledger.by_key] == LEAD
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    at = at + "+00" if db.kind == "postgresql" else at
    actor = os.environ.get("USER", "bench")

    t0 = time.perf_counter()
    table = pacsv.read_csv(
        returns,
        convert_options=pacsv.ConvertOptions(
            column_types={
                "ActionId": pa.string(),
                "Amount": pa.decimal128(12, 2),
                "Reason": pa.string(),
            }
        ),
    )
    t1 = time.perf_counter()
    line = pa.array(np.arange(2, table.num_rows + 2, dtype=np.int64))
    order = pc.sort_indices(table["ActionId"])
    ids = pc.take(table["ActionId"], order).combine_chunks()
    if len(ids) != len(keyed_ids) or not ids.equals(keyed_ids):
        raise SystemExit("bench: the returns file does not name every action exactly once")
    cents = pc.cast(pc.multiply(pc.take(table["Amount"], order), 100), pa.int64()).to_numpy()
    rev = cents == 0
    payout = np.where(rev, 0, payout_of(cents, lead))
    state = pa.array(np.where(rev, "REVERSED", "PENDING"), pa.string())
    n = len(ids)
    upd = pa.table({"id": ids, "amount": cents, "payout": payout, "state": state})
    audit = pa.table(
        {
            "action_id": ids,
            "file_id": pa.repeat(pa.scalar(file_id), n),
            "line": pc.take(line, order),
            "channel": pa.repeat(pa.scalar("cli"), n),
            "actor": pa.repeat(pa.scalar(actor), n),
            "reason": pc.take(table["Reason"], order).combine_chunks(),
            "operation": pa.array(np.where(rev, "reverse", "modify"), pa.string()),
            "old_state": pa.repeat(pa.scalar("PENDING"), n),
            "new_state": state,
            "old_amount": old_amount,
            "new_amount": cents,
            "old_payout": old_payout,
            "new_payout": payout,
            "at": pa.repeat(pa.scalar(at), n),
        }
    )
    t2 = time.perf_counter()
    steps = db.floor_write(upd, audit) if classic else db.floor_staged(upd, audit)
    t3 = time.perf_counter()
    return t3 - t0, {"parse": t1 - t0, "sort_compute": t2 - t1, **steps}


def check_totals(db: Database, expected: Expected, rows: int, what: str) -> None:
    """The ledger and audit after a run must match what the file asks for."""
    got = db.totals()
    want = (expected.amount, expected.payout, expected.reversed, rows)
    if got != want:
        raise SystemExit(
            f"bench: after the {what}, (amount, payout, reversed, audit) = {got}, expected {want}"
        )
    log(f"{what}: ledger totals and {rows:,} audit rows check out")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--rows", type=int, required=True, help="actions in the ledger = file rows")
    p.add_argument("--db", help="database URL (default: a temp SQLite file)")
    p.add_argument("--json", action="store_true", help="print only the compact JSON on stdout")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp folder (and database), reloaded and ready to re-run",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="afterwards, run the real path once more under cProfile into this file",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="time each side K times, report the best (min)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--floor",
        choices=("staged", "executemany"),
        default="staged",
        help="the floor's write: one staging table (default, the fastest found) or the older "
        "sorted executemany UPDATE + audit INSERT (SQLite) / COPY + UPDATE FROM + COPY (PG)",
    )
    args = p.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        p.error("--rows and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n: int = args.rows
    folder = Path(tempfile.mkdtemp(prefix="returnsd-bench-"))
    db = open_database(args.db, folder)
    created = False
    try:
        rng = np.random.default_rng(args.seed)
        log(f"folder {folder}; database {db.url}")
        ledger = make_ledger(n, rng, datetime.now(UTC))
        returns = folder / f"returns_{n}.csv"
        expected = make_returns(ledger, rng, returns)
        size = returns.stat().st_size
        log(f"generated {n:,} actions and {returns.name} ({size / 1e6:.1f} MB)")
        config = write_config(folder, db, n, size)
        db.create()
        created = True
        upgrade = run_child([str(returnsd_bin()), "--config", str(config), "db", "upgrade"], folder)
        if upgrade.code != 0:
            raise SystemExit(f"bench: returnsd db upgrade failed:\n{upgrade.stderr}")

        runs: list[Run] = []
        for k in range(args.repeat):
            db.load(ledger)
            log(
                f"loaded {n:,} actions; timing returnsd ingest ({k + 1}/{args.repeat}, "
                f"{load_note()}) …"
            )
            run, doc = real_run(config, returns, folder, n)
            log(
                f"real path: {run.seconds:.2f} s wall, {run.cpu_seconds:.2f} s CPU, peak RSS "
                f"{run.peak_rss_mb:.0f} MB; engine timings {doc.get('timings')}"
            )
            check_totals(db, expected, n, "real path")
            runs.append(run)
        floors: list[float] = []
        for k in range(args.repeat):
            db.load(ledger)
            log(f"ledger reloaded; timing the floor ({k + 1}/{args.repeat}, {load_note()}) …")
            cpu = time.process_time()
            classic = args.floor == "executemany"
            floor_seconds, steps = floor_run(db, returns, ledger, "bench-floor", classic=classic)
            cpu = time.process_time() - cpu
            detail = ", ".join(f"{name} {secs:.2f}" for name, secs in steps.items())
            log(f"floor: {floor_seconds:.2f} s wall, {cpu:.2f} s client CPU ({detail})")
            check_totals(db, expected, n, "floor")
            floors.append(floor_seconds)
        seconds, floor_seconds = min(r.seconds for r in runs), min(floors)
        peak_rss_mb = max(r.peak_rss_mb for r in runs)

        if args.keep or args.profile:
            db.load(ledger)
        if args.profile:
            log(f"profiling the real path into {args.profile} …")
            prof = run_child(ingest_argv(config, returns, args.profile.resolve()), folder)
            log(f"profiled run: {prof.seconds:.2f} s (exit {prof.code})")
            if args.keep:
                db.load(ledger)

        rows_per_s = n / seconds
        floor_rows_per_s = n / floor_seconds
        result = {
            "rows": n,
            "db": db.kind,
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows_per_s),
            "floor_seconds": round(floor_seconds, 3),
            "floor_rows_per_s": round(floor_rows_per_s),
            "ratio": round(rows_per_s / floor_rows_per_s, 3),
            "peak_rss_mb": round(peak_rss_mb, 1),
            "floor": args.floor,
        }
        print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)
        if args.keep:
            cmd = " ".join(ingest_argv(config, returns))
            log(f"kept {folder} (ledger reloaded); re-run with: cd {folder} && {cmd}")
        return 0
    finally:
        if not args.keep:
            if created:
                db.drop()
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
