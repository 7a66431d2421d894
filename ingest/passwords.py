"""Password and token hashing (scrypt from the standard library); plain secrets are never stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 2**14, 8, 1
PREFIX = "scrypt"
# The hash of a random password nobody knows: checking an unknown login against it costs the same
# scrypt run as a known one, so the time of the answer does not tell which logins exist.
DUMMY_HASH = (
    "scrypt$16384$8$1$5NpZ9PkA8VakCBG9kAug5w==$pztR/KP+cFbQOZAtMW/2n1/kAQVBDVB9oy2Hs7NADCQ="
)


def hash_password(password: str) -> str:
    """Hash a password or token as `scrypt$N$r$p$salt$hash` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return "$".join((PREFIX, str(N), str(R), str(P), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the stored hash (constant-time compare); False if malformed."""
    try:
        prefix, n, r, p, salt, digest = stored.split("$")
        if prefix != PREFIX:
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(base64.b64decode(digest)),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def verify_login(password: str, stored: str | None) -> bool:
    """True when the login exists (`stored` is its hash) and the password matches; same cost."""
    return verify_password(password, stored or DUMMY_HASH) and stored is not None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
