"""A running impact-compatible API for tests: the HTTP channel on 127.0.0.1:0, the applier, curl.

The ledger is the case fixtures' (fixtures/cases: campaigns `shop` and `other`); account SHOP may
change `shop`, account BOTH both campaigns, and BOTH's second token only `other`.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy import select

from channels.base import ChannelContext
from channels.http_api import HttpApiChannel
from ingest import config
from ingest import tables as t
from ingest.api_accounts import Accounts
from ingest.applier import Applier
from ingest.results import ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from tests.test_cases import Env

SHOP_SID = "IRshop00000000000000000000000001"
BOTH_SID = "IRboth00000000000000000000000002"


@dataclass
class Api:
    """The API server, its store, the applier thread and the accounts' tokens."""

    env: Env
    settings: config.Settings
    store: Store
    channel: HttpApiChannel
    tokens: dict[str, str] = field(default_factory=dict)  # name -> token
    stopping: threading.Event = field(default_factory=threading.Event)
    applier: threading.Thread | None = None

    @property
    def base(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.channel.port}"

    def curl(self, *args: str, user: str | None = None, json_out: bool = True) -> tuple[int, Any]:
        """Run curl with `args` (paths relative to the server); (HTTP status, parsed body)."""
        argv = ["curl", "-sS", "-w", "\n%{http_code}"]
        if user is not None:
            argv += ["-u", user]
        if json_out:
            argv += ["-H", "Accept: application/json"]
        argv += [a if not a.startswith("/") else self.base + a for a in args]
        done = subprocess.run(argv, capture_output=True, timeout=30, check=True, text=True)
        body, _, status = done.stdout.rpartition("\n")
        parsed: Any = body
        if json_out and body:
            parsed = json.loads(body)
        return int(status), parsed

    def headers(self, *args: str, user: str) -> dict[str, str]:
        """The response headers of a curl request (lower-case names)."""
        argv = ["curl", "-sS", "-D", "-", "-o", "/dev/null", "-u", user]
        argv += [a if not a.startswith("/") else self.base + a for a in args]
        done = subprocess.run(argv, capture_output=True, timeout=30, check=True, text=True)
        lines = done.stdout.splitlines()[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines) if v}

    def user(self, name: str = "shop") -> str:
        """`SID:TOKEN` for curl -u."""
        sid = SHOP_SID if name == "shop" else BOTH_SID
        return f"{sid}:{self.tokens[name]}"

    def complete(self, queued_uri: str, user: str | None = None, timeout: float = 20) -> Any:
        """Follow a QueuedUri until the submission is Complete; return it."""
        deadline = time.monotonic() + timeout
        while True:
            status, doc = self.curl(queued_uri, user=user or self.user())
            assert status == 200, doc
            if doc["Status"] == "Complete" or time.monotonic() > deadline:
                return doc
            time.sleep(0.05)

    def action(self, action_id: str) -> dict[str, Any]:
        """The ledger's row of an action."""
        with self.store.read() as conn:
            row = conn.execute(select(t.actions).where(t.actions.c.id == action_id)).mappings()
            return dict(row.one())

    def items(self, action_id: str) -> dict[str, tuple[int, int]]:
        """The action's items: sku -> (quantity, amount in cents)."""
        q = select(t.action_items).where(t.action_items.c.action_id == action_id)
        with self.store.read() as conn:
            return {r.sku: (r.quantity, r.amount) for r in conn.execute(q)}

    def audit(self, action_id: str) -> list[dict[str, Any]]:
        """The action's audit rows, oldest first."""
        q = select(t.audit).where(t.audit.c.action_id == action_id).order_by(t.audit.c.id)
        with self.store.read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def start_applier(self) -> None:
        """Run the applier in a thread, as the daemon does."""
        applier = Applier(self.settings, self.store)
        self.applier = threading.Thread(target=applier.run, args=(self.stopping,), daemon=True)
        self.applier.start()

    def close(self) -> None:
        """Stop the applier, the server and the store."""
        self.stopping.set()
        if self.applier is not None:
            self.applier.join(10)
        self.channel.stop()
        self.store.dispose()


def start_api(env: Env, *, applier: bool = True, **impact: Any) -> Api:
    """Serve the impact-compatible API over the env's ledger."""
    raw = yaml.safe_load(env.config.read_text())
    raw["channels"] = {"http": {"host": "127.0.0.1", "port": 0}}
    raw["impact_api"] = impact
    cfg = env.root / "api-config.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    settings = config.load(cfg)
    store = prepare(settings)
    accounts = Accounts(store)
    accounts.ensure_account(SHOP_SID, ["shop"], "Case Shop")
    accounts.ensure_account(BOTH_SID, ["shop", "other"], "Both brands")
    tokens = {
        "shop": accounts.add_token(SHOP_SID, label="shop")[1],
        "both": accounts.add_token(BOTH_SID, label="both")[1],
        "other-only": accounts.add_token(BOTH_SID, ["other"], label="other only")[1],
    }
    ctx = ChannelContext(settings, Spool(settings, store), ResultStore(store))
    api = Api(env, settings, store, HttpApiChannel(ctx), tokens)
    api.channel.start()
    if applier:
        api.start_applier()
    return api
