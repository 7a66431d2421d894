"""A stalled SFTP pull is never half-applied: given up, nothing is recorded; retried, it is whole.

tests/test_channel_pull.py::test_stalled_transfer_times_out_and_is_retried already shows that a
pull whose first connection freezes mid-file times out, retries and spools the complete bytes.
This adds what happens to the ledger: through a relay that freezes the first three connections
after 512 KiB, a pull with one retry gives up (both attempts freeze) and leaves no file record,
nothing in the spool or the pull's state folder, the remote file in place and unmarked as fetched;
the next pull freezes once, retries, and records the file exactly once; processed, each of its
changes is applied once and the ledger is what the whole file gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from channels.base import ChannelContext
from channels.pull import PullChannel
from ingest.actions import import_actions
from ingest.config import Settings
from ingest.pulled import PullLedger
from ingest.results import ResultStore
from ingest.spool import Spool
from ingest.store import prepare
from ingest.worker import Worker
from tests.conftest import need
from tests.faults.helpers import CAMPAIGN, Db, FreezingProxy, Plan, Secrets, campaign_doc, verify
from tests.sshd import Sshd, keygen, sshd_missing

pytestmark = [pytest.mark.timeout(120)]
PADDING = 100_000  # ~3.6 MB: the freeze at 512 KiB comes mid-file


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[Sshd, str, Path]]:
    """A real sshd; (server, its pinned host key line, the client's private key file)."""
    why = sshd_missing()
    if why:
        need("sshd", why)
    keys = tmp_path / "keys"
    keys.mkdir()
    host, client = keygen(keys, "host"), keygen(keys, "client")
    server = Sshd(tmp_path / "sshd", [host], client)
    server.start()
    yield server, host.public, client.path
    server.stop()


def test_stalled_pull_gives_up_without_a_trace_then_applies_the_whole_file_once(
    sshd: tuple[Sshd, str, Path], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    server, host_key, client_key = sshd
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    plan = Plan(50)
    returns = plan.next_file("pull", 50, padding=PADDING)
    assert returns is not None
    (outbox / "big.csv").write_bytes(returns.data)
    proxy = FreezingProxy(server.port, limit=512 * 1024, freeze=3)
    pull = {
        "url": f"sftp://127.0.0.1:{proxy.port}{outbox}",
        "user": server.user,
        "private_key": {"file": str(client_key)},
        "host_key": host_key,
        "timeout_seconds": 1,
        "retries": 1,
        "after": "delete",
    }
    state = tmp_path / "pullstate"
    settings = make_settings(
        campaigns=[{**campaign_doc(Secrets()), "pull": pull}],
        channels={"pull": {"state_dir": str(state)}},
    )
    store = prepare(settings)
    try:
        import_actions(store, settings, plan.write_actions(tmp_path / "actions.csv"))
        ledger = PullLedger(store)
        ctx = ChannelContext(settings, Spool(settings, store), ResultStore(store))
        channel = PullChannel(ctx, ledger, stable_interval=0.1, backoff=0.05)
        db = Db(settings.database_url)
        try:
            gave_up = channel.pull(CAMPAIGN)
            assert gave_up.fetched == [] and gave_up.attempts == 2, str(gave_up)
            assert "stalled" in gave_up.errors[0], gave_up.errors
            assert db.files() == []
            assert list(state.iterdir()) == [] and list(ctx.spool.tmp.iterdir()) == []
            assert (outbox / "big.csv").read_bytes() == returns.data
            st = (outbox / "big.csv").stat()
            remote = f"{outbox}/big.csv"
            assert not ledger.seen(CAMPAIGN, remote, st.st_size, int(st.st_mtime))

            report = channel.pull(CAMPAIGN)
            assert report.ok and [f.name for f in report.fetched] == ["big.csv"], str(report)
            assert report.attempts == 2 and proxy.frozen == 3
        finally:
            proxy.close()
        assert not (outbox / "big.csv").exists()
        assert [r["status"] for r in db.files()] == ["QUEUED"]
        assert Worker(settings, store).drain() == 1
        assert [r["status"] for r in db.files()] == ["COMPLETE"]
        verdict = verify(db, plan, [returns])
        assert (verdict.lost, verdict.applied_twice, verdict.wrong_ledger) == ([], [], [])
    finally:
        store.dispose()
