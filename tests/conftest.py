"""Shared fixtures: a campaign config, a fresh database (SQLite and PostgreSQL), a spool."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from ingest import config
from ingest.config import Settings
from ingest.spool import Spool
from ingest.store import Store, prepare

pytest_plugins = ["tests.secrets_scan"]  # secrets never in logs: see tests/secrets_scan.py

PG_URL = os.environ.get("RETURNSD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE = set(filter(None, os.environ.get("RETURNSD_REQUIRE", "").split(",")))


def need(what: str, reason: str) -> None:
    """Skip with `reason`, or fail when the run requires `what` (CI sets RETURNSD_REQUIRE)."""
    if what in REQUIRE or "all" in REQUIRE:
        pytest.fail(f"required for this run but missing: {reason}")
    pytest.skip(reason)


def campaign_dict(cid: str = "acme", **extra: Any) -> dict[str, Any]:
    """A campaign with a sale (10%), a lead (fixed 5.00), a CPC and a month-locked sale tracker."""
    base = 100 if cid == "acme" else 100 + (sum(map(ord, cid)) % 800) * 10
    doc: dict[str, Any] = {
        "id": cid,
        "name": f"{cid.title()} Store",
        "currency": "USD",
        "timezone": "America/New_York",
        "event_types": [
            {
                "id": base + 1,
                "name": "Online Sale",
                "kind": "sale",
                "payout": {"type": "percent", "value": "10"},
                "locking": {"days": 27},
            },
            {
                "id": base + 2,
                "name": "Lead",
                "kind": "lead",
                "payout": {"type": "fixed", "value": "5.00"},
                "locking": {"days": 10},
            },
            {
                "id": base + 3,
                "name": "Click",
                "kind": "cpc",
                "payout": {"type": "fixed", "value": "0.25"},
                "locking": {"days": 3},
            },
            {
                "id": base + 4,
                "name": "Monthly Sale",
                "kind": "sale",
                "payout": {"type": "percent", "value": "7.5"},
                "locking": {"months": 0, "days": 27},
            },
        ],
        "disposition_codes": {"DAMAGED": "modify", "FRAUD_X": "reverse", "OK_EARLY": "approve"},
    }
    doc.update(extra)
    return doc


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own for this test session (dropped at the end)."""
    try:
        admin = create_engine(
            PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            name = f"returnsd_{os.getpid()}_{secrets.token_hex(3)}"
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        need("postgres", f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}")
        raise
    base, _, _ = PG_URL.rpartition("/")
    yield f"{base}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_pg(url: str) -> None:
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: SQLite in tmp_path, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'returnsd.db'}"
    url: str = request.getfixturevalue("pg_database")
    _reset_pg(url)
    return url


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build validated Settings rooted in tmp_path; keyword arguments override top-level keys."""

    def build(**overrides: Any) -> Settings:
        raw: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'returnsd.db'}",
            "spool_dir": str(tmp_path / "spool"),
            "results_dir": str(tmp_path / "results"),
            "campaigns": [campaign_dict()],
        }
        raw.update(overrides)
        os.environ.pop("RETURNSD_DATABASE_URL", None)
        return config.from_dict(raw, base_dir=tmp_path)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    """Settings for the `acme` campaign on a fresh database (SQLite and PostgreSQL)."""
    return make_settings(database_url=db_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """A migrated store with the campaigns synced."""
    s = prepare(settings)
    yield s
    s.dispose()


@pytest.fixture
def spool(settings: Settings, store: Store) -> Spool:
    """The spool over `store`."""
    return Spool(settings, store)


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads running."""
    before = set(threading.enumerate())
    yield
    for _ in range(50):
        extra = [
            t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon
        ]
        if not extra:
            return
        threading.Event().wait(0.1)
    pytest.fail(f"threads leaked: {[t.name for t in extra]}")
