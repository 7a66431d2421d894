"""The bad-input corpus (fixtures/bad/) through the real CLI, and the memory its worst cases cost.

Every corpus file is ingested with `returnsd --config CFG ingest FILE --campaign shop --json`
(click's CliRunner, as tests/test_cases.py does) into one SQLite ledger (fixtures/bad/actions.csv
and items.csv; each action is changed by one file at most, so order does not matter). The JSON
summary must give the manifest's status and error code (never INTERNAL_ERROR); for a COMPLETE
file, the result CSV must hold exactly the manifest's lines with their Status, ErrorCode and
NewAmount, cells a spreadsheet would run as formulas must come back prefixed with a quote, and the
audit trail must hold exactly the applied lines (a FAILED file: none). Files too big to commit are
built at test time by fixtures/bad/make_corpus.py.

The worst inputs are also parsed (read_table + canonicalise, default ParseLimits, as the daemon
runs them) in a child process each, which reports its resident memory before parsing (VmRSS) and
its peak (VmHWM) after; that growth (an upper bound: the peak may come from the imports) must stay
under MEMORY_BOUND_MB, and a child killed by a signal (calamine aborts the process when an
allocation fails) fails the test. (Not getrusage's ru_maxrss: Linux keeps it across fork and exec,
so a child would report the pytest process's own peak.)
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from ingest.results import RESULT_COLUMNS
from returnsd.cli import main

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fixtures" / "bad"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MEMORY_BOUND_MB = 200  # peak RSS growth while parsing one hostile file, default limits


def load_corpus_module() -> ModuleType:
    """fixtures/bad/make_corpus.py as a module (fixtures/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_corpus", module)
    spec.loader.exec_module(module)
    return module


MAKE = load_corpus_module()
MANIFEST: dict[str, dict[str, dict[str, Any]]] = json.loads(
    (CORPUS / "expected.json").read_text(encoding="utf-8")
)


# --- the installation ----------------------------------------------------------------------------


@dataclass
class Run:
    """One CLI invocation's exit code and output."""

    exit_code: int
    out: bytes
    err: str


@dataclass
class Env:
    """A temporary installation: the corpus config, its own SQLite ledger and spool."""

    root: Path
    config: Path
    db: Path

    def cli(self, *args: str | Path) -> Run:
        """`returnsd --config CFG ARGS…` in-process."""
        argv = ["--config", str(self.config), *map(str, args)]
        result = CliRunner().invoke(main, argv, catch_exceptions=False)
        return Run(result.exit_code, result.stdout_bytes, result.stderr)

    def ingest(self, path: Path) -> Run:
        """Ingest one file now (JSON summary on stdout)."""
        return self.cli("ingest", path, "--campaign", "shop", "--json")

    def result(self, doc: dict[str, Any]) -> list[list[str]]:
        """A file's result CSV, header first, read in the input's encoding and delimiter."""
        run = self.cli("files", "result", doc["file_id"])
        assert run.exit_code == 0, run.err
        csv_input = doc["format"] == "csv"
        encoding = codecs.lookup(doc["encoding"] if csv_input else "utf-8").name
        codec = {"utf-8": "utf-8-sig", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}
        text = run.out.decode(codec.get(encoding, encoding))
        delimiter = doc["delimiter"] if csv_input else ","
        limit = csv.field_size_limit(1 << 30)  # a 10 MB cell comes back; restored for the parsers
        try:
            return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        finally:
            csv.field_size_limit(limit)

    def audited(self, file_id: str) -> list[tuple[str, int]]:
        """(action, line) of every audit row a file wrote, in line order."""
        engine = create_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text("SELECT action_id, line FROM audit WHERE file_id = :f ORDER BY line"),
                    {"f": file_id},
                )
                return [(str(a), int(line)) for a, line in rows]
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One ledger for the whole corpus: fixtures/bad/actions.csv and items.csv imported."""
    root = tmp_path_factory.mktemp("bad")
    db = root / "returnsd.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RETURNSD_DATABASE_URL", f"sqlite:///{db}")
        config = root / "config.yaml"
        shutil.copyfile(CORPUS / "config.yaml", config)
        when = (datetime.now(UTC) - timedelta(days=2)).isoformat(timespec="seconds")
        actions = root / "actions.csv"
        actions.write_text((CORPUS / "actions.csv").read_text().replace("{-2d}", when))
        found = Env(root, config, db)
        run = found.cli("actions", "import", actions, "--items", CORPUS / "items.csv")
        assert run.exit_code == 0, run.err
        (root / "in").mkdir()
        yield found


# --- checks --------------------------------------------------------------------------------------


def params(entries: dict[str, dict[str, Any]]) -> list[Any]:
    """Corpus names as pytest params, xfail-marked where the manifest names a bug."""
    return [
        pytest.param(
            name,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=e["xfail"])] if e.get("xfail") else [],
        )
        for name, e in entries.items()
    ]


def check(env: Env, path: Path, expect: dict[str, Any]) -> None:
    """Ingest `path` and compare everything the manifest says about it."""
    run = env.ingest(path)
    if expect["status"] == "REFUSED":
        assert run.exit_code == 1, run.out
        assert expect["error"] in run.err, run.err
        listed = json.loads(env.cli("files", "list", "--limit", "100000", "--json").out)
        assert path.name not in {doc["name"] for doc in listed}
        return
    doc = json.loads(run.out)
    error = doc.get("error") or {}
    assert error.get("code") != "INTERNAL_ERROR", error
    assert doc["status"] == expect["status"], error
    if expect["status"] == "FAILED":
        assert run.exit_code == 1
        assert error["code"] == expect["error"], error
        assert error["message"]
        assert env.audited(doc["file_id"]) == []
        return
    assert run.exit_code == 0
    for key, value in expect.get("summary", {}).items():
        assert doc[key] == value, (key, doc[key])
    if "warnings" in expect:
        check_warnings(doc["warnings"], expect["warnings"])
    check_result(env, doc, expect)


def check_warnings(actual: list[str], expected: list[str]) -> None:
    """One warning per expected substring, in any order."""
    assert len(actual) == len(expected), actual
    left = list(actual)
    for part in expected:
        hit = next((w for w in left if part in w), None)
        assert hit is not None, (part, actual)
        left.remove(hit)


def check_result(env: Env, doc: dict[str, Any], expect: dict[str, Any]) -> None:
    """The result CSV's lines, cells and neutralisation, and the audit trail."""
    header, *rows = env.result(doc)
    width = len(header) - len(RESULT_COLUMNS)
    assert tuple(header[width:]) == RESULT_COLUMNS
    outcome = {row[width]: dict(zip(RESULT_COLUMNS, row[width:], strict=True)) for row in rows}
    assert len(outcome) == len(rows), "a line appears twice"
    if "every_line" in expect:
        assert len(rows) == expect["line_count"]
        wanted = {line: expect["every_line"] for line in outcome}
    else:
        wanted = expect["lines"]
        assert sorted(outcome, key=int) == sorted(wanted, key=int)
    for line, want in wanted.items():
        got = outcome[line]
        assert [got["Status"], got["ErrorCode"]] == want[:2], (line, got["Message"])
        if len(want) > 2:
            assert got["NewAmount"] == want[2], (line, got)
    assert doc["counts"]["lines"] == len(rows)
    for line, part in expect.get("messages", []):
        assert part in outcome[str(line)]["Message"], (line, outcome[str(line)]["Message"])
    original = {"1": header[:width]} | {row[width]: row[:width] for row in rows}
    for line, column, value in expect.get("cells", []):
        assert original[str(line)][column] == value, (line, column, original[str(line)][column])
    for row in [header, *rows]:
        for value in row:
            assert not value.startswith(FORMULA_START), (value, row)
    applied = sorted(
        (o["ResolvedActionId"], int(line))
        for line, o in outcome.items()
        if o["Status"] == "APPLIED"
    )
    assert sorted(env.audited(doc["file_id"])) == applied


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", params(MANIFEST["files"]))
def test_corpus_file(env: Env, name: str) -> None:
    """Each committed corpus file gives its manifest outcome."""
    check(env, CORPUS / "files" / name, MANIFEST["files"][name])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", params(MANIFEST["generated"]))
