"""Bearer tokens of the HTTP upload API: one per campaign, checked without scrypt on every request.

A campaign's token is either `http.token_hash` (scrypt, verified once and then remembered by the
SHA-256 of the token, in memory only) or `http.token` (a Secret read at start, compared with
`hmac.compare_digest`). Rotating a Secret token takes a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading

from ingest.config import Secret, Settings
from ingest.errors import ConfigError
from ingest.passwords import verify_password

log = logging.getLogger(f"returnsd.{__name__}")

MAX_TOKEN_LENGTH = 1024


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenChecker:
    """Knows every campaign's token: is a token valid for a campaign, and whose is it."""

    def __init__(self, settings: Settings) -> None:
        self._hashes: dict[str, str] = {}
        self._plain: dict[str, bytes] = {}
        self._verified: dict[str, str] = {}  # sha256(token) -> campaign; at most one per campaign
        self._lock = threading.Lock()
        for c in settings.campaigns:
            if c.http is None:
                continue
            if c.http.token_hash is not None:
                self._hashes[c.id] = c.http.token_hash
            elif c.http.token is not None:
                self._load_secret(c.id, c.http.token)

    def _load_secret(self, campaign: str, secret: Secret) -> None:
        try:
            self._plain[campaign] = secret.reveal().encode()
        except ConfigError as exc:
            log.warning("campaign %s: http.token unreadable, uploads refused: %s", campaign, exc)

    def has_account(self, campaign: str) -> bool:
        """True when the campaign exists and can take HTTP uploads."""
        return campaign in self._hashes or campaign in self._plain

    def check(self, campaign: str, token: str) -> bool:
        """True when `token` is the campaign's token (may run scrypt once: call off the loop)."""
        if len(token) > MAX_TOKEN_LENGTH:
            return False
        key = _key(token)
        if self._verified.get(key) == campaign:
            return True
        plain = self._plain.get(campaign)
        if plain is not None:
            ok = hmac.compare_digest(plain, token.encode())
        else:
            stored = self._hashes.get(campaign)
            ok = stored is not None and verify_password(token, stored)
        if ok:
            with self._lock:
                self._verified[key] = campaign
        return ok

    def owner(self, token: str) -> str | None:
        """The campaign a token is known to belong to, from cheap checks only (no scrypt)."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        found = self._verified.get(_key(token))
        if found is not None:
            return found
        raw = token.encode()
        for campaign, plain in self._plain.items():
            if hmac.compare_digest(plain, raw):
                return campaign
        return None
