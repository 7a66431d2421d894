"""`returnsd tokens add/list/revoke`: the token is printed once, stored hashed, and revocable."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ingest import config
from ingest import tables as t
from ingest.api_accounts import Authenticator
from ingest.store import Store
from tests.test_cases import make_env


def test_add_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 't.db'}")
    run = env.cli("tokens", "add", "--campaign", "shop", "--label", "order system", "--json")
    assert run.exit_code == 0, run.err
    made = run.json()
    sid, token, token_id = made["sid"], made["token"], made["token_id"]
    assert sid.startswith("IR") and len(sid) == 34 and len(token) == 32
    store = Store.open(config.load(env.config))
    try:
        with store.read() as conn:
            stored = conn.scalar(select(t.api_tokens.c.token_hash))
        assert stored is not None and token not in stored and stored.startswith("scrypt$")
        auth = Authenticator(store)
        who = auth.check(sid, token)
        assert who is not None and who.campaigns == ("shop",) and who.token_id == token_id
        assert auth.check(sid, token + "x") is None
        listed = env.cli("tokens", "list")
        assert listed.exit_code == 0 and token_id.encode() in listed.out
        assert token.encode() not in listed.out
        assert env.cli("tokens", "revoke", token_id).exit_code == 0
        assert Authenticator(store).check(sid, token) is None
        assert env.cli("tokens", "revoke", token_id).exit_code == 1
        second = env.cli("tokens", "add", "--sid", sid, "--campaign", "other")
        assert second.exit_code == 2 and "no campaign(s) other" in second.err
        assert env.cli("tokens", "add").exit_code == 2  # a new account needs --campaign
    finally:
        store.dispose()
