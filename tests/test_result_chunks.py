"""The result CSV is written slice by slice; the slices must not show in the bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import report
from tests.test_cases import CASES, make_env

FILES = ("errors.csv", "formula.csv", "bom.csv", "items_long.csv", "mixed_identifiers.csv",
         "by_order.csv", "customer_status.csv")  # fmt: skip


@pytest.mark.parametrize("name", FILES)
def test_result_in_slices_is_the_result_in_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    env = make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'returnsd.db'}")
    results = []
    for chunk in (report.RESULT_CHUNK, 2, 1):
        monkeypatch.setattr(report, "RESULT_CHUNK", chunk)
        out = tmp_path / f"dry_{chunk}.csv"
        run = env.cli("ingest", CASES / name, "--campaign", "shop", "--dry-run", "-o", out)
        assert run.exit_code == 0, run.err
        results.append(out.read_bytes())
    assert results[0] == results[1] == results[2]
    assert results[0].count(b"\n") > 2
