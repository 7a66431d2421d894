"""Configuration of the impact-compatible API: the rate limit, the applier, declared accounts."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from ingest.config_types import Strict

SID_SHAPE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class ApiAccountConfig(Strict):
    """An advertiser account declared in the config (synced into the database at start).

    Accounts made with `returnsd tokens add` live in the database only; a declared account keeps
    the tokens given here as hashes (`returnsd hash-password`), never in clear.
    """

    sid: str
    name: str | None = None
    campaigns: list[str] = Field(min_length=1)
    token_hashes: list[str] = Field(default_factory=list)
    rate_limit_per_hour: int | None = Field(default=None, ge=1)

    @field_validator("sid")
    @classmethod
    def _sid(cls, v: str) -> str:
        if not SID_SHAPE.match(v):
            raise ValueError("must be 8-64 letters, digits, '_' or '-'")
        return v


class ImpactApiOptions(Strict):
    """The impact-compatible Actions API served by the HTTP channel (SPEC §10)."""

    enabled: bool = True
    rate_limit_per_hour: int = Field(default=1000, ge=1)  # per account, like impact's default
    apply_batch: int = Field(default=500, ge=1, le=10_000)  # submissions per transaction, at most
    accounts: list[ApiAccountConfig] = Field(default_factory=list)
