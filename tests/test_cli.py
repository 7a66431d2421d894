"""The command line's conventions, through `returnsd` itself (click's runner, real database).

Human tables with headers by default, `--json` for machines on every printing command, `--limit`
and `--all` with a "N more" line, validated filters (exit 2 naming what is allowed, in any case),
no traceback for a user's mistake, and read-only commands that never create a database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from returnsd.cli import main
from tests.conftest import campaign_dict


@dataclass
class Run:
    """One command's exit code and output."""

    code: int
    out: str
    err: str


class Cli:
    """`returnsd --config …` on a campaign with 60 actions in a database of its own."""

    def __init__(self, folder: Path, db_url: str) -> None:
        self.folder = folder
        self.config = folder / "config.yaml"
        doc = {"database_url": db_url, "campaigns": [campaign_dict()]}
        self.config.write_text(yaml.safe_dump(doc))

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Run:
        """Run one command."""
        result = CliRunner().invoke(main, ["--config", str(self.config), *args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            f"{args} raised {result.exception!r}:\n{result.output}"
        )
        assert "Traceback" not in result.output
        return Run(result.exit_code, result.stdout, result.stderr)

    def load(self, count: int = 60) -> None:
        """Import `count` recent sales and ingest one file of returns for them."""
        when = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        rows = [
            "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,Payout"
        ]
        rows += [f"A{i:03d},acme,101,O{i},P1,{when},100.00,USD,10.00" for i in range(count)]
        (self.folder / "actions.csv").write_text("\n".join(rows) + "\n")
        assert self("actions", "import", str(self.folder / "actions.csv")).code == 0
        returns = self.folder / "returns.csv"
        returns.write_text("ActionId,Amount,Reason\nA000,80.00,ITEM_RETURNED\nNOPE,1,OTHER\n")
        assert self("ingest", str(returns), "--campaign", "acme").code == 0


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Cli:
    """The command line on a fresh database (SQLite and PostgreSQL)."""
    return Cli(tmp_path, db_url)


def test_listings_have_headers_limits_and_json(cli: Cli) -> None:
    cli.load()
    out = cli("actions", "list", "--limit", "5").out.splitlines()
    assert out[0].split()[:3] == ["ACTION", "CAMPAIGN", "TRACKER"]
    assert len(out) == 1 + 5 + 1 and out[-1].startswith("… 55 more")
    everything = cli("actions", "list", "--all").out.splitlines()
    assert len(everything) == 61 and "more" not in everything[-1]
    docs = json.loads(cli("actions", "list", "--json", "--limit", "3").out)
    assert [d["ActionId"] for d in docs] == ["A000", "A001", "A002"]
    files = cli("files", "list").out.splitlines()
    assert files[0].split()[:3] == ["FILE", "RECEIVED", "STATUS"]
    assert "COMPLETE" in files[1] and "returns.csv" in files[1]


def test_filters_are_case_insensitive_and_validated(cli: Cli) -> None:
    cli.load()
    assert "COMPLETE" in cli("files", "list", "--status", "complete").out
    assert (
        len(json.loads(cli("actions", "list", "--state", "pending", "--json", "--all").out)) == 60
    )
    for args in (
        ("files", "list", "--campaign", "nope"),
        ("actions", "list", "--campaign", "nope"),
        ("actions", "export", "--campaign", "nope", "-o", "x.csv"),
    ):
        run = cli(*args)
        assert run.code == 2 and "unknown campaign 'nope' (configured: acme)" in run.err, args
    bad = cli("files", "list", "--status", "done")
    assert bad.code == 2 and "complete" in bad.err.lower()
    bad = cli("actions", "list", "--state", "gone")
    assert bad.code == 2 and "pending" in bad.err.lower()


def test_show_prints_text_by_default_and_json_on_request(cli: Cli) -> None:
    cli.load()
    text = cli("actions", "show", "A000").out
    assert text.startswith("ActionId: A000") and "History (1 changes)" in text
    doc = json.loads(cli("actions", "show", "A000", "--json").out)
    assert doc["ActionId"] == "A000" and doc["Amount"] == "80.00"
    file_id = json.loads(cli("files", "list", "--json").out)[0]["file_id"]
    assert cli("files", "show", file_id).out.startswith(f"file_id: {file_id}")
    assert json.loads(cli("files", "show", file_id, "--json").out)["file_id"] == file_id


def test_user_mistakes_exit_cleanly(cli: Cli, tmp_path: Path) -> None:
    cli.load()
    missing = tmp_path / "no" / "such" / "folder" / "out.csv"
    run = cli("actions", "export", "-o", str(missing))
    assert run.code == 2 and "folder" in run.err and not missing.parent.exists()
    file_id = json.loads(cli("files", "list", "--json").out)[0]["file_id"]
    assert cli("files", "result", file_id, "-o", str(missing)).code == 2
    assert cli("actions", "show", "NOPE").code == 1
    assert cli("files", "show", "NOPE").code == 1
    assert cli("lock", "--at", "yesterday").code == 2
    assert cli("lock", "--at", "2026-01-01T00:00:00").code == 2  # no zone
    assert cli("ingest", str(tmp_path / "absent.csv"), "--campaign", "acme").code == 2


def test_read_only_commands_never_create_a_database(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    cli = Cli(tmp_path, f"sqlite:///{typo}")
    for args in (("files", "list"), ("actions", "list"), ("actions", "show", "X")):
        run = cli(*args)
        assert run.code == 2 and "does not exist" in run.err, args
    assert not typo.exists()


def test_db_upgrade_says_what_it_did(tmp_path: Path) -> None:
    cli = Cli(tmp_path, f"sqlite:///{tmp_path / 'new.db'}")
    assert "created the returnsd schema" in cli("db", "upgrade").out
    assert "already at the newest revision" in cli("db", "upgrade").out


def test_lock_in_the_future_needs_a_confirmation(cli: Cli) -> None:
    cli.load()
    future = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    run = cli("lock", "--at", future)
    assert run.code == 2 and "would lock 60 actions" in run.out and "--yes" in run.out
    assert cli("lock", "--at", future, "--dry-run").code == 0
    assert len(json.loads(cli("actions", "list", "--state", "LOCKED", "--json").out)) == 0
    assert json.loads(cli("lock", "--at", future, "--yes", "--json").out)["locked"] == 60
