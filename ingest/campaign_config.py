"""A campaign's configuration: event types, payout and locking rules, codes, channel accounts."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from ingest.config_types import SLUG, Secret, Strict
from ingest.salesforce_config import SalesforceMapping

Effect = Literal["modify", "reverse", "approve"]  # what a custom disposition code does


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
    allow_senders: list[str] = Field(default_factory=list)

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
    disposition_codes: dict[str, Effect] = Field(default_factory=dict)
    ftp: FtpAccount | None = None
    smtp: SmtpAccount | None = None
    http: HttpAccount | None = None
    pull: PullSource | None = None
    salesforce: SalesforceMapping | None = None
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
