"""`returnsd users …`: add, list, disable, enable, passwd, revoke — through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from ingest.passwords import verify_password
from returnsd.cli import main
from tests.conftest import campaign_dict


def run(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], input=stdin)
    return result.exit_code, result.output


def test_users_commands(tmp_path: Path) -> None:
    from ingest import config as config_mod
    from ingest.sessions import Sessions
    from ingest.store import open_existing
    from ingest.users import get_user

    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "database_url": f"sqlite:///{tmp_path / 'r.db'}", "spool_dir": str(tmp_path / "spool"),
        "results_dir": str(tmp_path / "results"), "campaigns": [campaign_dict()]}))  # fmt: skip
    assert run(cfg, "users", "add", "ann", "--role", "advertiser", "--stdin",
               stdin="long enough pw\n")[0] == 2  # an advertiser needs a campaign  # fmt: skip
    assert run(cfg, "users", "add", "ann", "--role", "advertiser", "--campaign", "nope",
               "--stdin", stdin="long enough pw\n")[0] == 2  # fmt: skip
    assert run(cfg, "users", "add", "ann", "--role", "advertiser", "--campaign", "acme",
               "--stdin", stdin="short\n")[0] == 2  # fmt: skip
    code, out = run(cfg, "users", "add", "ann", "--role", "Advertiser", "--campaign", "acme",
                    "--name", "Ann", "--stdin", "--json", stdin="long enough pw\n")  # fmt: skip
    assert code == 0 and json.loads(out)["campaigns"] == ["acme"], out
    assert run(cfg, "users", "add", "ann", "--role", "operator", "--stdin",
               stdin="long enough pw\n")[0] == 2  # exists  # fmt: skip
    code, out = run(cfg, "users", "list")
    assert code == 0 and "ann" in out and "advertiser" in out and "acme" in out
    settings = config_mod.load(cfg)
    store = open_existing(settings)
    user = get_user(store, "ann")
    assert user is not None
    from datetime import timedelta

    sessions = Sessions(store, timedelta(minutes=5), timedelta(hours=1))
    token = sessions.create(user, "127.0.0.1")
    assert sessions.resolve(token) is not None
    assert run(cfg, "users", "revoke", "ann")[0] == 0
    assert sessions.resolve(token) is None
    token = sessions.create(user, "127.0.0.1")
    assert run(cfg, "users", "passwd", "ann", "--stdin", stdin="another long pw\n")[0] == 0
    assert sessions.resolve(token) is None
    from sqlalchemy import select

    from ingest import tables as t

    with store.read() as conn:
        stored = conn.scalar(select(t.users.c.password_hash).where(t.users.c.login == "ann"))
    assert stored is not None and verify_password("another long pw", stored)
    assert run(cfg, "users", "disable", "ann")[0] == 0
    assert json.loads(run(cfg, "users", "list", "--json")[1])[0]["disabled"] is True
    token = sessions.create(user, "127.0.0.1")
    assert sessions.resolve(token) is None  # a disabled user has no session
    assert run(cfg, "users", "enable", "ann")[0] == 0
    assert run(cfg, "users", "disable", "nobody")[0] == 2
    store.dispose()