def test_generated_file(env: Env, name: str, tmp_path: Path) -> None:
    """Each big input, built now, gives its manifest outcome."""
    check(env, MAKE.build_generated(name, tmp_path), MANIFEST["generated"][name])


def test_corpus_is_current() -> None:
    """fixtures/bad holds exactly what make_corpus.py writes, and stays small."""
    wanted = MAKE.files()
    for name, data in wanted.items():
        assert (CORPUS / name).read_bytes() == data, name
    committed = {f"files/{p.name}" for p in (CORPUS / "files").iterdir()}
    assert committed == {name for name in wanted if name.startswith("files/")}
    assert len(committed) + len(MANIFEST["generated"]) >= 100
    assert sum((CORPUS / name).stat().st_size for name in committed) < 2_000_000


def test_corpus_files_are_distinct() -> None:
    """No two inputs hold the same bytes (the second would be a DUPLICATE, not a test)."""
    datas = [(CORPUS / "files" / name).read_bytes() for name in MANIFEST["files"]]
    assert len(set(datas)) == len(datas)


def test_every_file_level_failure_is_covered() -> None:
    """Each file-level failure code (README, "Returns files") has corpus files."""
    codes = {e["error"] for group in MANIFEST.values() for e in group.values() if "error" in e}
    assert codes >= {
        "EMPTY_FILE", "NO_HEADER", "NO_IDENTIFIER_COLUMN", "DUPLICATE_COLUMN", "TOO_LARGE",
        "TOO_MANY_ROWS", "UNSUPPORTED_FORMAT", "UNREADABLE", "ENCRYPTED", "CORRUPT_ARCHIVE",
    }  # fmt: skip


