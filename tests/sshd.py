"""A real OpenSSH sshd on 127.0.0.1 for tests: own host keys, pubkey and password logins, SFTP."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
TEST_USER = "advertiser"


@dataclass(frozen=True)
class KeyPair:
    """A key made by ssh-keygen: the private key file and the public line `TYPE BASE64`."""

    path: Path
    public: str

    @property
    def type(self) -> str:
        """The key type, e.g. `ssh-ed25519`."""
        return self.public.split()[0]


def keygen(folder: Path, name: str, kind: str = "ed25519") -> KeyPair:
    """Generate a key pair of `kind` (ed25519, ecdsa, rsa) without a passphrase."""
    path = folder / name
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(path)]
    if kind == "rsa":
        args[4:4] = ["-b", "2048"]
    subprocess.run(args, check=True, capture_output=True)
    public = " ".join(path.with_suffix(".pub").read_text().split()[:2])
    return KeyPair(path, public)


def sshd_missing() -> str | None:
    """Why a real sshd cannot run here, or None when it can."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        return "OpenSSH sshd / ssh-keygen not installed (apt-get install openssh-server)"
    return None


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sshd:
    """One sshd process serving SFTP (internal-sftp) on 127.0.0.1:`port` with given host keys.

    As root, sshd runs in a private mount namespace where `/etc/passwd` and `/etc/shadow` are
    bind-mounted copies that add `advertiser` (uid 0, password `password`), so password logins
    can be tested without touching the machine. Otherwise sshd runs as the current user and only
    key logins work (`password` is None).
    """

    def __init__(self, workdir: Path, host_keys: list[KeyPair], client_key: KeyPair) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_keys = host_keys
        self.port = free_port()
        self.isolated = os.geteuid() == 0 and shutil.which("unshare") is not None
        self.user = TEST_USER if self.isolated else getpass.getuser()
        self.password: str | None = "password" if self.isolated else None
        (self.dir / "authorized_keys").write_text(client_key.public + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "sshd.log"

    def start(self) -> None:
        """Start sshd and return once it answers with an SSH banner."""
        config = self._write_config()
        cmd = [SSHD, "-D", "-e", "-f", str(config)]
        if self.isolated:
            cmd = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                self._namespace_script(cmd),
            ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        self._wait_for_banner()

    def stop(self) -> None:
        """Stop sshd (its session children end with their connections)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self, host_keys: list[KeyPair]) -> None:
        """Serve the same port with other host keys."""
        self.stop()
        self.host_keys = host_keys
        self.start()

    def url(self, folder: Path) -> str:
        """The sftp:// URL of `folder` on this server."""
        return f"sftp://127.0.0.1:{self.port}{folder}"

    def _write_config(self) -> Path:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            *(f"HostKey {k.path}" for k in self.host_keys),
            "PidFile none",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin yes",
            "PasswordAuthentication yes",
            "PubkeyAuthentication yes",
            "KbdInteractiveAuthentication no",
            "Subsystem sftp internal-sftp",
            "MaxStartups 50",
            "LogLevel VERBOSE",
        ]
        config = self.dir / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _namespace_script(self, cmd: list[str]) -> str:
        digest = subprocess.run(
            ["openssl", "passwd", "-6", self.password or ""],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        passwd, shadow = self.dir / "passwd", self.dir / "shadow"
        passwd.write_text(
            Path("/etc/passwd").read_text() + f"{TEST_USER}:x:0:0:test:{self.dir}:/bin/sh\n"
        )
        shadow.write_text(Path("/etc/shadow").read_text() + f"{TEST_USER}:{digest}:19000::::::\n")
        shadow.chmod(0o600)
        # sshd as root wants its privilege-separation folder; give it one inside the namespace.
        return (
            f"mount --bind {passwd} /etc/passwd && mount --bind {shadow} /etc/shadow && "
            "mount -t tmpfs tmpfs /run && mkdir -p /run/sshd && exec " + " ".join(cmd)
        )

    def _wait_for_banner(self, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log.read_text()}")
