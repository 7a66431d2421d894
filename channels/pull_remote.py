"""The small transport interface the scheduled pull talks to (SFTP or FTP/FTPS), and its errors.

A `Remote` lists one folder as (name, size, mtime), gets a file into a binary stream, deletes,
renames into another folder, and puts a file (under a temporary name, then renamed). Transports
translate their library's exceptions at the edge into three types: `PullTransient` (try the whole
session again later), `PullRefused` (host key, login or TLS refused: never retried) and
`RemoteFileError` (this one file cannot be read or moved; the others go on).
"""

from __future__ import annotations

import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import TracebackType
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from channels.names import is_reserved_name, is_temp_name
from ingest.config import PullSource
from ingest.errors import Terminal, Transient

DEFAULT_PORTS = {"sftp": 22, "ftp": 21, "ftps": 21}


class PullTransient(Transient):
    """The connection failed, timed out or dropped: the session may succeed if tried again."""


class PullRefused(Terminal):
    """The server was refused (host key, TLS) or refused us (login): trying again will not help."""


class RemoteFileError(Terminal):
    """One remote file cannot be read, deleted or moved; the rest of the session goes on."""


@dataclass(frozen=True)
class RemoteFile:
    """A regular file of the remote folder as listed: name, size in bytes, mtime (epoch s)."""

    name: str
    size: int
    mtime: int


@dataclass(frozen=True)
class PullTarget:
    """Where to pull from, parsed from the configured URL."""

    scheme: str
    host: str
    port: int
    folder: str

    @property
    def display(self) -> str:
        """The URL without any user information, safe to log and print."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        folder = self.folder if self.folder.startswith("/") else f"/~/{self.folder}"
        return f"{self.scheme}://{host}:{self.port}{folder}"

    def path(self, name: str, folder: str | None = None) -> str:
        """The remote path of `name` in `folder` (default: the pulled folder)."""
        return join(self.folder if folder is None else folder, name)

    def subfolder(self, spec: str) -> str:
        """A configured folder (`move:done`, results_folder), relative to the pulled one."""
        return spec if spec.startswith("/") else join(self.folder, spec)


def parse_url(url: str) -> PullTarget:
    """Parse `sftp://host[:port]/folder`, `ftp://…` or `ftps://…`.

    SFTP paths are absolute (`/~/x` means `x` in the login's home), as with curl; FTP paths are
    relative to the login folder (RFC 1738), `//x` meaning `/x`.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise PullRefused(
            f"unsupported pull URL {url!r}: use sftp://, ftp:// or ftps://host/folder"
        )
    path = parts.path or ""
    if scheme == "sftp":
        folder = path[3:] if path.startswith("/~/") else ("." if path in ("", "/~") else path)
    else:
        folder = path[1:] if path.startswith("/") else path
    return PullTarget(scheme, parts.hostname, parts.port or DEFAULT_PORTS[scheme], folder or ".")


def join(folder: str, name: str) -> str:
    """Join a remote folder and a name (`.` or empty means the login folder)."""
    return name if folder in ("", ".") else posixpath.join(folder, name)


def is_candidate(name: str, pattern: str) -> bool:
    """True when `name` matches the pattern and is neither a temporary upload nor a reply file."""
    if is_temp_name(name) or is_reserved_name(name):
        return False
    return fnmatchcase(name, pattern)


class Remote(Protocol):
    """One open session on the advertiser's server, rooted at the pulled folder."""

    target: PullTarget

    def list(self) -> list[RemoteFile]:
        """The regular files in the pulled folder."""

    def get(self, name: str, out: BinaryIO, progress: Callable[[int], None]) -> None:
        """Write the file's bytes to `out`, calling `progress(bytes_so_far)` as they arrive."""

    def delete(self, name: str) -> None:
        """Remove a file of the pulled folder."""

    def move(self, name: str, folder: str) -> None:
        """Rename a file of the pulled folder into `folder` (created if missing)."""

    def put(self, folder: str, name: str, data: bytes) -> None:
        """Write `data` as `folder/name` (created if missing) via a temporary name and a rename."""

    def abort(self) -> None:
        """Break the connection from another thread so that a blocked call returns."""

    def close(self) -> None:
        """End the session politely."""


def open_remote(source: PullSource, timeout: float, prefetch_requests: int) -> Remote:
    """Connect and log in to the configured server; the transport library loads only when used."""
    target = parse_url(source.url)
    if target.scheme == "sftp":
        from channels.pull_sftp import connect_sftp

        return connect_sftp(source, target, timeout, prefetch_requests)
    from channels.pull_ftp import connect_ftp

    return connect_ftp(source, target, timeout)


def source_problems(source: PullSource) -> list[str]:
    """Why this pull source cannot work (unreadable secret, bad key or URL), without connecting."""
    problems = []
    for what, secret in (("password", source.password), ("private_key", source.private_key)):
        problem = secret.problem() if secret is not None else None
        if problem:
            problems.append(f"pull.{what}: {problem}")
    if problems:
        return problems
    try:
        target = parse_url(source.url)
        if target.scheme == "sftp":
            from channels.pull_sftp import load_private_key, parse_host_key

            parse_host_key(source.host_key or "")
            if source.private_key is not None:
                load_private_key(source.private_key.reveal())
        elif source.password is None:
            problems.append(f"pull: {target.scheme}:// needs a password")
    except PullRefused as exc:
        problems.append(f"pull: {exc}")
    return problems


class Watchdog:
    """Calls `on_stall` once when no progress was reported for `seconds` (used around each get)."""

    def __init__(self, seconds: float, on_stall: Callable[[], None]) -> None:
        self.seconds = seconds
        self.on_stall = on_stall
        self.fired = False
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pull-watchdog", daemon=True)

    def progress(self, _done: int = 0) -> None:
        """Note that bytes arrived."""
        self._last = time.monotonic()

    def __enter__(self) -> Watchdog:
        self._last = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        step = min(0.1, self.seconds / 4)
        while not self._done.wait(step):
            if time.monotonic() - self._last > self.seconds:
                self.fired = True
                self.on_stall()
                return
