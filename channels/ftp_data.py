"""The data connection of the hosted FTP channel: tells a complete upload from a cut-off one.

pyftpdlib counts any close of the data socket as a complete upload (its issues #461, #311: a
client killed halfway through is reported as `on_file_received`). This handler calls an upload
cut off, and never lets it be stored, when:
- the client sent ABOR (pyftpdlib closes the data channel; the session sees it),
- the connection was reset (ECONNRESET on recv, or a pending SO_ERROR at close),
- over TLS, the connection ended without a close_notify alert (TLS requires one before closing:
  RFC 5246 §7.2.1, RFC 8446 §6.1; curl, ftplib and lftp send it, FileZilla fails transfers
  without it) — a killed client or a cut network never sends it,
- no byte arrived for `idle_timeout` seconds, the socket or the file failed, or the size limit
  was passed (552).
A clean end replies nothing here: the session answers once the file is stored.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from typing import Any, ClassVar

from pyftpdlib.handlers import DTPHandler

log = logging.getLogger(f"returnsd.{__name__}")

DISCONNECTED = frozenset(
    {errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED, errno.EPIPE}
)
TOO_LARGE_REASON = "over the size limit"


class Dtp(DTPHandler):
    """A data connection that tells a complete upload from one that was cut off."""

    max_bytes: ClassVar[int] = 0
    _resp: tuple[Any, ...]
    cut_reason: str | None = None
    ended_with_close_notify = False  # a TLS upload whose end the client confirmed

    def recv(self, buffer_size: int) -> bytes:
        """Read like asyncore, but remember a reset instead of passing it off as an end of file."""
        try:
            data: bytes = self.socket.recv(buffer_size)
        except OSError as exc:
            if exc.errno not in DISCONNECTED:
                raise
            self.cut_reason = f"data connection lost ({os.strerror(exc.errno)})"
            data = b""
        if not data:
            self.handle_close()
        return data

    def handle_read(self) -> None:
        """Receive a chunk; abort with 552 once the upload passes the size limit."""
        super().handle_read()
        if self.receive and not self._closed and self.tot_bytes_received > self.max_bytes:
            self.cut_reason = TOO_LARGE_REASON
            limit = f"{self.max_bytes:,}"
            self._resp = (f"552 File is over the {limit}-byte limit; nothing was stored.", log.info)
            self.close()

    handle_read_event = handle_read  # DTPHandler aliases the base method; point it at ours

    def handle_close(self) -> None:
        """The peer closed: a clean end of an upload replies later; anything else is a cut-off."""
        if self._closed or not self.receive:
            super().handle_close()
            return
        self.cut_reason = self.cut_reason or self._end_problem()
        if self.cut_reason:
            msg = f"426 Transfer aborted: {self.cut_reason}; nothing was stored."
            self._resp = (msg, log.info)
        else:
            self.transfer_finished = True
            self._resp = ()  # the session answers once the file is stored
        self.close()

    def handle_timeout(self) -> None:
        """Mark a stalled upload as cut off before pyftpdlib closes it."""
        if self.get_transmitted_bytes() <= self._lastdata:
            self.cut_reason = self.cut_reason or "the data connection stalled"
        super().handle_timeout()

    def handle_error(self) -> None:
        """Mark the upload as cut off; a full disk answers 452, anything else pyftpdlib's 426."""
        exc = sys.exc_info()[1]
        cause = exc.__cause__ if exc is not None and exc.__cause__ is not None else exc
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            self.cut_reason = "no space left on the server"
            self._resp = ("452 Insufficient storage space; nothing was stored.", log.warning)
            self.close()
            return
        self.cut_reason = self.cut_reason or "data connection error"
        super().handle_error()

    def _end_problem(self) -> str | None:
        sock = self.socket
        if hasattr(sock, "get_shutdown"):  # TLS: a clean end carries close_notify
            from OpenSSL import SSL

            if not sock.get_shutdown() & SSL.RECEIVED_SHUTDOWN:
                return "the TLS data connection ended without close_notify"
            self.ended_with_close_notify = True
            return None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if sock else 0
        return f"data connection lost ({os.strerror(err)})" if err else None
