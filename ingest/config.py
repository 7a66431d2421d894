"""Typed configuration: the only place that reads YAML, validated once at start."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingest.errors import ConfigError

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Strict(BaseModel):
    """Base model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Strict):
    """A secret read from a file or an environment variable, never written in the config."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of 'file' or 'env'")
        return self

    def reveal(self) -> str:
        """Return the secret's value (stripped of surrounding whitespace)."""
        if self.file is not None:
            try:
                return self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
        value = os.environ.get(self.env or "")
        if value is None:
            raise ConfigError(f"environment variable {self.env} is not set")
        return value.strip()

    def problem(self) -> str | None:
        """Say why the secret cannot be read, or None when it can."""
        try:
            self.reveal()
        except ConfigError as exc:
            return str(exc)
        return None

    def __repr__(self) -> str:
        return f"Secret(file={self.file!r}, env={self.env!r})"


class PayoutRule(Strict):
    """How a payout follows from the sale amount: a percentage or a fixed sum per action."""

    type: Literal["percent", "fixed"]
    value: Decimal = Field(ge=0)

    @field_validator("value")
    @classmethod
    def _at_most_four_places(cls, v: Decimal) -> Decimal:
        if v.as_tuple().exponent < -4:  # type: ignore[operator]
            raise ValueError("at most 4 decimal places")
        return v


class LockingRule(Strict):
    """When an action locks: `days` after the event, or `months` + `days` after its month ends."""

    days: int = Field(ge=0, le=27)
    months: int | None = Field(default=None, ge=0, le=12)


class EventType(Strict):
    """An action tracker of a campaign (impact's ActionTrackerId)."""

    id: int = Field(ge=1)
    name: str
    kind: Literal["sale", "lead", "cpc"]
    payout: PayoutRule
    locking: LockingRule


class FtpAccount(Strict):
    """A campaign's login on the hosted FTP(S) server."""

    login: str
    password_hash: str | None = None
    password_hash_file: Path | None = None

    @model_validator(mode="after")
    def _one_hash(self) -> FtpAccount:
        if (self.password_hash is None) == (self.password_hash_file is None):
            raise ValueError("give exactly one of 'password_hash' or 'password_hash_file'")
        return self

    def hash(self) -> str:
        """Return the stored password hash."""
        if self.password_hash is not None:
            return self.password_hash
        assert self.password_hash_file is not None
        return self.password_hash_file.read_text().strip()


class SmtpAccount(Strict):
    """A campaign's inbound mail address."""

    address: str
    allow_senders: list[str] = []

    @field_validator("address")
    @classmethod
    def _lower(cls, v: str) -> str:
        if "@" not in v:
            raise ValueError("must be an e-mail address")
        return v.lower()


class HttpAccount(Strict):
    """A campaign's bearer token for the HTTP API (a stored hash, or read from a secret)."""

    token_hash: str | None = None
    token: Secret | None = None

    @model_validator(mode="after")
    def _one(self) -> HttpAccount:
        if (self.token_hash is None) == (self.token is None):
            raise ValueError("give exactly one of 'token_hash' or 'token'")
        return self


class PullSource(Strict):
    """A scheduled pull from the advertiser's own SFTP or FTP(S) server."""

    url: str  # sftp://host:port/folder, ftp://host/folder, ftps://host/folder
    user: str
    password: Secret | None = None
    private_key: Secret | None = None
    host_key: str | None = None  # "ssh-ed25519 AAAA…" for SFTP; required for sftp://
    pattern: str = "*"
    schedule: str = "0 2 * * *"  # cron, in the campaign's time zone
    after: str = "keep"  # keep | delete | move:<folder>
    results_folder: str | None = None
    timeout_seconds: float = Field(default=30, gt=0)
    retries: int = Field(default=3, ge=0, le=10)

    @field_validator("after")
    @classmethod
    def _after(cls, v: str) -> str:
        if v not in ("keep", "delete") and not (v.startswith("move:") and len(v) > 5):
            raise ValueError("must be keep, delete or move:<folder>")
        return v

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not re.match(r"^(sftp|ftp|ftps)://[^/]+", v):
            raise ValueError("must start with sftp://, ftp:// or ftps:// and name a host")
        return v

    @model_validator(mode="after")
    def _auth(self) -> PullSource:
        if self.password is None and self.private_key is None:
            raise ValueError("give 'password' or 'private_key' (from a file or env)")
        if self.url.startswith("sftp://") and not self.host_key:
            raise ValueError(
                "sftp pulls need a pinned 'host_key' (ssh-keyscan output: TYPE BASE64)"
            )
        return self


