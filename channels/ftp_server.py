"""pyftpdlib glue for the hosted FTP channel: the server, its jail, its permissions, its wake-up.

Each `build_server` call makes fresh handler subclasses carrying that server's options, so no
class attribute of pyftpdlib itself is ever changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyftpdlib.exceptions import AuthenticationFailed, FilesystemError
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.ioloop import AsyncChat, IOLoop
from pyftpdlib.servers import FTPServer

from channels.ftp_data import Dtp
from channels.ftp_session import Session
from channels.ftp_store import RESULTS, DropBox, FtpServerState
from ingest.config import FtpOptions

log = logging.getLogger(f"returnsd.{__name__}")

ALL_PERMS = "elradfw"
BANNER = "returnsd FTP server ready."
LOGIN_MESSAGE = "Logged in. Upload to /, replies appear in /results."


class Waker(AsyncChat):
    """A socket pair in the IO loop: other threads post callables that the loop then runs."""

    def __init__(self, ioloop: Any) -> None:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        super().__init__(self._reader, ioloop=ioloop)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the IO loop as soon as possible (safe from any thread)."""
        self._calls.put(fn)
        # OSError: buffer full (a wake-up is pending anyway) or closed (the loop is gone)
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def handle_read(self) -> None:
        """Drain the wake-up bytes, then run every posted callable."""
        with contextlib.suppress(BlockingIOError):
            self._reader.recv(4096)
        while not self._closed:
            try:
                fn = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:
                log.exception("ftp: error in a deferred call")

    def writable(self) -> bool:
        """Never waits to write."""
        return False

    def close(self) -> None:
        """Close both ends of the pair."""
        super().close()
        self._writer.close()


class JailedFS(AbstractedFS):
    """pyftpdlib's virtual file system, minus the process-wide `os.chdir` on CWD."""

    def open(self, filename: str, mode: str) -> Any:
        """Open a file; uploads unbuffered, so a full disk fails the write that hit it (452)
        instead of a flush at close, after the data connection is gone."""
        if "w" in mode or "a" in mode:
            return open(filename, mode, buffering=0)
        return open(filename, mode)

    def chdir(self, path: str) -> None:
        """Change the session's working folder without touching the process's."""
        if not os.path.isdir(path):
            raise FilesystemError("No such directory")
        self.cwd = self.fs2ftp(path)


class Authorizer:
    """Per-path permissions: upload/rename/delete in the home root, read/delete in results/."""

    def __init__(self, boxes: dict[str, DropBox]) -> None:
        self._homes = {login: os.path.realpath(box.home) for login, box in boxes.items()}

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        """Whether `username` may do `perm` (pyftpdlib letters) on the real path `path`."""
        home = self._homes.get(username)
        if home is None:
            return False
        if path is None:
            return perm in ALL_PERMS
        return perm in _perms_at(home, os.path.realpath(path))

    def get_perms(self, username: str) -> str:
        """Every permission letter the user may have somewhere."""
        return ALL_PERMS

    def get_home_dir(self, username: str) -> str:
        """The user's real home folder."""
        return self._homes[username]

    def has_user(self, username: str) -> bool:
        """Whether the login exists."""
        return username in self._homes

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        """Never used: the session checks passwords off the IO loop."""
        raise AuthenticationFailed("Authentication failed.")

    def get_msg_login(self, username: str) -> str:
        """Text of the 230 reply."""
        return LOGIN_MESSAGE

    def get_msg_quit(self, username: str) -> str:
        """Text of the 221 reply."""
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        """Nothing to do: every campaign's files belong to the daemon's own user."""

    def terminate_impersonation(self, username: str) -> None:
        """Nothing to do (see impersonate_user)."""


def _perms_at(home: str, real: str) -> str:
    if real != home and not real.startswith(home + os.sep):
        return ""
    parts = Path(os.path.relpath(real, home)).parts if real != home else ()
    if len(parts) == 0 or parts == (RESULTS,):
        return "el"
    if len(parts) == 1:
        return "lwadf"
    if len(parts) == 2 and parts[0] == RESULTS:
        return "lrd"
    return ""


class Server(FTPServer):
    """FTPServer whose connection limit counts control connections only."""

    def _accept_new_cons(self) -> bool:
        return bool(len(self.ip_map) <= self.max_cons)


def build_server(
    state: FtpServerState, opts: FtpOptions, tls_context: Any | None
) -> tuple[Any, Waker]:
    """Bind on a new IO loop with per-instance handler classes; OSError if it cannot."""
    dtp_attrs = {
        "max_bytes": state.ctx.settings.limits.max_file_bytes,
        "timeout": opts.idle_timeout,
    }
    if tls_context is None:
        dtp: type = type("ReturnsdDtp", (Dtp,), dtp_attrs)
        bases: tuple[type, ...] = (Session,)
    else:
        from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

        dtp = type("ReturnsdTlsDtp", (TLS_DTPHandler, Dtp), dtp_attrs)
        bases = (Session, TLS_FTPHandler)
    handler = type("ReturnsdSession", bases, _session_attrs(state, opts, dtp, tls_context))
    ioloop = IOLoop()
    try:
        server = Server((opts.host, opts.port), handler, ioloop=ioloop)
    except BaseException:
        ioloop.close()
        raise
    server.max_cons = opts.max_connections
    server.max_cons_per_ip = opts.max_connections_per_ip
    waker = Waker(ioloop)
    state.call_soon = waker.call_soon
    return server, waker


def _session_attrs(
    state: FtpServerState, opts: FtpOptions, dtp: type, tls: Any | None
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "server_state": state,
        "authorizer": Authorizer(state.boxes),
        "abstracted_fs": JailedFS,
        "dtp_handler": dtp,
        "timeout": opts.idle_timeout,
        "banner": BANNER,
        "max_login_attempts": opts.max_login_attempts,
        "auth_failed_timeout": state.login_delay,
        "masquerade_address": opts.masquerade_address,
        "permit_foreign_addresses": False,
        "permit_privileged_ports": False,
    }
    if opts.passive_ports:
        attrs["passive_ports"] = list(range(opts.passive_ports[0], opts.passive_ports[1] + 1))
    if tls is not None:
        attrs.update(ssl_context=tls, tls_control_required=True, tls_data_required=True)
    return attrs


def tls_context(cert: Path, key: Path) -> Any:
    """A TLS ≥ 1.2 server context from a PEM certificate chain and key; OpenSSL.SSL.Error if bad."""
    from OpenSSL import SSL

    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    ctx.use_certificate_chain_file(str(cert))
    ctx.use_privatekey_file(str(key))
    ctx.check_privatekey()
    return ctx
