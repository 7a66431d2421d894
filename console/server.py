"""The console's server: uvicorn in a thread of its own, started like a channel.

`start()` binds the socket itself (a bad address fails there, port 0 is known at once) and
returns once uvicorn serves; `stop()` lets requests in progress finish, bounded. HTTPS when
`console.tls_cert` and `tls_key` are set. No access log (cookies never reach a log), no signal
handlers (the daemon owns the signals), the daemon's logging left as it is.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from console.context import ConsoleContext
from ingest.errors import ReturnsdError
from ingest.users import ensure_users

log = logging.getLogger("returnsd.console")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


class ConsoleError(ReturnsdError):
    """The console could not start (address, cause)."""


class ConsoleServer:
    """The web console on its own listen address."""

    name = "console"

    def __init__(self, ctx: ConsoleContext) -> None:
        self.ctx = ctx
        self.port = ctx.options.port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """The console's base URL (the real port once started)."""
        scheme = "https" if self.ctx.tls else "http"
        return f"{scheme}://{self.ctx.options.host}:{self.port}"

    def start(self) -> None:
        """Create the configured users, then serve; return once serving or raise ConsoleError."""
        made = ensure_users(self.ctx.store, self.ctx.options.users)
        if made:
            log.info("console users created from the config: %s", ", ".join(made))
        sock = self._bind()
        self.port = sock.getsockname()[1]
        self._server = _make_server(self.ctx)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="console")
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            sock.close()
            raise ConsoleError(f"console: cannot serve on {self.url}: "
                               f"{self._failure or 'did not start in time'}")  # fmt: skip
        log.info("console listening on %s", self.url)

    def _bind(self) -> socket.socket:
        host = self.ctx.options.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.ctx.options.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConsoleError(f"console: cannot listen on {self.url}: {exc}") from exc
        return sock

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn calls sys.exit on a startup failure
            self._failure = exc
            log.exception("console stopped with an error")

    def stop(self) -> None:
        """Stop accepting, let requests in progress finish (bounded), join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join()
        self._server = None
        self._thread = None


def _make_server(ctx: ConsoleContext) -> Any:
    import uvicorn

    from console.app import build_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the daemon handles SIGTERM/SIGINT

    opts = ctx.options
    tls: dict[str, Any] = {}
    if ctx.tls:
        tls = {"ssl_certfile": str(opts.tls_cert), "ssl_keyfile": str(opts.tls_key)}
    config = uvicorn.Config(
        build_app(ctx), log_config=None, access_log=False, lifespan="off",
        limit_concurrency=200, timeout_keep_alive=5, timeout_graceful_shutdown=10,
        server_header=False, **tls,
    )  # fmt: skip
    return _Server(config)
