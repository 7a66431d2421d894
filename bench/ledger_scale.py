"""Ledger-scale benchmark: does `returnsd ingest` cost follow the file, not the campaign?

Run with the project's venv, from anywhere:

    .venv/bin/python bench/ledger_scale.py --json                          # temp SQLite files
    .venv/bin/python bench/ledger_scale.py --json \
        --db postgresql://postgres@127.0.0.1:5432/returnsd_scale           # PostgreSQL

For each ledger size (default 100,000 and 3,000,000 actions, one campaign, each in its own
database), and each file size (default 1,000 and 25,000 rows), `returnsd ingest` runs on a file
naming that many distinct random actions of the campaign (≈70 % modifications, ≈30 % reversals).
Each repeat uses actions no earlier run touched, so the ledger is loaded once per size. Wall time
is the whole command (interpreter start included); peak RSS is the child's own, measured by GNU
`time` (a `wait4` from this process would report this process's peak too).

The JSON gives, per file size, the best seconds (the whole command, and the engine's own stages
parse … result) and the peak RSS at each ledger size, and the large/small ratios, next to the
target (time ratio ≤ 1.3: the cost follows the file). On a loaded machine the command's time is
mostly interpreter start and waiting for a CPU; the engine ratio is the steadier figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

TARGET_TIME_RATIO = 1.3


def _bench_ingest() -> ModuleType:
    """bench/ingest.py under another name (as `ingest` it would shadow the real package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_ingest", Path(__file__).with_name("ingest.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_ingest"] = module
    spec.loader.exec_module(module)
    return module


bi = _bench_ingest()


def write_file(ledger: Any, picks: np.ndarray, rng: np.random.Generator, path: Path) -> None:
    """A returns CSV naming the actions at `picks` (each once): modifications and reversals."""
    rev = rng.random(len(picks)) < bi.REVERSE_SHARE
    new_amount = np.where(rev, 0, rng.integers(1, ledger.amount[picks]))
    reasons = np.where(
        rev, rng.choice(bi.REV_REASONS, len(picks)), rng.choice(bi.MOD_REASONS, len(picks))
    ).tolist()
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.write("ActionId,Amount,Reason\n")
        f.writelines(
            f"{ledger.ids[i]},{a // 100}.{a % 100:02d},{r}\n"
            for i, a, r in zip(picks.tolist(), new_amount.tolist(), reasons, strict=True)
        )


def engine_seconds(doc: dict[str, Any]) -> float:
    """The engine's own time in a run (parse … result; `record` includes `result`)."""
    timings = doc.get("timings") or {}
    return float(sum(v for k, v in timings.items() if k != "record"))


def database_for(url: str | None, folder: Path, size: int) -> Any:
    """One database per ledger size: a SQLite file in the folder, or `<name>_<size>`."""
    if not url or url.startswith("sqlite:"):
        return bi.Sqlite("", folder / f"scale_{size}.db")
    return bi.Postgres(f"{url.rstrip('/')}_{size}")


def measure(
    args: argparse.Namespace, folder: Path, size: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Load a `size`-action ledger, then time every file size `repeat` times against it."""
    db = database_for(args.db, folder / str(size), size)
    work = folder / str(size)
    work.mkdir(parents=True, exist_ok=True)
    ledger = bi.make_ledger(size, rng, datetime.now(UTC))
    config = bi.write_config(work, db, max(args.files), 1 << 20)
    db.create()
    try:
        upgrade = bi.run_child(
            [str(bi.returnsd_bin()), "--config", str(config), "db", "upgrade"], work
        )
        if upgrade.code != 0:
            raise SystemExit(f"bench: returnsd db upgrade failed:\n{upgrade.stderr}")
        db.load(ledger)
        bi.log(f"loaded {size:,} actions into {db.url}")
        pool = rng.permutation(size)
        used = 0
        out = []
        for rows in args.files:
            runs = []
            for k in range(args.repeat):
                picks, used = pool[used : used + rows], used + rows
                if len(picks) < rows:
                    raise SystemExit("bench: the ledger is too small for these files and repeats")
                path = work / f"returns_{rows}_{k}.csv"
                write_file(ledger, picks, rng, path)
                run, doc = bi.real_run(config, path, work, rows)
                bi.log(
                    f"ledger {size:,}, file {rows:,} ({k + 1}/{args.repeat}, {bi.load_note()}): "
                    f"{run.seconds:.2f} s, peak RSS {run.peak_rss_mb:.0f} MB; {doc.get('timings')}"
                )
                runs.append((run, doc))
            best = min(runs, key=lambda r: r[0].seconds)
            out.append(
                {
                    "ledger": size,
                    "rows": rows,
                    "seconds": round(best[0].seconds, 3),
                    "engine_seconds": round(min(engine_seconds(d) for _, d in runs), 3),
                    "peak_rss_mb": round(max(r[0].peak_rss_mb for r in runs), 1),
                    "timings": best[1].get("timings"),
                }
            )
        return out
    finally:
        if not args.keep:
            db.drop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--db", help="database URL prefix (default: temp SQLite files)")
    p.add_argument("--ledgers", default="100000,3000000", help="ledger sizes, comma-separated")
    p.add_argument("--files", default="1000,25000", help="file sizes, comma-separated")
    p.add_argument("--repeat", type=int, default=3, help="runs per (ledger, file); best is kept")
    p.add_argument("--json", action="store_true", help="print only the compact JSON on stdout")
    p.add_argument("--keep", action="store_true", help="keep the temp folder and databases")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    args.ledgers = [int(x) for x in args.ledgers.split(",")]
    args.files = [int(x) for x in args.files.split(",")]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="returnsd-scale-"))
    rng = np.random.default_rng(args.seed)
    try:
        runs = [r for size in args.ledgers for r in measure(args, folder, size, rng)]
        small, large = min(args.ledgers), max(args.ledgers)
        by = {(r["ledger"], r["rows"]): r for r in runs}
        ratios = {
            str(rows): {
                "time_ratio": round(by[large, rows]["seconds"] / by[small, rows]["seconds"], 3),
                "engine_time_ratio": round(
                    by[large, rows]["engine_seconds"] / by[small, rows]["engine_seconds"], 3
                ),
                "rss_ratio": round(
                    by[large, rows]["peak_rss_mb"] / by[small, rows]["peak_rss_mb"], 3
                ),
            }
            for rows in args.files
        }
        result = {
            "db": "sqlite" if not args.db or args.db.startswith("sqlite:") else "postgresql",
            "ledgers": args.ledgers,
            "runs": runs,
            "ratios": ratios,
            "target_time_ratio": TARGET_TIME_RATIO,
            "load": bi.load_note(),
        }
        print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
