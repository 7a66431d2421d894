"""Sustained impact-style PUT modifications against the real daemon: accepted/s, latency, drain.

    .venv/bin/python bench/api.py [--seconds 30] [--clients 8] [--database-url URL] [--json]

Starts `returnsd run` as a child process over a fresh folder (the HTTP channel only, on a free
127.0.0.1 port; SQLite there, or the PostgreSQL database given, whose name must contain "bench":
its tables are dropped first),
with a ledger of PENDING sales and one impact API account. `--clients` threads, each with its own
keep-alive httpx client, send `PUT /Advertisers/{SID}/Actions` (form-encoded `ActionId`,
`Amount`, `Reason=ORDER_UPDATE`, as impact's clients do) for `--seconds`; every request modifies
an action no other request touches. Then it waits until every submission is Complete and checks
the database: every acknowledged BatchId stored and Complete without error (else lost), exactly
one audit row per acknowledged request (else applied twice), the amounts as sent.

Prints JSON: {accepted, accepted_per_s, p50_ms, p95_ms, max_ms, refused, drain_s, lost,
applied_twice, wrong_amount, database, target: {accepted_per_s: 300, drain_s: 5}}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script, bench/ingest.py would shadow the package

import httpx  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from ingest import tables as t  # noqa: E402
from ingest.passwords import hash_password  # noqa: E402
from ingest.store import make_engine  # noqa: E402

BIN = Path(sys.executable).parent
SID = "IRbench000000000000000000000000001"
TOKEN = "bench-token-0123456789abcdefghij"


def free_port() -> int:
    """A TCP port free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_setup(folder: Path, url: str, actions: int, port: int) -> Path:
    """config.yaml and the ledger CSV of the bench."""
    doc = {
        "database_url": url,
        "spool_dir": "var/spool",
        "results_dir": "var/results",
        "log_level": "INFO",
        "channels": {"http": {"host": "127.0.0.1", "port": port, "max_connections_per_ip": 64}},
        "impact_api": {
            "rate_limit_per_hour": 10_000_000,
            "accounts": [
                {"sid": SID, "campaigns": ["bench"], "token_hashes": [hash_password(TOKEN)]}
            ],
        },
        "campaigns": [
            {
                "id": "bench",
                "name": "Bench",
                "currency": "USD",
                "timezone": "UTC",
                "event_types": [
                    {
                        "id": 9001,
                        "name": "Sale",
                        "kind": "sale",
                        "payout": {"type": "percent", "value": "10"},
                        "locking": {"days": 27},
                    }
                ],
                "dropdir": False,
            }
        ],
    }
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(doc))
    when = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds")
    lines = ["ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,"
             "Payout,CustomerStatus"]  # fmt: skip
    row = "B{0:07d},bench,9001,O{0:07d},P1,{1},100.00,USD,10.00,NEW"
    lines += [row.format(i, when) for i in range(actions)]
    (folder / "actions.csv").write_text("\n".join(lines) + "\n")
    return config


def reset_postgres(url: str) -> None:
    """Drop everything in the bench's PostgreSQL database (only one named for benches)."""
    name = url.rsplit("/", 1)[-1]
    if "bench" not in name:
        raise SystemExit(f"refusing to drop the tables of {name!r}: name a *bench* database")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


class Load:
    """The clients' shared counters."""

    def __init__(self, actions: int) -> None:
        self.lock = threading.Lock()
        self.next = 0
        self.actions = actions
        self.latencies: list[float] = []
        self.sent: dict[str, tuple[str, int]] = {}  # batch id -> (action id, cents)
        self.refused = 0

    def take(self) -> int | None:
        """The next action no request touched yet, or None when all are taken."""
        with self.lock:
            if self.next >= self.actions:
                return None
            self.next += 1
            return self.next - 1


