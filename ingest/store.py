"""The database: connection setup (SQLite WAL or PostgreSQL), migrations and config sync."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import SQLAlchemyError as SQLAlchemyError

from ingest import tables as t
from ingest.config import Settings
from ingest.errors import ConfigError, Transient
from ingest.sql import adapter_for

MIGRATIONS = Path(__file__).parent / "migrations"


class NoDatabase(ConfigError):
    """A command that only reads found no database, or one without the current schema."""


def sqlite_path(url: str, base_dir: Path | None = None) -> Path | None:
    """The file of an SQLite URL (relative ones against `base_dir`), or None for other URLs."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    if not path or path == ":memory:":
        return None
    if not url.startswith("sqlite:////") and base_dir is not None:
        return (base_dir / path).resolve()
    return Path(path)


def make_engine(url: str, base_dir: Path | None = None, *, writer: bool = True) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, its folder, and IMMEDIATE writes."""
    path = sqlite_path(url, base_dir)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    if url.startswith("sqlite:///"):
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin if writer else _sqlite_read_begin)
        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy drive transactions explicitly (BEGIN IMMEDIATE below), not pysqlite.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA cache_size=-200000")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead of
    # failing with "database is locked" when a reader upgrades to a writer.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_read_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


class Store:
    """The database behind returnsd: one engine, migrations, and the campaign sync."""

    def __init__(self, engine: Engine, reader: Engine | None = None) -> None:
        self.engine = engine
        self.reader = reader or engine
        self.sql = adapter_for(engine.dialect.name)  # the one place the dialect is chosen

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """Open the configured database (no migration)."""
        engine = make_engine(settings.database_url, settings.base_dir)
        reader = None
        if engine.dialect.name == "sqlite":
            reader = make_engine(settings.database_url, settings.base_dir, writer=False)
        return cls(engine, reader)

    @property
    def dialect(self) -> str:
        """The database dialect name: 'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction; database outages become Transient errors."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise Transient(f"database unavailable: {exc.orig}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot that never waits for a writer (SQLite WAL readers don't block)."""
        try:
            with self.reader.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise Transient(f"database unavailable: {exc.orig}") from exc

    def upgrade(self) -> tuple[str | None, str | None]:
        """Bring the schema to the newest migration; return the revisions before and after."""
        from alembic import command

        before = self.revision()
        cfg = _alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return before, self.revision()

    def revision(self) -> str | None:
        """The schema's current migration, or None for a database returnsd never migrated."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def sync_campaigns(self, settings: Settings) -> None:
        """Insert or update campaigns and event types from the config."""
        with self.begin() as conn:
            known = set(conn.scalars(select(t.campaigns.c.id)))
            known_et = set(conn.scalars(select(t.event_types.c.id)))
            for c in settings.campaigns:
                row = {
                    "name": c.name,
                    "currency": c.currency,
                    "timezone": c.timezone,
                    "disposition_codes": dict(c.disposition_codes),
                }
                if c.id in known:
                    conn.execute(t.campaigns.update().where(t.campaigns.c.id == c.id), row)
                else:
                    conn.execute(t.campaigns.insert(), {"id": c.id, **row})
                for et in c.event_types:
                    et_row = {
                        "campaign_id": c.id,
                        "name": et.name,
                        "kind": et.kind,
                        "payout_type": et.payout.type,
                        "payout_value": str(et.payout.value),
                        "lock_months": et.locking.months,
                        "lock_days": et.locking.days,
                    }
                    if et.id in known_et:
                        q = t.event_types.update().where(t.event_types.c.id == et.id)
                        conn.execute(q, et_row)
                    else:
                        conn.execute(t.event_types.insert(), {"id": et.id, **et_row})

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        self.reader.dispose()


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    """The newest migration this returnsd ships."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def open_existing(settings: Settings) -> Store:
    """Open a database that exists with the current schema; never create one (read-only use)."""
    path = sqlite_path(settings.database_url, settings.base_dir)
    hint = "check database_url / RETURNSD_DATABASE_URL, or create it with `returnsd db upgrade`"
    if path is not None and not path.exists():
        raise NoDatabase(f"database {path} does not exist ({hint})")
    store = Store.open(settings)
    try:
        current = store.revision()
    except OperationalError as exc:
        raise Transient(f"database unavailable: {exc.orig}") from exc
    if current is None:
        raise NoDatabase(f"the database holds no returnsd schema ({hint})")
    if current != head_revision():
        raise NoDatabase(
            f"the database schema is at {current}, this returnsd needs {head_revision()}: "
            "run `returnsd db upgrade`"
        )
    return store


def prepare(settings: Settings) -> Store:
    """Open, migrate and sync: what every command that touches data does first."""
    store = Store.open(settings)
    store.upgrade()
    store.sync_campaigns(settings)
    return store
