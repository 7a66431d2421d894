"""HTTP upload API channel: a FastAPI app served by uvicorn in a thread of its own.

The listening socket is bound in `start()` itself, so a bad address fails there with the OS's
reason, and port 0 is known at once. uvicorn runs without its logging config (the daemon's logging
stays as it is), without an access log (request lines are not needed: every file event is logged,
and headers, i.e. tokens, never are) and without signal handlers (the daemon owns the signals).
Routes and status codes: see `channels.http_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from ssl import CERT_OPTIONAL
from typing import TYPE_CHECKING, Any, ClassVar

from channels.base import ChannelContext, ChannelError
from channels.connections import PerAddressCap
from channels.salesforce import PEER_CERT
from ingest.config import HttpOptions
from ingest.results import FileOutcome

if TYPE_CHECKING:
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol as _H11Base
else:
    _H11Base = object  # uvicorn is imported only when a server starts

log = logging.getLogger(f"returnsd.{__name__}")

START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0
MAX_CONNECTIONS = 100


class HttpApiChannel:
    """The HTTP upload API (bearer token per campaign; upload, status, result; OpenAPI)."""

    name: ClassVar[str] = "http"

    def __init__(self, ctx: ChannelContext) -> None:
        self.ctx = ctx
        self.options: HttpOptions = ctx.settings.channels.http or HttpOptions(port=0)
        self.port = self.options.port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def address(self) -> str:
        """host:port the API listens on (the real port once started)."""
        return f"{self.options.host}:{self.port}"

    def start(self) -> None:
        """Serve; return once uvicorn accepts requests, or raise ChannelError (address, cause)."""
        sock = self._bind()
        self.port = sock.getsockname()[1]
        server = _make_server(self.ctx, self.options)
        self._server = server
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="http-api")
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            self.stop()
            sock.close()
            cause = self._failure or "did not start in time"
            raise ChannelError(f"http: cannot serve on {self.address}: {cause}")
        log.info("http API listening on %s", self.address)

    def _bind(self) -> socket.socket:
        host = self.options.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it every keep-alive response waits ~40 ms (Nagle + delayed ACK).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.options.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ChannelError(f"http: cannot listen on {self.address}: {exc}") from exc
        return sock

    def _serve(self, sock: socket.socket) -> None:
        assert self._server is not None
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # uvicorn calls sys.exit on startup failure
            self._failure = exc
            log.exception("http API stopped with an error")

    def stop(self) -> None:
        """Stop accepting, let requests in progress finish (bounded), and join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join()
        self._server = None
        self._thread = None

    def deliver(self, outcome: FileOutcome) -> bool:
        """Nothing to push: API clients poll the status and result endpoints."""
        return True


def _make_server(ctx: ChannelContext, options: HttpOptions) -> uvicorn.Server:
    import uvicorn

    from channels.http_app import build_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the daemon, not the API thread, handles SIGTERM/SIGINT

    config = uvicorn.Config(
        build_app(ctx, options.public_url),
        log_config=None,
        access_log=False,
        lifespan="off",
        limit_concurrency=MAX_CONNECTIONS,
        http=_limited_protocol(options.max_connections_per_ip, options.header_timeout),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        server_header=False,
        **_tls(ctx, options),
    )
    return _Server(config)


def _tls(ctx: ChannelContext, options: HttpOptions) -> dict[str, Any]:
    """uvicorn's TLS options: HTTPS with a certificate; client certificates asked for (and
    verified against `tls_client_ca` when one is sent) but optional, so each route decides."""
    if options.tls_cert is None:
        return {}
    path = ctx.settings.path
    extra: dict[str, Any] = {"ssl_certfile": str(path(options.tls_cert))}
    if options.tls_key is not None:
        extra["ssl_keyfile"] = str(path(options.tls_key))
    if options.tls_client_ca is not None:
        extra |= {"ssl_ca_certs": str(path(options.tls_client_ca)), "ssl_cert_reqs": CERT_OPTIONAL}
    return extra


DRAIN_SECONDS = 2.0  # how long a turned-away client may go on sending before it is closed
BUSY_BODY = (
    b'{"detail":"too many connections from your address; retry after the pause",'
    b'"code":"TOO_MANY_CONNECTIONS"}'
)
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
    b"Content-Length: "
    + str(len(BUSY_BODY)).encode()
    + b"\r\nConnection: close\r\n\r\n"
    + BUSY_BODY
)


class _PerAddressLimits(_H11Base):
    """The per-address cap and the header deadline, mixed in before uvicorn's H11Protocol."""

    _cap: PerAddressCap  # set per server by `_limited_protocol`
    _header_timeout: float
    _ip: str | None = None
    _deadline: asyncio.TimerHandle | None = None
    _turned_away = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ip = str(self.client[0]) if self.client else "?"
        if not self._cap.admit(ip):
            self._turn_away(transport)
            return
        self._ip = ip
        self._deadline = self.loop.call_later(self._header_timeout, self._headers_overdue)
        tls = transport.get_extra_info("ssl_object")
        peer = tls.getpeercert(binary_form=True) if tls is not None else None
        if peer:  # each request's state gets the verified client certificate (DER)
            self.app_state = {**self.app_state, PEER_CERT: peer}

    def _turn_away(self, transport: asyncio.Transport) -> None:
        self._turned_away = True
        self.connections.discard(self)  # holds no place under uvicorn's shared limit
        transport.write(BUSY_RESPONSE)
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the answer, then an end of stream
        drain = min(self._header_timeout, DRAIN_SECONDS)
        self._deadline = self.loop.call_later(drain, transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._turned_away:
            super().data_received(data)

    def eof_received(self) -> None:
        if self._turned_away:
            self.transport.close()
            return
        super().eof_received()

    def _headers_overdue(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()  # no complete request yet: a slow or idle client

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._ip is not None:
            self._cap.release(self._ip)
            self._ip = None
        super().connection_lost(exc)


def _limited_protocol(per_ip: int, header_timeout: float) -> type:
    """uvicorn's HTTP/1.1 protocol with a per-address connection cap and a deadline for headers.

    uvicorn shares `limit_concurrency` among everyone and waits forever for a first request, so
    one address with idle connections could starve every other client. A connection over the cap
    is answered `503` with `Retry-After` at once; its request is read and dropped until the client
    closes (closing a socket with unread bytes would send the client a reset instead of the
    answer). A class per server keeps the counts out of module state.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class LimitedH11Protocol(_PerAddressLimits, H11Protocol):
        _cap = PerAddressCap(per_ip)  # only touched on the server's event loop
        _header_timeout = header_timeout

    return LimitedH11Protocol
