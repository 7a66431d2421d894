"""One daemon per SQLite database: an exclusive `fcntl` lock on a file next to the database.

The kernel drops the lock when the process ends, however it ends (exit, SIGTERM, kill -9, power
loss), so a lock left behind by a dead daemon is never in the way: only a live holder refuses a
second daemon. The lock file keeps the holder's host and pid, for the message.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ingest.errors import ConfigError


class AlreadyRunning(ConfigError):
    """Another returnsd daemon already runs on this SQLite database."""


def lock_path(database: Path) -> Path:
    """The lock file of an SQLite database: `<database>.daemon.lock`."""
    return database.with_name(database.name + ".daemon.lock")


class SingleNodeLock:
    """Held while `returnsd run` works on an SQLite database; `release` (or exit) frees it."""

    def __init__(self, database: Path) -> None:
        self.path = lock_path(database)
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise AlreadyRunning naming the daemon that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise AlreadyRunning(
                f"another returnsd daemon ({holder}) already runs on this SQLite database "
                f"(lock {self.path}); SQLite is single-node: stop it first, or use PostgreSQL "
                "with `cluster: {enabled: true}` to run several nodes"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Free the lock (the file stays: removing it would race with a daemon starting)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