class Campaign(Strict):
    """A campaign: its event types, custom disposition codes and per-channel accounts."""

    id: str
    name: str
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    timezone: str
    event_types: list[EventType]
    disposition_codes: dict[str, Literal["modify", "reverse", "approve"]] = {}
    ftp: FtpAccount | None = None
    smtp: SmtpAccount | None = None
    http: HttpAccount | None = None
    pull: PullSource | None = None
    dropdir: bool = True

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v):
            raise ValueError("must be a slug: lower-case letters, digits, '-' or '_'")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @property
    def tz(self) -> ZoneInfo:
        """The campaign's time zone."""
        return ZoneInfo(self.timezone)


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
    auth_users: dict[str, str] = {}  # user -> password hash
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


class Limits(Strict):
    """Limits on what a file may be."""

    max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_rows: int = Field(default=2_000_000, ge=1)
    max_uncompressed_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    max_archive_members: int = Field(default=100, ge=1)


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
    limits: Limits = Limits()
    channels: Channels = Channels()
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
        return list(_problems(self))


def _problems(s: Settings) -> Iterator[str]:
    seen: dict[str, dict[str, str]] = {
        "campaign": {},
        "tracker": {},
        "ftp login": {},
        "address": {},
    }

    def once(kind: str, key: str, owner: str) -> Iterator[str]:
        if key in seen[kind]:
            yield f"{kind} {key!r} is used by both {seen[kind][key]} and {owner}"
        seen[kind][key] = owner

    for c in s.campaigns:
        yield from once("campaign", c.id, f"campaign #{s.campaigns.index(c) + 1}")
        for et in c.event_types:
            yield from once("tracker", str(et.id), f"campaign {c.id}")
        if c.ftp:
            yield from once("ftp login", c.ftp.login, f"campaign {c.id}")
            if c.ftp.password_hash_file and not s.path(c.ftp.password_hash_file).exists():
                missing = c.ftp.password_hash_file
                yield f"campaign {c.id}: ftp password_hash_file {missing} is missing"
        if c.smtp:
            yield from once("address", c.smtp.address, f"campaign {c.id}")
        for name, secret in _secrets_of(c):
            problem = secret.problem()
            if problem:
                yield f"campaign {c.id}: {name}: {problem}"
    ports: dict[tuple[str, int], str] = {}
    for name in ("ftp", "smtp", "http"):
        ch = getattr(s.channels, name)
        if ch is None or not ch.enabled or ch.port == 0:
            continue
        key = (ch.host, ch.port)
        if key in ports:
            yield f"channels {ports[key]} and {name} both listen on {ch.host}:{ch.port}"
        ports[key] = name
    for name in ("ftp", "smtp"):
        ch = getattr(s.channels, name)
        if ch is not None and (ch.tls_cert is None) != (ch.tls_key is None):
            yield f"channels.{name}: give both tls_cert and tls_key, or neither"
        if ch is not None and ch.tls_cert is not None:
            for p in (ch.tls_cert, ch.tls_key):
                if not s.path(p).exists():
                    yield f"channels.{name}: {p} does not exist"
    smtp = s.channels.smtp
    if smtp and (smtp.require_starttls or smtp.auth_users) and not smtp.tls_cert:
        yield "channels.smtp: require_starttls and auth_users need tls_cert and tls_key"
    yield from _cron_problems(s)
    ftp = s.channels.ftp
    if ftp and ftp.passive_ports and ftp.passive_ports[0] > ftp.passive_ports[1]:
        yield "channels.ftp.passive_ports: first port must not exceed the second"


def _cron_problems(s: Settings) -> Iterator[str]:
    from apscheduler.triggers.cron import CronTrigger

    crons = [("lock_schedule", s.lock_schedule), ("retention_schedule", s.retention_schedule)]
    crons += [(f"campaign {c.id}: pull.schedule", c.pull.schedule) for c in s.campaigns if c.pull]
    for where, expr in crons:
        try:
            CronTrigger.from_crontab(expr)
        except ValueError as exc:
            yield f"{where}: {expr!r} is not a cron expression ({exc})"


def _secrets_of(c: Campaign) -> Iterator[tuple[str, Secret]]:
    if c.http and c.http.token:
        yield "http.token", c.http.token
    if c.pull:
        if c.pull.password:
            yield "pull.password", c.pull.password
        if c.pull.private_key:
            yield "pull.private_key", c.pull.private_key


def _resolve_secret_paths(raw: dict, base: Path) -> None:
    """Make relative secret/key file paths relative to the config file's folder."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in ("file", "password_hash_file", "tls_cert", "tls_key") and isinstance(
                value, str
            ):
                if not Path(value).is_absolute():
                    raw[key] = str(base / value)
            else:
                _resolve_secret_paths(value, base)
    elif isinstance(raw, list):
        for item in raw:
            _resolve_secret_paths(item, base)


Raw = Annotated[dict, "raw yaml"]


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
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{source}: invalid configuration:\n" + "\n".join(lines)) from None
    problems = settings.problems()
    if problems:
        raise ConfigError(
            f"{source}: invalid configuration:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return settings
