"""Server-side console sessions in the database: create, resolve (idle and absolute expiry),
end (logout) and revoke every session of a user.

The browser holds a random token; the table holds its SHA-256 only. Each session carries its own
CSRF token, checked on every state-changing request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from ingest import tables as t
from ingest.store import Store
from ingest.users import User, user_by_id

TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often


@dataclass(frozen=True)
class Session:
    """A live session: whose it is and its CSRF token."""

    id: str
    user: User
    csrf: str
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Sessions:
    """Sessions with an idle timeout and an absolute lifetime."""

    def __init__(self, store: Store, idle: timedelta, absolute: timedelta) -> None:
        self.store = store
        self.idle = idle
        self.absolute = absolute

    def create(self, user: User, address: str | None) -> str:
        """Open a session for `user`; return the token for the cookie."""
        token = secrets.token_urlsafe(32)
        now = _now()
        with self.store.begin() as conn:
            conn.execute(t.sessions.insert(), {
                "id": _digest(token), "user_id": user.id, "csrf": secrets.token_urlsafe(32),
                "address": address, "created_at": now, "last_seen_at": now,
                "expires_at": now + self.absolute})  # fmt: skip
        return token

    def resolve(self, token: str | None) -> Session | None:
        """The live session of a cookie token, or None (unknown, ended, idle, expired, disabled)."""
        if not token:
            return None
        sid = _digest(token)
        now = _now()
        with self.store.read() as conn:
            row = conn.execute(select(t.sessions).where(t.sessions.c.id == sid)).first()
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                return None
            if row.last_seen_at + self.idle <= now:
                return None
            user = user_by_id(conn, row.user_id)
        if user is None or user.disabled:
            return None
        if now - row.last_seen_at >= TOUCH_EVERY:
            with self.store.begin() as conn:
                conn.execute(update(t.sessions).where(t.sessions.c.id == sid)
                             .values(last_seen_at=now))  # fmt: skip
        return Session(sid, user, row.csrf, row.expires_at)

    def end(self, token: str | None) -> None:
        """Log out: the session can no longer be used."""
        if token:
            self._revoke(t.sessions.c.id == _digest(token))

    def revoke_all(self, user_id: int) -> None:
        """End every session of a user (e.g. after a password change or on their request)."""
        self._revoke(t.sessions.c.user_id == user_id)

    def _revoke(self, where: object) -> None:
        with self.store.begin() as conn:
            conn.execute(
                update(t.sessions)
                .where(where, t.sessions.c.revoked_at.is_(None))  # type: ignore[arg-type]
                .values(revoked_at=_now())
            )