def test_archive_members_are_never_written(env: Env, tmp_path: Path) -> None:
    """Members named ../…, /… or as a link are read in memory only: nothing lands on disk."""
    target = tmp_path / "escaped.csv"
    body = MAKE.utf8(MAKE.HEADER, f"NOPE-{tmp_path.name},1.00,OTHER")
    for member in (f"../../../../../..{target}", str(target)):
        archive = tmp_path / "in.zip"
        archive.write_bytes(MAKE.zip_of(member, body + member.encode()))
        doc = json.loads(env.ingest(archive).out)
        assert doc["status"] == "COMPLETE", doc
    assert not target.exists()
    assert "escaped.csv" not in {p.name for p in env.root.rglob("*")}


@pytest.mark.xfail(
    "ActionId" in RESULT_COLUMNS,
    reason="the result repeats the input's ActionId column (DUPLICATE_COLUMN when sent back) "
    "until ingest/results names the resolved id ResolvedActionId",
    strict=True,
)
def test_a_result_sent_back_is_read(env: Env, tmp_path: Path) -> None:
    """The loop a sender runs: fix the error rows of a result, send the whole result back."""
    fixed, kept = MAKE.ANSWERS.all[-2:]
    first = tmp_path / "first.csv"
    first.write_bytes(MAKE.utf8(MAKE.HEADER, f"{fixed},80.00,Item Returned", f"{kept},70.00,OTHER"))
    doc = json.loads(env.ingest(first).out)
    header, *rows = env.result(doc)
    status = len(header) - len(RESULT_COLUMNS) + 1
    assert [row[status] for row in rows] == ["ERROR", "APPLIED"]
    rows[0][2] = "ITEM_RETURNED"
    again = tmp_path / "returns_fixed.csv"
    with again.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows([header, *rows])
    doc = json.loads(env.ingest(again).out)
    assert doc["status"] == "COMPLETE", doc.get("error")
    check_warnings(doc["warnings"], ["returnsd writes them"])
    again_header, *rows = env.result(doc)
    assert again_header == header  # the result columns are written anew, not repeated
    assert [row[status] for row in rows] == ["APPLIED", "UNCHANGED"]


# --- memory --------------------------------------------------------------------------------------

CHILD = """
import json, sys
from parsers.errors import FileRejected
from parsers.base import ParseLimits
from parsers.canonical import canonicalise
from parsers.readers import read_table

def status_kb(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key + ":"))

path = sys.argv[1]
data = open(path, "rb").read()
base = status_kb("VmRSS")
try:
    canonicalise(read_table(path, data, ParseLimits()))
    outcome = "read"
except FileRejected as exc:
    outcome = exc.code
print(json.dumps({"outcome": outcome, "base_kb": base, "peak_kb": status_kb("VmHWM")}))
"""

WORST = [
    ("zip_bomb_1gb.zip", "TOO_LARGE"),
    ("gzip_bomb_1gb.csv.gz", "TOO_LARGE"),  # before the fix: 2.2 GB
    ("line_10mb_value.csv", "read"),
    ("line_10mb_unquoted.csv", "read"),
    ("billion_laughs.xml", "UNREADABLE"),
    ("deep_nesting_2m.xml", "UNREADABLE"),  # before the fix: ~550 MB
    ("huge_dimension.xlsx", "TOO_LARGE"),  # before the fix: the process aborted
    ("shared_strings_bomb.xlsx", "UNREADABLE"),  # before the fix: the process aborted
]
if os.environ.get("RETURNSD_LONG") == "1":
    WORST += [
        ("quadratic_blowup.xml", "UNREADABLE"),
        ("wide_row.xml", "TOO_LARGE"),
        ("many_columns.csv", "TOO_LARGE"),  # 200,000 columns took 127 s and 1.9 GB before
        ("huge_row_number.xlsx", "TOO_LARGE"),
        ("huge_span_without_refs.xlsx", "TOO_LARGE"),
        ("duplicate_r_attribute.xlsx", "TOO_LARGE"),
        ("sheet_xml_bomb.xlsx", "TOO_LARGE"),
    ]


def parse_in_child(path: Path) -> dict[str, Any]:
    """Parse one file in a fresh interpreter; its outcome and peak RSS (kB) before and after."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        capture_output=True,
        timeout=240,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr.decode()[-2000:])
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "outcome"), WORST, ids=[n for n, _ in WORST])
def test_worst_cases_stay_within_memory_bound(name: str, outcome: str, tmp_path: Path) -> None:
    """Parsing a hostile file grows the process by less than MEMORY_BOUND_MB (default limits)."""
    path = CORPUS / "files" / name
    if name in MANIFEST["generated"]:
        path = MAKE.build_generated(name, tmp_path)
    report = parse_in_child(path)
    growth_mb = (report["peak_kb"] - report["base_kb"]) / 1024
    print(f"{name}: {report['outcome']}, peak RSS growth {max(growth_mb, 0):.0f} MB")
    assert report["outcome"] == outcome
    assert growth_mb < MEMORY_BOUND_MB
