"""A console over a fresh store for tests: two campaigns, an operator and two advertisers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from ingest import config
from ingest.config import Settings
from ingest.passwords import hash_password
from ingest.spool import Spool
from ingest.store import Store, prepare
from ingest.users import ensure_users
from tests.conftest import campaign_dict
from tests.console_data import seed_actions

PASSWORD = "correct horse battery"
BETA_TRACKER = 100 + (sum(map(ord, "beta")) % 800) * 10 + 1


def console_settings(tmp_path: Path, db_url: str, **console: Any) -> Settings:
    """Settings with campaigns acme and beta and users op (operator), ann (acme), bob (beta)."""
    hashed = hash_password(PASSWORD)
    users = {
        "op": {"role": "operator", "password_hash": hashed, "name": "Olga Operator"},
        "ann": {"role": "advertiser", "campaigns": ["acme"], "password_hash": hashed,
                "name": "Ann Acme", "email": "ann@acme.test"},
        "bob": {"role": "advertiser", "campaigns": ["beta"], "password_hash": hashed},
    }  # fmt: skip
    raw: dict[str, Any] = {
        "database_url": db_url, "spool_dir": str(tmp_path / "spool"),
        "results_dir": str(tmp_path / "results"),
        "campaigns": [campaign_dict(), campaign_dict("beta")],
        "console": {"port": 0, "users": users, **console},
    }  # fmt: skip
    return config.from_dict(raw, base_dir=tmp_path)


@dataclass
class ConsoleEnv:
    """A prepared store and the console context over it."""

    settings: Settings
    store: Store
    mails: list[EmailMessage] = field(default_factory=list)

    def context(self, send_mail: Callable[[EmailMessage], None] | None = None) -> Any:
        """The console context (mails collected in `mails` unless `send_mail` is given)."""
        from console.context import ConsoleContext

        assert self.settings.console is not None
        return ConsoleContext(self.settings, self.store, Spool(self.settings, self.store),
                              self.settings.console, running=lambda: ["http", "ftp"],
                              send_mail=send_mail or self.mails.append)  # fmt: skip


def make_console_env(tmp_path: Path, db_url: str, n: int = 120, **console: Any) -> ConsoleEnv:
    """Migrate, seed `n` acme actions and 5 beta actions, create the users."""
    settings = console_settings(tmp_path, db_url, **console)
    store = prepare(settings)
    seed_actions(store, n=n)
    seed_actions(store, "beta", n=5, tracker=BETA_TRACKER)
    assert settings.console is not None
    ensure_users(store, settings.console.users)
    return ConsoleEnv(settings, store)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)
