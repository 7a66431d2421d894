"""SQLite is single-node: a second `returnsd run` on the same database file is refused at start.

Two real daemons (child processes, each with its own ports) over one SQLite file: the second exits
1 naming the lock and the running daemon; once the first is killed with SIGKILL the lock it held
is gone with it, and a new daemon starts on the same file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.faults.helpers import RETURNSD, DaemonProcess

pytestmark = [pytest.mark.timeout(180)]


def _second_run(daemon: DaemonProcess) -> subprocess.CompletedProcess[str]:
    cmd = [str(RETURNSD), "--config", str(daemon.config), "run"]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=daemon.env, timeout=60, check=False
    )


def test_second_daemon_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = DaemonProcess(tmp_path / "first", database_url=url)
    second = DaemonProcess(tmp_path / "second", database_url=url)
    try:
        first.cli("db", "upgrade")
        first.start()
        refused = _second_run(second)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        message = refused.stdout + refused.stderr
        assert "another returnsd daemon" in message and "single-node" in message
        assert first.proc is not None and f"pid {first.proc.pid}" in message
        assert "Traceback" not in message
        assert first.answering(), "the refused daemon disturbed the running one"
        first.kill9()  # the kernel drops the lock with the process: nothing stale is left
        second.start()
        assert second.alive()
        assert second.stop() == 0
    finally:
        first.stop()
        second.stop()
