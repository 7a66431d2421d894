"""Small-file benchmark: the per-file cost of the worker path, in one long-lived process.

Run with the project's venv, from anywhere:

    .venv/bin/python bench/small_files.py --json                       # temp SQLite file
    .venv/bin/python bench/small_files.py --json --rows 1 --files 300  # the fixed cost
    .venv/bin/python bench/small_files.py --json \
        --db postgresql://postgres@127.0.0.1:5432/returnsd_small       # PostgreSQL

What a daemon worker does for each file, without the channels and without interpreter start:
N files of R rows are spooled (`Spool.accept`), then one `Worker` drains the queue (claim →
parse → match → plan → apply → result → complete, one transaction per file). The ledger is one
campaign of N × R pending actions; every file names R actions no other file names (≈80 %
modifications, 20 % reversals), so every row applies. The JSON gives files/s and rows/s over
the drain, and the median time of each engine stage per file. The floor is the same number of
bare commits of one small transaction on the same database (what a file costs at the least).

Run as a script, bench/ comes first on sys.path and bench/ingest.py would shadow the `ingest`
package, so this script takes bench/ off the path before importing it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/ itself off the path (bench/ingest.py would shadow the package); the package comes from
# the venv's install (or PYTHONPATH, to time another checkout).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from sqlalchemy import text  # noqa: E402

from ingest import config  # noqa: E402
from ingest import tables as t  # noqa: E402
from ingest.spool import Spool  # noqa: E402
from ingest.store import prepare  # noqa: E402
from ingest.worker import Worker, process_file  # noqa: E402

CAMPAIGN, TRACKER = "small", 5101


def _bench_ingest() -> Any:
    """bench/ingest.py (for its scratch PostgreSQL database) under another name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_ingest", Path(__file__).with_name("ingest.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module
    spec.loader.exec_module(module)
    return module


def log(message: str) -> None:
    """Progress goes to stderr; stdout holds only the JSON."""
    print(message, file=sys.stderr, flush=True)


def settings_for(folder: Path, url: str) -> config.Settings:
    """One campaign with a 10 % sale tracker."""
    return config.from_dict(
        {
            "database_url": url,
            "spool_dir": "spool",
            "results_dir": "results",
            "log_level": "WARNING",
            "campaigns": [
                {
                    "id": CAMPAIGN,
                    "name": "Small Files",
                    "currency": "USD",
                    "timezone": "UTC",
                    "event_types": [
                        {
                            "id": TRACKER,
                            "name": "Sale",
                            "kind": "sale",
                            "payout": {"type": "percent", "value": "10"},
                            "locking": {"days": 27},
                        }
                    ],
                }
            ],
        },
        base_dir=folder,
    )


def load_ledger(store: Any, n: int) -> None:
    """`n` pending sales of yesterday, ids S0000000…"""
    at = datetime.now(UTC) - timedelta(days=1)
    lock = at + timedelta(days=28)
    rows = [
        {
            "id": f"S{i:07d}", "campaign_id": CAMPAIGN, "event_type_id": TRACKER,
            "order_id": f"O{i}", "partner_id": "P1", "event_at": at, "lock_at": lock,
            "currency": "USD", "amount": 10_000, "payout": 1_000, "customer_status": None,
            "state": "PENDING", "mod_count": 0, "orig_amount": 10_000, "orig_payout": 1_000,
            "orig_customer_status": None, "has_items": 0,
        }
        for i in range(n)
    ]  # fmt: skip
    with store.begin() as conn:
        for start in range(0, n, 50_000):
            conn.execute(t.actions.insert(), rows[start : start + 50_000])


def returns_csv(first: int, rows: int) -> bytes:
    """A file naming actions first … first+rows-1: one in five reversed, the rest modified."""
    lines = ["ActionId,Amount,Reason"]
    for i in range(first, first + rows):
        amount = "0" if i % 5 == 0 else f"{50 + i % 40}.{i % 100:02d}"
        lines.append(f"S{i:07d},{amount},{'CONS_FRAUD' if i % 5 == 0 else 'ITEM_RETURNED'}")
    return ("\n".join(lines) + "\n").encode()


def floor_commits(store: Any, n: int) -> float:
    """Seconds for `n` small committed transactions (one audit row each), the least per file."""
    started = time.perf_counter()
    for i in range(n):
        with store.begin() as conn:
            conn.execute(
                t.audit.insert(),
                {"action_id": f"S{i:07d}", "channel": "bench", "operation": "modify",
                 "old_state": "PENDING", "new_state": "PENDING", "old_amount": 0,
                 "new_amount": 0, "old_payout": 0, "new_payout": 0, "at": datetime.now(UTC)},
            )  # fmt: skip
    seconds = time.perf_counter() - started
    with store.begin() as conn:
        conn.execute(text("DELETE FROM audit WHERE channel = 'bench'"))
    return seconds


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Spool the files, drain them with one worker, and time it."""
    url = args.db or f"sqlite:///{folder / 'small.db'}"
    scratch = None
    if url.startswith(("postgresql://", "postgres://")):
        scratch = _bench_ingest().Postgres(url)  # created here, refused if not the bench's
        scratch.create()
    settings = settings_for(folder, url)
    store = prepare(settings)
    try:
        load_ledger(store, args.files * args.rows)
        spool = Spool(settings, store)
        for k in range(args.files):
            spool.accept(
                CAMPAIGN, "bench", f"returns_{k}.csv", returns_csv(k * args.rows, args.rows)
            )
        log(f"spooled {args.files} files of {args.rows} rows ({os.getloadavg()[0]:.1f} load)")
        worker = Worker(settings, store)
        stages: dict[str, list[float]] = {}
        cpu, started = time.process_time(), time.perf_counter()
        while (rec := worker.claim()) is not None:
            summary = process_file(store, settings, rec)
            if "error" in summary or summary["counts"]["applied"] != args.rows:
                raise SystemExit(f"bench: file {rec.id} did not apply every row: {summary}")
            for name, secs in summary["timings"].items():
                stages.setdefault(name, []).append(secs)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        floor = floor_commits(store, args.files)
        return {
            "db": store.dialect,
            "files": args.files,
            "rows_per_file": args.rows,
            "seconds": round(seconds, 3),
            "files_per_s": round(args.files / seconds, 1),
            "rows_per_s": round(args.files * args.rows / seconds),
            "ms_per_file": round(1000 * seconds / args.files, 2),
            "cpu_ms_per_file": round(1000 * cpu / args.files, 2),
            "stage_ms_median": {
                k: round(1000 * statistics.median(v), 2) for k, v in stages.items()
            },
            "floor_commit_ms_per_file": round(1000 * floor / args.files, 2),
            "load": round(os.getloadavg()[0], 1),
        }
    finally:
        store.dispose()
        if scratch is not None:
            scratch.drop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--rows", type=int, default=1000, help="rows per file")
    p.add_argument("--db", help="database URL (default: a temp SQLite file); a PostgreSQL "
                   "database is created by the bench and dropped at the end")  # fmt: skip
    p.add_argument("--json", action="store_true", help="compact JSON on stdout")
    args = p.parse_args(argv)
    logging.getLogger("returnsd").setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="returnsd-small-"))
    try:
        result = run(args, folder)
        print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
