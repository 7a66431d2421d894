"""Console users: add, list, disable, change passwords, check a login (throttled).

Passwords are scrypt hashes (ingest.passwords). An operator sees every campaign; an advertiser
only the campaigns listed on their user. Failed logins are counted per login and per address in
a sliding window; past the limit a login is refused without checking the password.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from ingest import tables as t
from ingest.passwords import hash_password, verify_login
from ingest.store import Store

ROLES = ("operator", "advertiser")


@dataclass(frozen=True)
class User:
    """A console user as the pages see them."""

    id: int
    login: str
    role: str
    campaigns: tuple[str, ...]
    name: str | None = None
    email: str | None = None
    disabled: bool = False

    @property
    def is_operator(self) -> bool:
        """True for platform staff (every campaign, CPC override, reprocess)."""
        return self.role == "operator"

    @property
    def scope(self) -> list[str] | None:
        """The campaigns this user may see, for ingest.queries (None: every campaign)."""
        return None if self.is_operator else list(self.campaigns)

    def sees(self, campaign_id: str) -> bool:
        """May this user see (and change) that campaign?"""
        return self.is_operator or campaign_id in self.campaigns


def _user(r: Any) -> User:
    m = r._mapping
    camps = m["campaigns"]
    if isinstance(camps, str):
        import json

        camps = json.loads(camps)
    return User(m["id"], m["login"], m["role"], tuple(camps or ()), m["name"], m["email"],
                bool(m["disabled"]))  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)


def add_user(
    store: Store,
    login: str,
    password_hash: str,
    role: str,
    campaigns: Sequence[str] = (),
    *,
    name: str | None = None,
    email: str | None = None,
) -> User:
    """Create a user from a password hash; ValueError when the login exists or the role is bad."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not login or len(login) > 64:
        raise ValueError("a login is 1 to 64 characters")
    with store.begin() as conn:
        if conn.scalar(select(t.users.c.id).where(t.users.c.login == login)) is not None:
            raise ValueError(f"user {login!r} exists already")
        now = _now()
        conn.execute(
            t.users.insert(),
            {"login": login, "name": name, "role": role, "campaigns": list(campaigns),
             "email": email, "password_hash": password_hash, "disabled": 0, "created_at": now,
             "password_changed_at": now},
        )  # fmt: skip
        return _user(conn.execute(select(t.users).where(t.users.c.login == login)).one())


def ensure_users(store: Store, configured: Mapping[str, Any]) -> list[str]:
    """Create the config's users that do not exist yet (existing ones are left as they are)."""
    made = []
    for login, u in configured.items():
        if get_user(store, login) is None:
            add_user(store, login, u.password_hash, u.role, u.campaigns, name=u.name,
                     email=u.email)  # fmt: skip
            made.append(login)
    return made


def get_user(store: Store, login: str) -> User | None:
    """The user with this login, or None."""
    with store.read() as conn:
        found = conn.execute(select(t.users).where(t.users.c.login == login)).first()
    return _user(found) if found else None


def user_by_id(conn: Connection, user_id: int) -> User | None:
    """The user with this id, or None."""
    found = conn.execute(select(t.users).where(t.users.c.id == user_id)).first()
    return _user(found) if found else None


def list_users(store: Store) -> list[User]:
    """Every user, by login."""
    with store.read() as conn:
        return [_user(r) for r in conn.execute(select(t.users).order_by(t.users.c.login))]


def set_disabled(store: Store, login: str, disabled: bool = True) -> bool:
    """Disable (or enable) a user; disabling ends their sessions. False: no such user."""
    with store.begin() as conn:
        done = conn.execute(
            update(t.users).where(t.users.c.login == login).values(disabled=int(disabled))
        )
        if done.rowcount and disabled:
            _revoke_sessions(conn, login)
    return bool(done.rowcount)


def set_password(store: Store, login: str, password: str) -> bool:
    """Set a new password and end the user's sessions. False: no such user."""
    with store.begin() as conn:
        done = conn.execute(
            update(t.users)
            .where(t.users.c.login == login)
            .values(password_hash=hash_password(password), password_changed_at=_now())
        )
        if done.rowcount:
            _revoke_sessions(conn, login)
    return bool(done.rowcount)


def _revoke_sessions(conn: Connection, login: str) -> None:
    uid = select(t.users.c.id).where(t.users.c.login == login).scalar_subquery()
    conn.execute(
        update(t.sessions)
        .where(t.sessions.c.user_id == uid, t.sessions.c.revoked_at.is_(None))
        .values(revoked_at=_now())
    )


class LoginResult(StrEnum):
    """What a login attempt came to."""

    OK = "ok"
    BAD = "bad"  # wrong login or password (never says which)
    THROTTLED = "throttled"  # too many failures for this login or address: wait
    DISABLED = "disabled"


@dataclass(frozen=True)
class LoginThrottle:
    """Failed-login limits in a sliding window, per login and per client address."""

    window: timedelta
    per_login: int
    per_address: int

    def blocked(self, conn: Connection, login: str, address: str) -> bool:
        """True when this login or this address failed too often within the window."""
        a = t.login_attempts.c
        since = _now() - self.window
        fails = select(func.count()).where(a.ok == 0, a.at >= since)
        by_login = conn.scalar(fails.where(a.login == login[:64])) or 0
        by_addr = conn.scalar(fails.where(a.address == address[:64])) or 0
        return by_login >= self.per_login or by_addr >= self.per_address


def check_login(
    store: Store, throttle: LoginThrottle, login: str, password: str, address: str
) -> tuple[LoginResult, User | None]:
    """Check a login; every attempt is recorded, a success clears that login's failures."""
    with store.read() as conn:
        if throttle.blocked(conn, login, address):
            return LoginResult.THROTTLED, None
        row = conn.execute(select(t.users).where(t.users.c.login == login)).first()
    ok = verify_login(password, row.password_hash if row else None)
    user = _user(row) if row else None
    result = LoginResult.OK if ok else LoginResult.BAD
    if ok and user is not None and user.disabled:
        result = LoginResult.DISABLED
    with store.begin() as conn:
        a = t.login_attempts.c
        if result == LoginResult.OK:
            conn.execute(delete(t.login_attempts).where(a.login == login, a.ok == 0))
        conn.execute(t.login_attempts.insert(), {
            "login": login[:64], "address": address[:64], "ok": int(result == LoginResult.OK),
            "at": _now()})  # fmt: skip
        conn.execute(delete(t.login_attempts).where(a.at < _now() - 4 * throttle.window))
    return result, (user if result == LoginResult.OK else None)
