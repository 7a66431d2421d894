"""The SFTP transport of the scheduled pull (paramiko), with the server's host key pinned.

The pinned key is the only entry of a fresh per-session `HostKeys`, the client keeps a
`RejectPolicy`, and the transport asks the server for the pinned key's type first (else
paramiko may negotiate another type the server also has and compare the wrong key). Any
other key — same type but changed, or another type because the server has none of the pinned one —
is refused with both fingerprints in the message.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import logging
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, NoReturn

import paramiko
from paramiko.ssh_exception import IncompatiblePeer

from channels.pull_remote import (
    PullRefused,
    PullTarget,
    PullTransient,
    RemoteFile,
    RemoteFileError,
)
from ingest.config import PullSource

log = logging.getLogger(f"returnsd.{__name__}")

# Host key algorithms that prove a key of each type (RSA keys sign with SHA-2 since OpenSSH 8.8).
ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def parse_host_key(line: str) -> paramiko.PKey:
    """Read a pinned host key from `TYPE BASE64` (an ssh-keyscan line with a host first is fine)."""
    words = line.split()
    for i, word in enumerate(words[:-1]):
        if word.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                return paramiko.PKey.from_type_string(word, base64.b64decode(words[i + 1]))
            except (binascii.Error, ValueError, paramiko.SSHException) as exc:
                raise PullRefused(f"pinned host_key is not a valid {word} key: {exc}") from exc
    raise PullRefused("pinned host_key must look like 'ssh-ed25519 AAAA…' (ssh-keyscan output)")


def load_private_key(text: str) -> paramiko.PKey:
    """Parse an unencrypted OpenSSH or PEM private key (Ed25519, ECDSA or RSA)."""
    data = text.strip() + "\n"
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(data))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise PullRefused("private_key is not an unencrypted Ed25519, ECDSA or RSA private key")


def describe(key: paramiko.PKey) -> str:
    """A key's type and SHA256 fingerprint, as OpenSSH prints them."""
    return f"{key.get_name()} {key.fingerprint}"


class _RefuseUnknown(paramiko.RejectPolicy):
    """RejectPolicy that says which key the server offered."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        """Refuse a server whose name has no pinned key."""
        raise PullRefused(f"host key of {hostname} is not pinned: server offered {describe(key)}")


def _preferring(key_type: str) -> Callable[..., paramiko.Transport]:
    """A transport factory that asks the server for `key_type` before any other host key type."""
    wanted = ALGORITHMS.get(key_type, (key_type,))

    def factory(sock: socket.socket, **kwargs: object) -> paramiko.Transport:
        transport = paramiko.Transport(sock, **kwargs)  # type: ignore[arg-type]
        options = transport.get_security_options()
        known = list(options.key_types)
        options.key_types = [k for k in wanted if k in known] + [
            k for k in known if k not in wanted
        ]
        return transport

    return factory


def connect_sftp(
    source: PullSource, target: PullTarget, timeout: float, prefetch_requests: int
) -> SftpRemote:
    """Connect, check the pinned host key, log in and open SFTP; every step has `timeout`."""
    pinned = parse_host_key(source.host_key or "")
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_RefuseUnknown())
    name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
    client.get_host_keys().add(name, pinned.get_name(), pinned)
    auth: dict[str, object] = {}
    if source.private_key is not None:
        auth["pkey"] = load_private_key(source.private_key.reveal())
    if source.password is not None:
        auth["password"] = source.password.reveal()
    try:
        with _translated(f"{source.user}@{target.host}"):
            try:
                client.connect(
                    target.host,
                    target.port,
                    username=source.user,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                    channel_timeout=timeout,
                    look_for_keys=False,
                    allow_agent=False,
                    transport_factory=_preferring(pinned.get_name()),
                    **auth,  # type: ignore[arg-type]
                )
            except paramiko.BadHostKeyException as exc:
                raise _refused(target, exc.key, pinned) from None
            sftp = client.open_sftp()
    except BaseException:
        client.close()
        raise
    sftp.get_channel().settimeout(timeout)  # type: ignore[union-attr]
    return SftpRemote(target, client, sftp, prefetch_requests)


def _refused(target: PullTarget, offered: paramiko.PKey, pinned: paramiko.PKey) -> PullRefused:
    message = (
        f"host key of {target.host}:{target.port} does not match the pinned key: server offered "
        f"{describe(offered)}, pinned {describe(pinned)}; if the advertiser really changed it, "
        "re-pin host_key from ssh-keyscan"
    )
    log.warning("pull refused: %s", message)
    return PullRefused(message)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn paramiko and socket errors into the pull's three error types."""
    try:
        yield
    except (PullRefused, PullTransient, RemoteFileError):
        raise
    except paramiko.AuthenticationException as exc:
        raise PullRefused(f"login refused for {what}: {exc}") from exc
    except IncompatiblePeer as exc:
        raise PullRefused(f"cannot agree on algorithms with {what}: {exc}") from exc
    except (FileNotFoundError, PermissionError) as exc:
        raise RemoteFileError(f"{exc.strerror or exc}: {exc.filename or what}") from exc
    except (OSError, EOFError, paramiko.SSHException) as exc:
        detail = "timed out" if isinstance(exc, TimeoutError) else (str(exc) or type(exc).__name__)
        raise PullTransient(f"sftp session with {what} failed: {detail}") from exc


