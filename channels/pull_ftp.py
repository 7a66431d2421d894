"""The FTP / FTPS transport of the scheduled pull (ftplib), behind the same `Remote` interface.

FTPS is explicit TLS (AUTH TLS) with the certificate checked against the system's trust store
(`SSL_CERT_FILE` can point elsewhere) and `PROT P` so that data connections are encrypted too.
Listing uses MLSD (exact size and UTC mtime); servers without it get NLST + SIZE + MDTM.
"""

from __future__ import annotations

import calendar
import ftplib
import io
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

from channels.pull_remote import (
    PullRefused,
    PullTarget,
    PullTransient,
    RemoteFile,
    RemoteFileError,
)
from ingest.config import PullSource


class _Ftp(ftplib.FTP):
    """FTP that remembers its open data socket, so a watchdog can break a stalled transfer."""

    data_sock: socket.socket | None = None

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        """Open the data connection and keep a handle on it."""
        conn, size = super().ntransfercmd(cmd, rest)
        self.data_sock = conn
        return conn, size


class _FtpTls(ftplib.FTP_TLS):
    """FTP_TLS that remembers its open data socket, like `_Ftp`."""

    data_sock: socket.socket | None = None

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        """Open the (TLS) data connection and keep a handle on it."""
        conn, size = super().ntransfercmd(cmd, rest)
        self.data_sock = conn
        return conn, size


def connect_ftp(source: PullSource, target: PullTarget, timeout: float) -> FtpRemote:
    """Connect, start TLS and check the certificate (ftps), log in; `timeout` on every socket."""
    if source.password is None:
        raise PullRefused(f"{target.scheme} pulls need a password (private_key is for sftp)")
    password = source.password.reveal()
    ftp: _Ftp | _FtpTls
    if target.scheme == "ftps":
        ftp = _FtpTls(context=ssl.create_default_context(), timeout=timeout)
    else:
        ftp = _Ftp(timeout=timeout)
    try:
        with _translated(f"{source.user}@{target.host}", login=True):
            ftp.connect(target.host, target.port, timeout=timeout)
            ftp.login(source.user, password)
            if isinstance(ftp, _FtpTls):
                ftp.prot_p()
            ftp.voidcmd("TYPE I")
    except BaseException:
        ftp.close()
        raise
    return FtpRemote(target, ftp)


@contextmanager
def _translated(what: str, *, login: bool = False) -> Iterator[None]:
    """Turn ftplib, ssl and socket errors into the pull's three error types."""
    try:
        yield
    except (PullRefused, PullTransient, RemoteFileError):
        raise
    except ssl.SSLCertVerificationError as exc:
        raise PullRefused(f"TLS certificate of {what} refused: {exc.verify_message}") from exc
    except ftplib.error_perm as exc:
        if login:
            raise PullRefused(f"login refused for {what}: {exc}") from exc
        raise RemoteFileError(f"{what}: {exc}") from exc
    except (ftplib.Error, OSError, EOFError) as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        raise PullTransient(f"ftp session with {what} failed: {detail}") from exc


def _mtime(stamp: str) -> int:
    """Epoch seconds of an MLSD/MDTM time `YYYYMMDDHHMMSS[.fff]` (UTC)."""
    return calendar.timegm(time.strptime(stamp[:14], "%Y%m%d%H%M%S"))


def _list_by_nlst(ftp: ftplib.FTP, target: PullTarget) -> list[RemoteFile]:
    """List a folder on a server without MLSD: NLST, then SIZE and MDTM for each name."""
    found = []
    for entry in ftp.nlst(target.folder):
        name = entry.rsplit("/", 1)[-1]
        try:
            size = ftp.size(target.path(name))
            stamp = ftp.sendcmd(f"MDTM {target.path(name)}").split()[-1]
        except ftplib.error_perm:
            continue  # a folder, or a file we may not read
        found.append(RemoteFile(name, size or 0, _mtime(stamp)))
    return found


class FtpRemote:
    """An FTP(S) session rooted at the pulled folder."""

    def __init__(self, target: PullTarget, ftp: _Ftp | _FtpTls) -> None:
        self.target = target
        self.ftp = ftp

    def list(self) -> list[RemoteFile]:
        """The regular files in the pulled folder."""
        with _translated(self.target.folder):
            try:
                facts = list(self.ftp.mlsd(self.target.folder, facts=["type", "size", "modify"]))
            except ftplib.error_perm:
                return _list_by_nlst(self.ftp, self.target)
        return [
            RemoteFile(name, int(f.get("size", 0)), _mtime(f.get("modify", "19700101000000")))
            for name, f in facts
            if f.get("type") == "file"
        ]

    def get(self, name: str, out: BinaryIO, progress: Callable[[int], None]) -> None:
        """Download in binary mode, reporting progress per block."""
        done = 0

        def write(block: bytes) -> None:
            nonlocal done
            out.write(block)
            done += len(block)
            progress(done)

        with _translated(self.target.path(name)):
            self.ftp.retrbinary(f"RETR {self.target.path(name)}", write, blocksize=256 * 1024)

    def delete(self, name: str) -> None:
        """Remove a file of the pulled folder."""
        with _translated(self.target.path(name)):
            self.ftp.delete(self.target.path(name))

    def move(self, name: str, folder: str) -> None:
        """Rename a file into `folder` (created if missing)."""
        self._makedirs(folder)
        with _translated(self.target.path(name)):
            self._replace(self.target.path(name), self.target.path(name, folder))

    def put(self, folder: str, name: str, data: bytes) -> None:
        """Upload as `.name.part`, then rename, so the advertiser never reads half a file."""
        self._makedirs(folder)
        temp = self.target.path(f".{name}.part", folder)
        with _translated(temp):
            self.ftp.storbinary(f"STOR {temp}", io.BytesIO(data))
            self._replace(temp, self.target.path(name, folder))

    def abort(self) -> None:
        """Shut both sockets down so that a blocked transfer returns at once."""
        for sock in (self.ftp.data_sock, self.ftp.sock):
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Say QUIT, or just close when the connection is already gone."""
        try:
            self.ftp.quit()
        except (ftplib.Error, OSError, EOFError, AttributeError):
            self.ftp.close()

    def _replace(self, old: str, new: str) -> None:
        try:
            self.ftp.rename(old, new)
        except ftplib.error_perm:
            self.ftp.delete(new)  # servers that refuse to rename onto an existing name
            self.ftp.rename(old, new)

    def _makedirs(self, folder: str) -> None:
        with _translated(folder), suppress(ftplib.error_perm):
            self.ftp.mkd(folder)  # 550 when it exists already
