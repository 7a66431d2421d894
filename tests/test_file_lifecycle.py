"""The file record has one owner: only the ingest/files package writes the files, results and
file_hashes rows; and a file fails one way (FAILED with its result row), whatever made it fail."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.files import FINISHED, FileStatus
from tests.test_cases import CASES, Env, make_env

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("ingest", "channels", "parsers", "console", "returnsd", "scheduler.py")
OWNED = {"files", "results", "file_hashes"}
OWNER = Path("ingest/files")


def writes_to_file_tables(root: Path) -> list[str]:
    """`path:line` of every insert/update/delete of a file table outside the owner module."""
    found = []
    for top in PRODUCT:
        paths = [root / top] if top.endswith(".py") else sorted((root / top).rglob("*.py"))
        paths = [p for p in paths if p.exists()]
        for path in paths:
            if OWNER in path.relative_to(root).parents or "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and _writes(node):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value.upper()
                    if any(f"{verb} {name.upper()} " in text + " " for verb in
                           ("UPDATE", "INSERT INTO", "DELETE FROM") for name in OWNED):  # fmt: skip
                        found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def _table(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr in OWNED


def _writes(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in ("insert", "update", "delete"):
        return _table(func.value)
    if isinstance(func, ast.Name) and func.id in ("insert", "update", "delete") and call.args:
        return _table(call.args[0])
    return False


def test_only_the_lifecycle_module_writes_file_records() -> None:
    assert writes_to_file_tables(ROOT) == []


def test_the_check_sees_a_write_outside_the_owner(tmp_path: Path) -> None:
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "worker.py").write_text(
        "def fail(conn, t):\n    conn.execute(update(t.files).values(status='FAILED'))\n"
    )
    assert writes_to_file_tables(tmp_path) == ["ingest/worker.py:2"]


def test_status_strings_are_unchanged() -> None:
    """The enum's values are what the database already holds."""
    assert [str(s) for s in FileStatus] == ["QUEUED", "PROCESSING", "COMPLETE", "FAILED",
                                             "DUPLICATE"]  # fmt: skip
    assert {s for s in FileStatus if s.finished} == FINISHED


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Env:
    """The case fixtures' ledger (fixtures/cases), SQLite and PostgreSQL."""
    return make_env(tmp_path, monkeypatch, db_url)


def test_an_internal_error_fails_the_file_the_same_way(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash inside the engine parks the file FAILED with a result row, like a bad file."""
    from ingest import worker
    from returnsd.cli import main

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    argv = ["--config", str(env.config), "ingest", str(CASES / "modify.csv"), "--campaign",
            "shop", "--json"]  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(worker, "run_file", boom)
        broken = CliRunner().invoke(main, argv, catch_exceptions=False)
    bad = env.ingest(CASES / "no_header.csv")
    for run in (broken.stdout, bad.out):
        doc = json.loads(run)
        assert doc["status"] == "FAILED"
        assert doc["error"]["code"] in ("INTERNAL_ERROR", "NO_HEADER")
        assert "timings" in doc  # the summary comes from the result row: written both ways
    assert json.loads(broken.stdout)["error"]["message"] == "RuntimeError: disk on fire"