class SftpRemote:
    """An SFTP session rooted at the pulled folder."""

    def __init__(
        self,
        target: PullTarget,
        client: paramiko.SSHClient,
        sftp: paramiko.SFTPClient,
        prefetch_requests: int,
    ) -> None:
        self.target = target
        self.client = client
        self.sftp = sftp
        self.prefetch_requests = prefetch_requests

    def list(self) -> list[RemoteFile]:
        """The regular files in the pulled folder."""
        with _translated(self.target.folder):
            entries = self.sftp.listdir_attr(self.target.folder)
        return [
            RemoteFile(e.filename, e.st_size or 0, int(e.st_mtime or 0))
            for e in entries
            if e.st_mode is not None and stat.S_ISREG(e.st_mode)
        ]

    def get(self, name: str, out: BinaryIO, progress: Callable[[int], None]) -> None:
        """Download with a bounded prefetch (unbounded prefetch hangs some servers, B3)."""
        with _translated(self.target.path(name)):
            self.sftp.getfo(
                self.target.path(name),
                out,
                callback=lambda done, _total: progress(done),
                prefetch=True,
                max_concurrent_prefetch_requests=self.prefetch_requests,
            )

    def delete(self, name: str) -> None:
        """Remove a file of the pulled folder."""
        with _translated(self.target.path(name)):
            self.sftp.remove(self.target.path(name))

    def move(self, name: str, folder: str) -> None:
        """Rename a file into `folder`, replacing an older file of the same name there."""
        self._makedirs(folder)
        self._rename(self.target.path(name), self.target.path(name, folder))

    def put(self, folder: str, name: str, data: bytes) -> None:
        """Upload as `.name.part`, then rename, so the advertiser never reads half a file."""
        self._makedirs(folder)
        temp = self.target.path(f".{name}.part", folder)
        with _translated(temp):
            self.sftp.putfo(io.BytesIO(data), temp, file_size=len(data), confirm=True)
        self._rename(temp, self.target.path(name, folder))

    def abort(self) -> None:
        """Close the transport; a blocked read then fails at once."""
        self.client.close()

    def close(self) -> None:
        """Close the SFTP channel and the SSH connection."""
        self.client.close()

    def _rename(self, old: str, new: str) -> None:
        with _translated(old):
            try:
                self.sftp.posix_rename(old, new)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EACCES):
                    raise
                self.sftp.rename(old, new)  # server without posix-rename@openssh.com

    def _makedirs(self, folder: str) -> None:
        with _translated(folder):
            try:
                self.sftp.stat(folder)
            except FileNotFoundError:
                self.sftp.mkdir(folder)
