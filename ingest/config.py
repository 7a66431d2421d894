"""Typed configuration: the only place that reads YAML, validated once at start."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from ingest.api_config import ImpactApiOptions
from ingest.campaign_config import (
    Campaign,
    EventType,
    FtpAccount,
    HttpAccount,
    LockingRule,
    PayoutRule,
    PullSource,
    SmtpAccount,
)
from ingest.config_types import Secret, Strict
from ingest.errors import ConfigError

__all__ = [
    "Campaign",
    "Channels",
    "ClusterOptions",
    "ConsoleOptions",
    "ConsoleUser",
    "DropdirOptions",
    "EventType",
    "FtpAccount",
    "FtpOptions",
    "HttpAccount",
    "HttpOptions",
    "Limits",
    "LockingRule",
    "PayoutRule",
    "PullOptions",
    "PullSource",
    "Secret",
    "Settings",
    "SmtpAccount",
    "SmtpOptions",
    "Strict",
    "from_dict",
    "load",
]


class Listen(Strict):
    """Common listening options of a network channel."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class FtpOptions(Listen):
    """Hosted FTP(S) server options."""

    root: Path = Path("var/ftp")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    passive_ports: tuple[int, int] | None = None
    masquerade_address: str | None = None
    max_connections: int = Field(default=256, ge=1)
    max_connections_per_ip: int = Field(default=8, ge=1)
    max_login_attempts: int = Field(default=3, ge=1)
    ban_after_failures: int = Field(default=10, ge=1)
    ban_seconds: int = Field(default=900, ge=0)
    idle_timeout: int = Field(default=300, ge=5)
    failed_login_delay: float = Field(default=3.0, ge=0, le=30)
    close_grace: float = Field(default=0.5, ge=0, le=10)
    workers: int = Field(default=4, ge=1, le=32)


class SmtpOptions(Listen):
    """Inbound SMTP server options."""

    hostname: str = "returns.localhost"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_starttls: bool = False
    auth_users: dict[str, str] = Field(default_factory=dict)  # user -> password hash
    max_recipients: int = Field(default=20, ge=1)
    relay_host: str | None = None
    relay_port: int = 25
    relay_starttls: bool = False
    relay_user: str | None = None
    relay_password: Secret | None = None
    from_address: str = "returns@returns.localhost"
    outbox_dir: Path = Path("var/outbox")  # reply mails wait here while no relay is configured
    outbox_flush_seconds: float = Field(default=60, gt=0)
    idle_timeout: int = Field(default=300, ge=1)  # seconds without a command (or all of DATA)
    max_connections_per_ip: int = Field(default=20, ge=1)


class HttpOptions(Listen):
    """HTTP upload API options."""

    public_url: str | None = None
    tls_cert: Path | None = None  # serve HTTPS (Salesforce requires it in production)
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # ask for client certificates signed by these CAs
    max_connections_per_ip: int = Field(default=16, ge=1)
    header_timeout: float = Field(default=10, gt=0)  # a request's headers must arrive by then


class DropdirOptions(Strict):
    """Watched drop folder options."""

    enabled: bool = True
    root: Path = Path("var/drop")
    rescan_seconds: float = Field(default=60, gt=0)
    stable_seconds: float = Field(default=1.0, ge=0)
    polling: bool = False


class PullOptions(Strict):
    """Scheduled pull options shared by all campaigns."""

    enabled: bool = True
    state_dir: Path = Path("var/pull")


class Channels(Strict):
    """All channels; each may be disabled."""

    ftp: FtpOptions | None = None
    smtp: SmtpOptions | None = None
    http: HttpOptions | None = None
    dropdir: DropdirOptions | None = None
    pull: PullOptions | None = None


class ConsoleUser(Strict):
    """A console user the config creates at start when missing (e.g. the demo users)."""

    role: str = Field(pattern="^(operator|advertiser)$")
    password_hash: str
    campaigns: list[str] = Field(default_factory=list)
    name: str | None = None
    email: str | None = None