def client(base: str, load: Load, until: float) -> None:
    """One advertiser's order system: PUT after PUT, as fast as answers come."""
    with httpx.Client(base_url=base, auth=(SID, TOKEN), timeout=30,
                      headers={"Accept": "application/json"}) as http:  # fmt: skip
        while time.perf_counter() < until:
            i = load.take()
            if i is None:
                return
            cents = 1000 + i % 8000
            body = f"ActionId=B{i:07d}&Amount={cents // 100}.{cents % 100:02d}&Reason=ORDER_UPDATE"
            started = time.perf_counter()
            r = http.put(f"/Advertisers/{SID}/Actions", content=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
            took = time.perf_counter() - started
            with load.lock:
                if r.status_code == 200:
                    load.latencies.append(took)
                    load.sent[r.json()["QueuedUri"].rsplit("/", 1)[1]] = (f"B{i:07d}", cents)
                else:
                    load.refused += 1


def pct(values: list[float], p: float) -> float:
    """The p-th percentile in milliseconds."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)


def check(url: str, load: Load, folder: Path) -> dict[str, int]:
    """Lost, applied twice and wrong amounts, from the database."""
    engine = make_engine(url, folder)
    s, a, au = t.api_submissions.c, t.actions.c, t.audit.c
    with engine.connect() as conn:
        done = {r.batch_id: r for r in conn.execute(select(s.batch_id, s.status, s.error_reason))}
        audits = dict(conn.execute(select(au.action_id, func.count()).where(au.channel == "api")
                                   .group_by(au.action_id)).all())  # fmt: skip
        amounts = dict(conn.execute(select(a.id, a.amount).where(a.mod_count > 0)).all())
    engine.dispose()
    lost = sum(1 for b in load.sent if b not in done or done[b].status != "Complete"
               or done[b].error_reason)  # fmt: skip
    twice = sum(1 for action, _ in load.sent.values() if audits.get(action, 0) > 1)
    wrong = sum(1 for action, cents in load.sent.values() if amounts.get(action) != cents)
    return {"lost": lost, "applied_twice": twice, "wrong_amount": wrong}


def pending(url: str, folder: Path) -> int:
    """Submissions not Complete yet."""
    engine = make_engine(url, folder)
    with engine.connect() as conn:
        n = conn.scalar(select(func.count()).where(t.api_submissions.c.status != "Complete"))
    engine.dispose()
    return int(n or 0)


def run(seconds: float, clients: int, url: str | None, actions: int) -> dict[str, Any]:
    """The whole bench; its figures."""
    with tempfile.TemporaryDirectory(prefix="returnsd-api-bench-") as tmp:
        folder = Path(tmp)
        db = url or f"sqlite:///{folder / 'var' / 'returnsd.db'}"
        if url:
            reset_postgres(url)
        port = free_port()
        config = write_setup(folder, db, actions, port)
        env = {**os.environ, "RETURNSD_CONFIG": str(config)}
        env.pop("RETURNSD_DATABASE_URL", None)
        subprocess.run([str(BIN / "returnsd"), "actions", "import", str(folder / "actions.csv")],
                       cwd=folder, env=env, check=True, capture_output=True)  # fmt: skip
        log = (folder / "daemon.log").open("w")
        daemon = subprocess.Popen([str(BIN / "returnsd"), "run"], cwd=folder, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "returnsd running" not in (folder / "daemon.log").read_text():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((folder / "daemon.log").read_text())
                time.sleep(0.1)
            load = Load(actions)
            base = f"http://127.0.0.1:{port}"
            start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(base, load, start + seconds))
                       for _ in range(clients)]  # fmt: skip
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            last = time.perf_counter()
            while pending(db, folder) and time.perf_counter() - last < 120:
                time.sleep(0.05)
            drain = time.perf_counter() - last
            figures = check(db, load, folder)
        finally:
            daemon.terminate()
            daemon.wait(60)
            log.close()
    n = len(load.latencies)
    return {
        "database": "postgresql" if url else "sqlite",
        "clients": clients,
        "seconds": round(last - start, 2),
        "accepted": n,
        "accepted_per_s": round(n / max(last - start, 1e-9), 1),
        "p50_ms": pct(load.latencies, 50),
        "p95_ms": pct(load.latencies, 95),
        "max_ms": pct(load.latencies, 100),
        "refused": load.refused,
        "drain_s": round(drain, 2),
        **figures,
        "target": {"accepted_per_s": 300, "drain_s": 5},
    }


def main() -> None:
    """Parse the arguments, run, print."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--actions", type=int, default=60_000, help="ledger size (one per request)")
    p.add_argument("--database-url", help="a PostgreSQL database to use (its tables are dropped)")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args()
    doc = run(args.seconds, args.clients, args.database_url, args.actions)
    print(json.dumps(doc) if args.json else json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
