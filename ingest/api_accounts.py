"""Advertiser accounts of the impact-compatible API: an AccountSID, hashed AuthTokens, campaigns.

A token is shown once, when it is made; only its scrypt hash is stored. Checking a token runs
scrypt once, then the check is remembered (by the token's SHA-256, in memory) for `CACHE_SECONDS`,
so a revoked token stops working within that time on every node.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from ingest import tables as t
from ingest.config import Settings
from ingest.errors import ReturnsdError
from ingest.passwords import DUMMY_HASH, hash_password, verify_password
from ingest.store import Store

CACHE_SECONDS = 30.0
MAX_TOKEN_LENGTH = 256
ALPHABET = string.ascii_letters + string.digits


class AccountError(ReturnsdError):
    """An account or token command cannot be done (unknown SID, unknown campaign, …)."""


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the account, the token, and the campaigns the token may change."""

    sid: str
    token_id: str
    campaigns: tuple[str, ...]
    rate_limit_per_hour: int | None

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"api:{self.sid}/{self.token_id}"


@dataclass(frozen=True)
class TokenInfo:
    """A token as `tokens list` shows it (never the secret)."""

    id: str
    sid: str
    campaigns: list[str] | None
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


def new_sid() -> str:
    """A fresh AccountSID in impact's shape: 'IR' and 32 letters and digits."""
    return "IR" + "".join(secrets.choice(ALPHABET) for _ in range(32))


def new_token() -> str:
    """A fresh AuthToken: 32 random letters and digits (about 190 bits)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(32))


def _key(sid: str, token: str) -> str:
    return hashlib.sha256(f"{sid}\0{token}".encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Accounts:
    """Create accounts, add, list and revoke tokens, and sync the accounts the config declares."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def ensure_account(
        self, sid: str, campaigns: list[str], name: str | None = None, rate: int | None = None
    ) -> None:
        """Create the account, or set its campaigns, name and rate limit."""
        row = {"name": name, "campaigns": sorted(set(campaigns)), "rate_limit_per_hour": rate}
        with self.store.begin() as conn:
            found = conn.scalar(select(t.api_accounts.c.sid).where(t.api_accounts.c.sid == sid))
            if found is None:
                conn.execute(t.api_accounts.insert(), {"sid": sid, "created_at": _now(), **row})
            else:
                conn.execute(t.api_accounts.update().where(t.api_accounts.c.sid == sid), row)

    def account_campaigns(self, sid: str) -> list[str] | None:
        """The account's campaigns, or None when there is no such account."""
        with self.store.read() as conn:
            found = conn.scalar(
                select(t.api_accounts.c.campaigns).where(t.api_accounts.c.sid == sid)
            )
        return list(found) if found is not None else None

    def add_token(
        self,
        sid: str,
        campaigns: list[str] | None = None,
        label: str | None = None,
        token: str | None = None,
        token_id: str | None = None,
    ) -> tuple[str, str]:
        """Add a token to an account; return (token id, the token: shown this once only)."""
        allowed = self.account_campaigns(sid)
        if allowed is None:
            raise AccountError(f"no account {sid!r}")
        outside = sorted(set(campaigns or ()) - set(allowed))
        if outside:
            raise AccountError(f"account {sid} has no campaign(s) {', '.join(outside)}")
        token = token or new_token()
        token_id = token_id or "tok_" + secrets.token_hex(6)
        self._insert_token(sid, token_id, hash_password(token), campaigns, label)
        return token_id, token

    def _insert_token(
        self, sid: str, token_id: str, hashed: str, campaigns: list[str] | None, label: str | None
    ) -> None:
        with self.store.begin() as conn:
            conn.execute(
                t.api_tokens.insert(),
                {
                    "id": token_id,
                    "sid": sid,
                    "token_hash": hashed,
                    "campaigns": sorted(campaigns) if campaigns else None,
                    "label": label,
                    "created_at": _now(),
                },
            )

    def tokens(self, sid: str | None = None) -> list[TokenInfo]:
        """Every token (of one account), oldest first."""
        q = select(t.api_tokens).order_by(t.api_tokens.c.created_at, t.api_tokens.c.id)
        if sid:
            q = q.where(t.api_tokens.c.sid == sid)
        with self.store.read() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            TokenInfo(r["id"], r["sid"], r["campaigns"], r["label"], r["created_at"],
                      r["revoked_at"])
            for r in rows
        ]  # fmt: skip

    def revoke(self, token_id: str) -> bool:
        """Revoke a token (kept for the record); False when there is no such live token."""
        q = (
            update(t.api_tokens)
            .where(t.api_tokens.c.id == token_id, t.api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )
        with self.store.begin() as conn:
            return bool(conn.execute(q).rowcount)

    def sync_config(self, settings: Settings) -> None:
        """Create or update the accounts the config declares, with their token hashes."""
        for a in settings.impact_api.accounts:
            self.ensure_account(a.sid, a.campaigns, a.name, a.rate_limit_per_hour)
            with self.store.read() as conn:
                known = set(conn.scalars(select(t.api_tokens.c.id)))
            for i, hashed in enumerate(a.token_hashes, start=1):
                token_id = f"cfg_{hashlib.sha256(hashed.encode()).hexdigest()[:12]}"
                if token_id not in known:
                    self._insert_token(a.sid, token_id, hashed, None, f"config token {i}")


class Authenticator:
    """Checks `AccountSID:AuthToken` pairs (scrypt once, then a short in-memory memory of it)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def cached(self, sid: str, token: str) -> Principal | None:
        """The caller if this pair was verified in the last `CACHE_SECONDS` (no scrypt, no I/O)."""
        hit = self._cache.get(_key(sid, token))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def check(self, sid: str, token: str) -> Principal | None:
        """The caller when the pair is valid and the token not revoked, else None (may be slow)."""
        if not sid or not token or len(token) > MAX_TOKEN_LENGTH or len(sid) > 64:
            return None
        key = _key(sid, token)
        hit = self.cached(sid, token)
        if hit is not None:
            return hit
        found = self._verify(sid, token)
        with self._lock:
            if found is None:
                self._cache.pop(key, None)
            else:
                self._cache[key] = (time.monotonic() + CACHE_SECONDS, found)
        return found

    def _verify(self, sid: str, token: str) -> Principal | None:
        with self.store.read() as conn:
            account = (
                conn.execute(select(t.api_accounts).where(t.api_accounts.c.sid == sid))
                .mappings()
                .first()
            )
            rows: list[Any] = []
            if account is not None:
                rows = list(conn.execute(
                    select(t.api_tokens).where(
                        t.api_tokens.c.sid == sid, t.api_tokens.c.revoked_at.is_(None)
                    )
                ).mappings())  # fmt: skip
        if account is None:
            verify_password(token, DUMMY_HASH)  # the same cost, whether the SID exists or not
            return None
        for row in rows:
            if verify_password(token, row["token_hash"]):
                own = list(account["campaigns"])
                scoped = row["campaigns"]
                campaigns = [c for c in own if scoped is None or c in scoped]
                return Principal(sid, row["id"], tuple(campaigns), account["rate_limit_per_hour"])
        return None