class ConsoleOptions(Listen):
    """The web console: where it listens, TLS, session expiry and login throttling."""

    port: int = Field(default=8000, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_idle_minutes: int = Field(default=30, ge=1)
    session_absolute_hours: int = Field(default=12, ge=1)
    login_window_seconds: int = Field(default=900, ge=1)
    login_failures_per_user: int = Field(default=5, ge=1)  # then that login waits out the window
    login_failures_per_address: int = Field(default=20, ge=1)
    users: dict[str, ConsoleUser] = Field(default_factory=dict)


class Limits(Strict):
    """Limits on what a file may be."""

    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_rows: int = Field(default=2_000_000, ge=1)
    max_uncompressed_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    max_archive_members: int = Field(default=100, ge=1)


class ClusterOptions(Strict):
    """Several nodes over one PostgreSQL database (SQLite is always single-node)."""

    enabled: bool = False
    node_id: str | None = Field(default=None, min_length=1, max_length=128)  # default: host:pid
    lease_seconds: float = Field(default=30, gt=0)  # a claim or a node is dead this long after
    heartbeat_seconds: float = Field(default=5, gt=0)  # its last heartbeat


class Settings(Strict):
    """The whole daemon configuration."""

    database_url: str = "sqlite:///var/returnsd.db"
    spool_dir: Path = Path("var/spool")
    results_dir: Path = Path("var/results")
    retention_days: int = Field(default=90, ge=1)
    workers: int = Field(default=1, ge=1, le=16)
    max_attempts: int = Field(default=3, ge=1)
    lock_schedule: str = "*/15 * * * *"
    retention_schedule: str = "30 3 * * *"
    log_level: str = "INFO"
    third_party_log_level: str = "WARNING"  # aiosmtpd, APScheduler, uvicorn, pyftpdlib, …
    limits: Limits = Limits()
    channels: Channels = Channels()
    impact_api: ImpactApiOptions = ImpactApiOptions()
    console: ConsoleOptions | None = None
    cluster: ClusterOptions = ClusterOptions()
    campaigns: list[Campaign]
    base_dir: Path = Path(".")

    def campaign(self, campaign_id: str) -> Campaign | None:
        """Return the campaign with this id, or None."""
        for c in self.campaigns:
            if c.id == campaign_id:
                return c
        return None

    def path(self, p: Path) -> Path:
        """Resolve a configured path against the config file's folder."""
        return p if p.is_absolute() else (self.base_dir / p)

    def problems(self) -> list[str]:
        """Every cross-field problem of the configuration, all at once."""
        from ingest.config_checks import problems_of

        return list(problems_of(self))


PATH_KEYS = ("file", "password_hash_file", "tls_cert", "tls_key", "tls_client_ca")


def _resolve_secret_paths(raw: object, base: Path) -> None:
    """Make relative secret/key file paths relative to the config file's folder."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in PATH_KEYS and isinstance(value, str):
                if not Path(value).is_absolute():
                    raw[key] = str(base / value)
            else:
                _resolve_secret_paths(value, base)
    elif isinstance(raw, list):
        for item in raw:
            _resolve_secret_paths(item, base)


def load(path: Path | str) -> Settings:
    """Read and validate a config file; raise ConfigError listing every problem at once."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return from_dict(raw, base_dir=path.resolve().parent, source=str(path))


def from_dict(raw: object, base_dir: Path, source: str = "config") -> Settings:
    """Validate an already-parsed config mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    raw = dict(raw)
    _resolve_secret_paths(raw, base_dir)
    raw["base_dir"] = base_dir
    if "RETURNSD_DATABASE_URL" in os.environ:
        raw["database_url"] = os.environ["RETURNSD_DATABASE_URL"]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        lines = [_field_error(e) for e in exc.errors()]
        partial = _valid_part(raw, exc)
        lines += [f"  {p}" for p in (partial.problems() if partial else [])]
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(lines)) from None
    problems = settings.problems()
    if problems:
        raise ConfigError(
            f"{source}: invalid configuration:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return settings


def _field_error(error: Any) -> str:
    return f"  {'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def _valid_part(raw: dict[str, Any], exc: ValidationError) -> Settings | None:
    """The configuration without its invalid parts, so cross-field checks can still report."""
    bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    part = {k: v for k, v in raw.items() if k not in bad}
    if isinstance(raw.get("campaigns"), list):
        pruned = (_pruned(Campaign, c) for c in raw["campaigns"])
        part["campaigns"] = [c for c in pruned if c is not None]
    if isinstance(raw.get("channels"), dict):
        part["channels"] = _pruned(Channels, raw["channels"]) or {}
    try:
        return Settings.model_validate(part)
    except ValidationError:
        return None


def _pruned(model: type[Strict], value: object) -> dict[str, Any] | None:
    """`value` without the keys that fail `model`'s validation, or None if it cannot validate."""
    if not isinstance(value, dict):
        return None
    try:
        model.model_validate(value)
        return value
    except ValidationError as exc:
        bad = {e["loc"][0] for e in exc.errors() if e["loc"]}
    kept = {k: v for k, v in value.items() if k not in bad}
    try:
        model.model_validate(kept)
    except ValidationError:
        return None
    return kept
