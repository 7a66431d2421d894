"""Console benchmark: the Pending actions page on a campaign of 1,000,000 actions, a bulk
reversal of 1,000 actions, and XLSX/PDF exports of 100,000 rows (time and peak RSS).

    .venv/bin/python bench/console.py --json
    .venv/bin/python bench/console.py --json --db postgresql://postgres@127.0.0.1/returnsd_bench

Page timings are the server's time for one request through the ASGI app in-process (Starlette's
test client, so no socket), p50/p95 over `--requests` requests each: the first page, a page 100
pages deep (by keyset cursor), a filter by order id, a filter by partner and a 7-day event date
range. The bulk reversal is one confirmed POST of 1,000 ids. Each export runs in a child process
of its own, so its peak RSS is the export's alone. Targets (issue 9): page p95 ≤ 150 ms, bulk
reverse ≤ 2 s, export peak RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # `import console` must find the package, not this script

START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=15)
STEP = timedelta(seconds=1)  # 1,000,000 actions over 11.6 days, none locked yet


def settings_for(folder: Path, db: str | None) -> Any:
    """A one-campaign configuration with an operator for the console."""
    from ingest import config
    from ingest.passwords import hash_password
    from tests.conftest import campaign_dict

    raw = {
        "database_url": db or f"sqlite:///{folder / 'bench.db'}",
        "spool_dir": str(folder / "spool"), "results_dir": str(folder / "results"),
        "campaigns": [campaign_dict("acme")],
        "console": {"port": 0, "users": {"op": {"role": "operator",
                                                "password_hash": hash_password("bench")}}},
    }  # fmt: skip
    return config.from_dict(raw, base_dir=folder)


def quantiles(samples: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "n": len(ordered)}  # fmt: skip


def timed(client: Any, url: str) -> float:
    started = time.perf_counter()
    r = client.get(url)
    took = time.perf_counter() - started
    assert r.status_code == 200, (url, r.status_code)
    return took


def next_link(html: str) -> str:
    return html.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Seed, then measure pages, the bulk reversal and the exports."""
    import random
    import re

    from ingest.store import prepare
    from ingest.users import ensure_users
    from tests.console_data import seed_actions

    folder = Path(tempfile.mkdtemp(prefix="returnsd-console-bench-"))
    settings = settings_for(folder, args.db)
    store = prepare(settings)
    if args.db:  # a reused PostgreSQL database starts empty
        from ingest import tables as t

        with store.begin() as conn:
            for table in (t.audit, t.action_items, t.actions):
                conn.execute(table.delete())
    started = time.perf_counter()
    seed_actions(store, n=args.rows, start=START, partners=1000, chunk=50_000, step=STEP)
    seeded = time.perf_counter() - started
    if store.dialect == "postgresql":
        with store.begin() as conn:
            conn.exec_driver_sql("ANALYZE actions")
    else:
        with store.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    ensure_users(store, settings.console.users)
    from console.app import build_app
    from console.context import ConsoleContext
    from ingest.spool import Spool

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    app = build_app(ConsoleContext(settings, store, Spool(settings, store), settings.console))
    client = TestClient(app, base_url="http://bench.test")
    page = client.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"login": "op", "password": "bench", "csrf": token})
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/actions").text).group(1)  # type: ignore[union-attr]
    rng = random.Random(7)
    base = "/actions?campaign=acme"
    out: dict[str, Any] = {"rows": args.rows, "dialect": store.dialect,
                           "seed_seconds": round(seeded, 1)}  # fmt: skip
    out["first_page"] = quantiles([timed(client, base) for _ in range(args.requests)])
    url = base
    walk = []
    for _ in range(100):
        started = time.perf_counter()
        html = client.get(url).text
        walk.append(time.perf_counter() - started)
        url = next_link(html)
    out["walk_100_pages"] = quantiles(walk)
    out["page_100_deep"] = quantiles([timed(client, url) for _ in range(args.requests)])
    orders = [f"O{rng.randrange(args.rows):07d}" for _ in range(args.requests)]
    out["order_id_filter"] = quantiles([timed(client, f"{base}&order_id={o}") for o in orders])
    samples = []
    for _ in range(args.requests):
        day = START + rng.randrange(args.rows) * STEP
        frm, to = day.date(), (day + timedelta(days=7)).date()
        partner = f"P{rng.randrange(1000):03d}"
        samples.append(timed(client, f"{base}&partner={partner}&from={frm}&to={to}"))
    out["partner_date_filter"] = quantiles(samples)
    ids = [f"ACME-{k:07d}" for k in range(0, 2000, 2)]
    started = time.perf_counter()
    r = client.post("/actions/bulk", data={"csrf": csrf, "op": "reverse", "reason": "ITEM_RETURNED",
                    "campaign": "acme", "ids": ids, "confirmed": "1"})  # fmt: skip
    out["bulk_reverse_1000_seconds"] = round(time.perf_counter() - started, 2)
    assert "<strong>APPLIED</strong> 1,000" in r.text, r.text[r.text.find("flash") :][:300]
    client.close()
    for fmt in ("xlsx", "pdf"):
        figures = export_in_child(settings.database_url, folder, fmt, args.export_rows)
        out[f"export_{fmt}_{args.export_rows}"] = figures
    store.dispose()
    return out


def export_in_child(db: str, folder: Path, fmt: str, rows: int) -> dict[str, Any]:
    """Run one export in a child process; its wall time and peak RSS."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--export-child", fmt, "--db", db,
                           "--folder", str(folder), "--export-rows", str(rows),
                           "--start", START.isoformat()],
                          capture_output=True, text=True, check=True)  # fmt: skip
    doc: dict[str, Any] = json.loads(done.stdout)
    doc["wall_seconds"] = round(time.perf_counter() - started, 2)
    return doc


def export_child(args: argparse.Namespace) -> None:
    """The child: export the first `--export-rows` actions by event date; print time, RSS."""
    from console.exports import temp_path, write_pdf, write_xlsx
    from ingest import queries
    from ingest.store import Store

    settings = settings_for(Path(args.folder), args.db)
    store = Store.open(settings)
    start = datetime.fromisoformat(args.start)
    flt = queries.ActionFilter("acme", event_to=start + args.export_rows * STEP)
    path = temp_path("." + args.export_child)
    started = time.perf_counter()
    with store.read() as conn:
        rows = queries.iter_actions(conn, flt, descending=False)
        if args.export_child == "xlsx":
            n = write_xlsx(rows, path, "actions")
        else:
            n = write_pdf(rows, path, "Pending actions — bench", [("Campaign", "acme")])
    took = time.perf_counter() - started
    size = path.stat().st_size
    path.unlink()
    rss_mb = peak_rss_mb()
    print(json.dumps({"rows": n, "seconds": round(took, 2), "bytes": size,
                      "peak_rss_mb": round(rss_mb, 1)}))  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM). Not getrusage: after fork and exec,
    ru_maxrss keeps the parent's size at the fork (here, the seeding parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--export-rows", type=int, default=100_000)
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: SQLite, temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--export-child", choices=("xlsx", "pdf"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        export_child(args)
        return
    figures = run(args)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
