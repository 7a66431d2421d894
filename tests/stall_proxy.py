"""A TCP relay that freezes a transfer midway: the client sees a stalled server."""

from __future__ import annotations

import contextlib
import socket
import threading

HOST = "127.0.0.1"


class FreezingProxy:
    """A TCP relay to 127.0.0.1:`upstream` that, on its first `freeze` connections, stops passing
    the server's bytes once `limit` of them went through (the client sees a stalled transfer)."""

    def __init__(self, upstream: int, limit: int, freeze: int) -> None:
        self.upstream = upstream
        self.limit = limit
        self.freeze = freeze
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0
        self.frozen = 0
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = [self.listener]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection((HOST, self.upstream))
            self.sockets += [client, server]
            limit = self.limit if self.connections <= self.freeze else None
            for args in ((client, server, None), (server, client, limit)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        while not self.stop.is_set():
            try:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    self.frozen += 1
                    self.stop.wait()  # hold the bytes until the proxy closes
                    break
                dst.sendall(data)
                sent += len(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop relaying, close every socket and join every thread."""
        self.stop.set()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for thread in self.threads:
            thread.join(5)
