"""Every return-file case (columns, reasons, row errors), table-driven, through the real CLI
(fixtures/cases/).

Each case ingests one file with `returnsd --config CFG ingest FILE --campaign C --json` into a fresh
SQLite ledger (fixtures/cases/actions.csv + items.csv, event dates relative to now), then compares
the result CSV's Line, Status, ErrorCode, ActionId, State, NewAmount and NewPayout with the
hand-computed `<case>.expected.csv`, the JSON summary's counts with the same expectation, and, for
some cases, the ledger through `returnsd actions show ID --json`. File-level failures compare the
status and `error.code`. Most cases run in-process (click's CliRunner); a few run the installed
`returnsd` executable as a subprocess.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import runpy
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ingest.results import RESULT_COLUMNS
from returnsd.cli import main

CASES = Path(__file__).resolve().parents[1] / "fixtures" / "cases"
RETURNSD = Path(sys.executable).with_name("returnsd")
EXPECTED_COLUMNS = ("Line", "Status", "ErrorCode", "ActionId", "State", "NewAmount", "NewPayout")
RELATIVE_DATE = re.compile(r"\{-(\d+)d\}")
MAX_FILE_BYTES = 200_000  # limits in fixtures/cases/config.yaml
MAX_ROWS = 1_500
MAX_UNCOMPRESSED = 1_000_000
VALIDATION_CODES = ("MALFORMED", "MISSING_IDENTIFIER", "UNKNOWN_REASON")
REFUSED = "REFUSED"  # not a file status: the spool refuses the bytes, no file record is made

Builder = Callable[[Path], Path]


# --- running the CLI -----------------------------------------------------------------------------


@dataclass
class Run:
    """One CLI invocation's exit code and output."""

    exit_code: int
    out: bytes
    err: str

    def json(self) -> Any:
        """Standard output parsed as JSON."""
        return json.loads(self.out)


@dataclass
class Env:
    """A temporary installation: a copy of the case config, its own SQLite ledger and spool."""

    root: Path
    config: Path
    use_subprocess: bool = False

    def cli(self, *args: str | Path, external: bool = False) -> Run:
        """Run `returnsd --config CFG ARGS…` in-process, or as the installed executable."""
        argv = ["--config", str(self.config), *map(str, args)]
        if external:
            done = subprocess.run(
                [str(RETURNSD), *argv], capture_output=True, timeout=120, check=False
            )
            return Run(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))
        result = CliRunner().invoke(main, argv, catch_exceptions=False)
        return Run(result.exit_code, result.stdout_bytes, result.stderr)

    def ingest(self, path: Path, campaign: str = "shop") -> Run:
        """Ingest one file now and return the run (JSON summary on stdout)."""
        return self.cli(
            "ingest", path, "--campaign", campaign, "--json", external=self.use_subprocess
        )

    def result(
        self, file_id: str, encoding: str = "utf-8", delimiter: str = ","
    ) -> tuple[list[str], list[list[str]]]:
        """A file's result CSV (in the input's encoding and delimiter): its header and rows."""
        run = self.cli("files", "result", file_id, external=self.use_subprocess)
        assert run.exit_code == 0, run.err
        text = run.out.decode("utf-8-sig" if encoding == "utf-8" else encoding)
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
        return rows[0], rows[1:]

    def action(self, action_id: str) -> dict[str, Any]:
        """`returnsd actions show ID --json`."""
        run = self.cli("actions", "show", action_id, "--json")
        assert run.exit_code == 0, run.err
        doc: dict[str, Any] = run.json()
        return doc


def expand_dates(text: str, now: datetime) -> str:
    """Replace each `{-Nd}` with the ISO 8601 UTC time N days before `now`."""
    return RELATIVE_DATE.sub(
        lambda m: (now - timedelta(days=int(m.group(1)))).isoformat(timespec="seconds"), text
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Env:
    """A fresh ledger (SQLite, and PostgreSQL) holding fixtures/cases/actions.csv and items.csv."""
    return make_env(tmp_path, monkeypatch, db_url)


def make_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Env:
    """Build the `env` fixture's installation (other test modules use it too)."""
    monkeypatch.setenv("RETURNSD_DATABASE_URL", db_url)
    config = tmp_path / "config.yaml"
    shutil.copyfile(CASES / "config.yaml", config)
    actions = tmp_path / "actions.csv"
    actions.write_text(expand_dates((CASES / "actions.csv").read_text(), datetime.now(UTC)))
    found = Env(tmp_path, config)
    run = found.cli("actions", "import", actions, "--items", CASES / "items.csv")
    assert run.exit_code == 0, run.err
    assert run.out.startswith(b"imported 96 actions, 18 items"), run.out
    (tmp_path / "in").mkdir()
    return found


# --- generated inputs ----------------------------------------------------------------------------


def gz_of(name: str) -> Builder:
    """`name.gz`: the fixture gzip-compressed."""

    def build(folder: Path) -> Path:
        target = folder / f"{name}.gz"
        target.write_bytes(gzip.compress((CASES / name).read_bytes(), mtime=0))
        return target

    return build


def zip_of(name: str) -> Builder:
    """`<stem>.zip` holding the fixture."""

    def build(folder: Path) -> Path:
        target = folder / f"{Path(name).stem}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(CASES / name, name)
        return target

    return build


def xlsx_of(name: str, numeric: tuple[str, ...] = ()) -> Builder:
    """`<stem>.xlsx`: the CSV fixture on the first sheet; `numeric` columns as numbers."""

    def build(folder: Path) -> Path:
        from openpyxl import Workbook

        rows = list(csv.reader(io.StringIO((CASES / name).read_text(), newline="")))
        book = Workbook()
        sheet = book.active
        assert sheet is not None
        sheet.title = "Returns"
        sheet.append(rows[0])
        as_number = {i for i, column in enumerate(rows[0]) if column in numeric}
        for row in rows[1:]:
            sheet.append([float(v) if i in as_number and v else v for i, v in enumerate(row)])
        target = folder / f"{Path(name).stem}.xlsx"
        book.save(target)
        return target

    return build


def too_large(folder: Path) -> Path:
    """A well-formed CSV one byte over `limits.max_file_bytes`."""
    text = "ActionId,Amount,Reason\n"
    line = "NOPE-0000000,1.00,OTHER\n"
    body = text + line * ((MAX_FILE_BYTES - len(text)) // len(line) + 1)
    body = body[: MAX_FILE_BYTES + 1]
    target = folder / "too_large.csv"
    target.write_text(body)
    assert target.stat().st_size == MAX_FILE_BYTES + 1
    return target


def gz_bomb(folder: Path) -> Path:
    """A small .gz that unpacks one byte past `limits.max_uncompressed_bytes`."""
    head = b"ActionId,Amount,Reason\n"
    line = b"NOPE-0000000,1.00,OTHER\n"
    body = (head + line * (MAX_UNCOMPRESSED // len(line) + 1))[: MAX_UNCOMPRESSED + 1]
    target = folder / "bomb.csv.gz"
    target.write_bytes(gzip.compress(body, mtime=0))
    assert target.stat().st_size < MAX_FILE_BYTES
    return target


def rows_of(n: int) -> Builder:
    """A CSV of `n` data rows naming actions that do not exist (one ACTION_NOT_FOUND each)."""

    def build(folder: Path) -> Path:
        target = folder / f"rows_{n}.csv"
        lines = ["ActionId,Amount,Reason", *(f"NOPE-{i:05d},1.00,OTHER" for i in range(n))]
        target.write_text("\n".join(lines) + "\n")
        return target

    return build


def rows_expected(n: int) -> list[dict[str, str]]:
    """What `rows_of(n)` must give: every line ACTION_NOT_FOUND."""
    return [
        dict(
            zip(
                EXPECTED_COLUMNS,
                (str(i + 2), "ERROR", "ACTION_NOT_FOUND", "", "", "", ""),
                strict=True,
            )
        )
        for i in range(n)
    ]


# --- the cases -----------------------------------------------------------------------------------


@dataclass
class Case:
    """One return file and everything expected of it."""

    id: str
    file: str  # a fixture in fixtures/cases (or a label when `build` writes the input)
    status: str = "COMPLETE"
    error: str | None = None  # file-level error.code
    expected: str | None = None  # default: <stem>.expected.csv for COMPLETE files
    build: Builder | None = None
    setup: tuple[str, ...] = ()  # fixtures ingested first (each must complete)
    campaign: str = "shop"
    warnings: tuple[str, ...] | None = ()  # substrings, one per expected warning; None: no check
    summary: dict[str, Any] = field(default_factory=dict)  # exact values of summary keys
    messages: tuple[tuple[int, str], ...] = ()  # (line, text the Message must contain)
    cells: tuple[tuple[int, int, str], ...] = ()  # (line, column index, exact result cell)
    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)  # `actions show` fields
    xfail: str | None = None

    def expected_rows(self) -> list[dict[str, str]]:
        """The expected outcome columns, one dict per result line."""
        if self.file.startswith("rows_"):
            return rows_expected(int(self.file.removeprefix("rows_")))
        name = self.expected or f"{Path(self.file).name.split('.')[0]}.expected.csv"
        with open(CASES / name, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames or ()) == EXPECTED_COLUMNS, name
            return list(reader)


def history(*entries: str) -> list[tuple[str, ...]]:
    """History entries written as 'operation reason new_state new_amount new_payout'."""
    return [tuple(entry.split()) for entry in entries]


FORMULA_HEADER_BUG = (
    "bug in ingest/report.write_result: header cells of the original columns are written as "
    "sent, so a column named '@SUM(1+1)' (or '=…', '+…', '-…') reaches the result CSV's header "
    "row un-neutralised; only data cells go through neutralise()"
)
ORDER_ID_BUG = (
    "bug in parsers/canonical.validate (ID_SHAPE): an OrderId may be any text of at "
    "most 64 characters, and `actions import` stores 'PO 12345' and 'Bestellung-Ä1', but a "
    "return row naming them by Oid + ActionTrackerId is refused as MALFORMED ('Oid must be "
    "1–64 letters, digits or . _ : / # - characters'), so such actions cannot be addressed by order"
)
UNTOUCHED_MOD_1 = {"MOD-1": {"State": "PENDING", "Amount": "100.00", "History": []}}
REVERSE_TWICE_BUG = (
    "engine bug: `Amount 0` on an action that is already REVERSED (its amount is then 0) is "
    "taken as a modification and answered ACTION_REVERSED, instead of a reversal of a "
    "reversed action (UNCHANGED 'already reversed'); rules.py/engine._propose only turns 0 into "
    "a reversal when the current amount is not 0"
)

CASE_LIST = [
    Case(
        "modify",
        "modify.csv",
        ledger={
            "MOD-1": {
                "State": "PENDING",
                "Amount": "60.00",
                "Payout": "4.50",
                "Modifications": 2,
                "OriginalAmount": "100.00",
                "OriginalPayout": "7.50",
                "History": history(
                    "modify ITEM_RETURNED PENDING 80.00 6.00",
                    "modify ITEM_RETURNED PENDING 60.00 4.50",
                ),
            },
            "MOD-3": {"Amount": "40.00", "Modifications": 0, "History": []},
            "LEAD-1": {"Amount": "150.00", "Payout": "12.00"},
        },
    ),
    Case("reasons", "reasons.csv", ledger={"RSN-1": {"Modifications": 14, "Payout": "6.45"}}),
    Case(
        "by-order-newest",
        "by_order.csv",
        ledger={
            "ORD-A": {"Amount": "60.00", "History": []},
            "ORD-B": {"Amount": "65.00", "History": []},
            "ORD-N": {"Amount": "30.00", "History": []},
            "ORD-X2": {"Amount": "20.00", "History": []},
        },
    ),
    Case("aliases", "aliases.csv", ledger={"ALI-2": {"CustomerStatus": "EXISTING"}}),
    Case("aliases-order", "aliases_order.csv"),
    Case(
        "aliases-items",
        "aliases_items.csv",
        ledger={"IA-1": {"Items": [("IA-A", 1, "8.00", "Sale")]}},
    ),
    Case(
        "order-ids-as-spec-allows",
        "order_ids.csv",
    ),
    Case(
        "mixed-identifiers-in-file-order",
        "mixed_identifiers.csv",
        ledger={
            "MIX-1": {
                "Amount": "70.00",
                "Payout": "5.25",
                "History": history(
                    "modify ORDER_UPDATE PENDING 80.00 6.00",
                    "reverse ITEM_RETURNED REVERSED 0.00 0.00",
                    "reset RESET PENDING 100.00 7.50",
                    "modify ORDER_UPDATE PENDING 70.00 5.25",
                ),
            },
        },
    ),
    Case(
        "other-campaign",
        "other.csv",
        campaign="other",
        ledger={"MOD-1": {"Amount": "100.00", "History": []}, "OT-2": {"State": "REVERSED"}},
    ),
    Case(
        "customer-status",
        "customer_status.csv",
        ledger={
            "CS-1": {"CustomerStatus": "EXISTING", "Modifications": 1, "Amount": "100.00"},
            "CS-3": {"CustomerStatus": "Returning VIP", "Payout": "12.00"},
        },
    ),
    Case(
        "reverse",
        "reverse.csv",
        ledger={
            "REV-1": {
                "State": "REVERSED",
                "Amount": "0.00",
                "Payout": "0.00",
                "Modifications": 0,
                "OriginalAmount": "100.00",
                "History": history("reverse ITEM_RETURNED REVERSED 0.00 0.00"),
            },
        },
    ),
    Case(
        "reverse-twice",
        "reverse_twice.csv",
    ),
    Case(
        "zero-amount",
        "zero_amount.csv",
        ledger={"Z-2": {"State": "PENDING", "CustomerStatus": "EXISTING"}},
    ),
    Case(
        "reset-3-columns",
        "reset.csv",
        setup=("reset_setup.csv", "reset_setup_items.csv"),
        ledger={
            "RS-1": {
                "State": "PENDING",
                "Amount": "100.00",
                "Payout": "7.50",
                "CustomerStatus": "NEW",
                "History": history(
                    "modify ITEM_RETURNED PENDING 60.00 4.50", "reset RESET PENDING 100.00 7.50"
                ),
            },
            "RS-2": {"State": "PENDING", "Amount": "100.00", "Payout": "7.50"},
            "RS-6": {
                "Amount": "50.00",
                "Payout": "3.75",
                "Items": [("RSI-A", 2, "20.00", "Toys"), ("RSI-B", 1, "30.00", "Toys")],
            },
        },
    ),
    Case(
        "reset-chain",
        "reset_chain.csv",
        ledger={
            "CH-1": {
                "State": "PENDING",
                "Amount": "55.00",
                "Payout": "4.13",
                "History": history(
                    "modify ITEM_RETURNED PENDING 60.00 4.50",
                    "reverse ITEM_RETURNED REVERSED 0.00 0.00",
                    "reset RESET PENDING 100.00 7.50",
                    "modify ORDER_UPDATE PENDING 55.00 4.13",
                ),
            },
        },
    ),
    Case(
        "approved-then-modify",
        "approve.csv",
        ledger={
            "AP-1": {
                "State": "APPROVED",
                "Amount": "100.00",
                "History": history("approve APPROVED APPROVED 100.00 7.50"),
            },
        },
    ),
    Case(
        "custom-codes",
        "custom_codes.csv",
        # Line 3 gives an Amount with a reversing code: an error, not a silently dropped amount.
        messages=(
            (3, "Amount cannot be given with Reason 'CHARGEBACK'"),
            (7, "Reason"),
            (8, "Amount"),
        ),
        ledger={
            "CC-1": {"Amount": "75.00", "Payout": "5.63", "Modifications": 1},
            "CC-2": {"State": "PENDING", "Amount": "100.00", "History": []},
            "CC-3": {"State": "REVERSED", "Amount": "0.00", "OriginalAmount": "100.00"},
            "CC-4": {"State": "APPROVED"},
        },
    ),
    Case(
        "items-long",
        "items_long.csv",
        messages=((5, "SKU-Z"),),
        ledger={
            "IT-1": {
                "Amount": "65.00",
                "Payout": "4.88",
                "Items": [("SKU-A", 1, "20.00", "Shoes"), ("SKU-B", 1, "45.00", "Accessories")],
            },
            "IT-2": {"Amount": "6.67", "Items": [("SKU-C", 2, "6.67", "Socks")]},
        },
    ),
    Case(
        "items-wide",
        "items_wide.csv",
        ledger={
            "IW-1": {
                "Amount": "40.00",
                "Items": [("W-A", 1, "15.00", "Home"), ("W-B", 1, "25.00", "Home")],
            },
            "IW-2": {
                "Amount": "50.00",
                "Items": [("W-A", 2, "30.00", "Home"), ("W-B", 1, "20.00", "Gifts")],
            },
            "IW-3": {"State": "REVERSED", "Amount": "0.00"},
        },
    ),
    Case(
        "item-price",
        "item_price.csv",
        ledger={"IP-1": {"Items": [("SKU-P", 3, "29.97", "Paper"), ("SKU-Q", 0, "0.00", "Pens")]}},
    ),
    Case(
        "items-all-zero",
        "items_all_zero.csv",
        ledger={
            "IZ-1": {
                "State": "REVERSED",
                "Amount": "0.00",
                "Payout": "0.00",
                "Items": [("Z-A", 0, "0.00", "Garden"), ("Z-B", 0, "0.00", "Garden")],
            },
        },
    ),
    Case(
        "item-errors",
        "items_errors.csv",
        messages=((3, "ItemPrice"), (4, "Quantity"), (5, "Quantity"), (6, "Quantity")),
        ledger={"IE-1": {"Amount": "20.00", "Modifications": 1}, "E-OK": {"History": []}},
    ),
    Case(
        "row-errors",
        "errors.csv",
        messages=(
            (2, "negative"),
            (3, "thousands separator"),
            (4, "decimal comma"),
            (5, "more than 2 decimal places"),
            (6, "too large"),
            (7, "Amount"),
            (8, "currencyCode"),
            (9, "ActionTrackerId"),
            (10, "Reason"),
            (11, "scientific notation"),
            (12, "Amount"),
            (29, "CustomerStatus"),
        ),
        ledger={
            "E-OK": {"Amount": "100.00", "History": []},
            "E-CS": {"Amount": "100.00", "State": "PENDING", "History": []},
            "OT-1": {"Amount": "100.00", "History": []},
        },
    ),
    Case(
        "modification-limit",
        "modlimit.csv",
        ledger={"ML-1": {"State": "REVERSED", "Modifications": 1000}},
    ),
    Case(
        "semicolon-cp1252",
        "semicolon_cp1252.csv",
        warnings=None,
        summary={"encoding": "windows-1252", "delimiter": ";"},
        messages=((3, "decimal comma"),),
        ledger={"FMT-SC1": {"CustomerStatus": "Stammkunde – Ü €", "Amount": "80.00"}},
    ),
    Case("tab", "tab.tsv", summary={"delimiter": "\t"}),
    Case(
        "pipe",
        "pipe.txt",
        summary={"delimiter": "|"},
        ledger={"FMT-P1": {"CustomerStatus": "Smith, J."}},
    ),
    Case("utf8-bom", "bom.csv", summary={"encoding": "utf-8", "delimiter": ","}),
    Case(
        "xml",
        "returns.xml",
        summary={"format": "xml"},
        ledger={"FMT-X3": {"CustomerStatus": "EXISTING"}},
    ),
    Case(
        "xlsx",
        "modify.xlsx",
        build=xlsx_of("modify.csv", numeric=("Amount",)),
        expected="modify.expected.csv",
        summary={"format": "xlsx"},
    ),
    Case("gz", "by_order.csv.gz", build=gz_of("by_order.csv"), expected="by_order.expected.csv"),
    Case(
        "zip",
        "custom_codes.zip",
        build=zip_of("custom_codes.csv"),
        expected="custom_codes.expected.csv",
    ),
    Case(
        "formula-injection",
        "formula.csv",
        messages=((2, "Reason"), (5, "negative")),
        cells=(
            (2, 3, "'=1+1"),
            (3, 2, "'+SUM(A1:A9)"),
            (4, 2, "'@cmd"),
            (5, 1, "'-2+3"),
            (6, 2, '\'=HYPERLINK("http://evil.example","x")'),
            (3, 0, "FX-1"),
        ),
        ledger={"FX-1": {"CustomerStatus": "+SUM(A1:A9)"}, "FX-2": {"CustomerStatus": "@cmd"}},
    ),
    Case(
        "formula-in-header",
        "formula_header.csv",
        warnings=("'@SUM(1+1)'",),
        cells=((1, 3, "'@SUM(1+1)"),),
    ),
    Case(
        "quoting-blank-and-ragged-lines",
        "quoting.csv",
        messages=((4, "5 fields"),),
        ledger={"QT-1": {"CustomerStatus": "Smith,\nJ."}, "QT-2": {"State": "REVERSED"}},
    ),
    Case(
        "mangled-id",
        "mangled_id.csv",
        messages=((2, "scientific notation"), (3, "scientific notation")),
        ledger={"123000": {"Amount": "10.00", "Modifications": 1}},
    ),
    Case(
        "unknown-and-partner-columns",
        "columns.csv",
        warnings=("'PartnerId'", "'Comment'"),
        ledger={"WC-1": {"PartnerId": "P-1", "Amount": "70.00"}},
    ),
    Case(
        "xlsx-that-is-csv",
        "xlsx_is_csv.xlsx",
        warnings=None,
        summary={"format": "csv"},
    ),
    Case("rows-at-limit", f"rows_{MAX_ROWS}", build=rows_of(MAX_ROWS)),
    # File-level failures: nothing is applied.
    Case("empty", "empty.csv", "FAILED", "EMPTY_FILE"),
    Case("no-header", "no_header.csv", "FAILED", "NO_HEADER", ledger=UNTOUCHED_MOD_1),
    Case("no-identifier-column", "no_identifier.csv", "FAILED", "NO_IDENTIFIER_COLUMN"),
    Case(
        "oid-without-tracker-column",
        "no_identifier_oid.csv",
        "FAILED",
        "NO_IDENTIFIER_COLUMN",
    ),
    Case(
        "duplicate-column",
        "duplicate_column.csv",
        "FAILED",
        "DUPLICATE_COLUMN",
        ledger=UNTOUCHED_MOD_1,
    ),
    Case("too-large", "too_large.csv", REFUSED, "TOO_LARGE", build=too_large),
    Case(
        "too-many-rows",
        f"rows_{MAX_ROWS + 1}",
        "FAILED",
        "TOO_MANY_ROWS",
        build=rows_of(MAX_ROWS + 1),
    ),
    Case("corrupt-zip", "corrupt.zip", "FAILED", "CORRUPT_ARCHIVE", ledger=UNTOUCHED_MOD_1),
    Case("encrypted-zip", "encrypted.zip", "FAILED", "ENCRYPTED", ledger=UNTOUCHED_MOD_1),
    Case("gz-over-uncompressed-limit", "bomb.csv.gz", "FAILED", "TOO_LARGE", build=gz_bomb),
    Case("zip-of-two-files", "two_files.zip", "FAILED", "UNSUPPORTED_FORMAT"),
    Case("pdf", "returns.pdf", "FAILED", "UNSUPPORTED_FORMAT"),
    Case("binary-garbage", "garbage.csv", "FAILED", "UNREADABLE"),
    Case("malformed-xml", "malformed.xml", "FAILED", "UNREADABLE", ledger=UNTOUCHED_MOD_1),
]


def params(cases: list[Case]) -> list[Any]:
    """pytest params named by case id, xfail-marked where a known engine bug is reported."""
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else [],
        )
        for case in cases
    ]


# --- checks --------------------------------------------------------------------------------------


def run_case(env: Env, case: Case) -> None:
    """Ingest the case's setup files and its file, then check everything the case expects."""
    for name in case.setup:
        run = env.ingest(CASES / name, case.campaign)
        assert run.exit_code == 0, (name, run.out, run.err)
    path = case.build(env.root / "in") if case.build else CASES / case.file
    run = env.ingest(path, case.campaign)
    if case.status == REFUSED:
        assert run.exit_code == 1, run.out
        assert case.error and case.error in run.err, run.err
        assert env.cli("files", "list", "--json").json() == []
    else:
        check_summary(env, case, run)
    for action_id, fields in case.ledger.items():
        check_action(env.action(action_id), fields)


def check_summary(env: Env, case: Case, run: Run) -> None:
    """The JSON summary, the exit code and, for a COMPLETE file, the result CSV."""
    doc = run.json()
    assert doc["status"] == case.status, doc.get("error")
    assert run.exit_code == (0 if case.status == "COMPLETE" else 1)
    assert doc["campaign"] == case.campaign and doc["channel"] == "cli"
    if case.status != "COMPLETE":
        assert doc["error"]["code"] == case.error, doc["error"]
        assert doc["error"]["message"]
        assert env.cli("files", "result", doc["file_id"]).exit_code == 1
        return
    expected = case.expected_rows()
    assert doc["counts"] == counts_of(expected)
    for key, value in case.summary.items():
        assert doc[key] == value, key
    if case.warnings is not None:
        assert len(doc["warnings"]) == len(case.warnings), doc["warnings"]
        for text in case.warnings:
            assert any(text in warning for warning in doc["warnings"]), (text, doc["warnings"])
    check_result(env, case, doc, expected)


def counts_of(expected: list[dict[str, str]]) -> dict[str, Any]:
    """The summary counts the expected result implies."""
    status = Counter(row["Status"] for row in expected)
    codes = Counter(row["ErrorCode"] for row in expected if row["ErrorCode"])
    return {
        "lines": len(expected),
        "applied": status["APPLIED"],
        "unchanged": status["UNCHANGED"],
        "errors": status["ERROR"],
        "by_error_code": dict(sorted(codes.items())),
    }


def check_result(env: Env, case: Case, doc: dict[str, Any], expected: list[dict[str, str]]) -> None:
    """The result CSV: original columns, then RESULT_COLUMNS; compare the expected columns."""
    csv_input = doc["format"] == "csv"
    encoding = doc["encoding"] if csv_input else "utf-8"
    header, rows = env.result(doc["file_id"], encoding, doc["delimiter"] if csv_input else ",")
    width = len(header) - len(RESULT_COLUMNS)
    assert tuple(header[width:]) == RESULT_COLUMNS
    assert len(set(header)) == len(header), header  # a result can be sent again as it is
    outcome = [dict(zip(RESULT_COLUMNS, row[width:], strict=True)) for row in rows]
    for row in outcome:
        row["ActionId"] = row["ResolvedActionId"]  # the expected files name it ActionId
    actual = [{c: row[c] for c in EXPECTED_COLUMNS} for row in outcome]
    assert actual == expected
    by_line = {row["Line"]: row for row in outcome}
    for row in outcome:
        assert row["ErrorType"] == error_type(row["ErrorCode"]), row
        assert bool(row["Message"]) or row["Status"] != "ERROR", row
    for line, text in case.messages:
        assert text in by_line[str(line)]["Message"], (line, by_line[str(line)]["Message"])
    original = {"1": header[:width]} | {row[width:][0]: row[:width] for row in rows}
    for line, column, value in case.cells:
        assert original[str(line)][column] == value, (line, column)


def error_type(code: str) -> str:
    """The ErrorType column: Validation for shape errors, Contract for the rest."""
    if not code:
        return ""
    return "Validation" if code in VALIDATION_CODES else "Contract"


def check_action(doc: dict[str, Any], fields: dict[str, Any]) -> None:
    """Compare `actions show` fields; Items and History in a compact tuple form."""
    for key, value in fields.items():
        if key == "Items":
            items = [(i["Sku"], i["Quantity"], i["Amount"], i["Category"]) for i in doc["Items"]]
            assert items == value, (doc["ActionId"], items)
        elif key == "History":
            entries = [
                (h["operation"], h["reason"], h["new_state"], h["new_amount"], h["new_payout"])
                for h in doc["History"]
            ]
            assert entries == value, (doc["ActionId"], entries)
        else:
            assert doc[key] == value, (doc["ActionId"], key, doc[key])


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", params(CASE_LIST))
def test_case(env: Env, case: Case) -> None:
    """Each case through the CLI in-process."""
    run_case(env, case)


SUBPROCESS_CASES = ("modify", "semicolon-cp1252", "no-header", "too-large")


@pytest.mark.parametrize("case", params([c for c in CASE_LIST if c.id in SUBPROCESS_CASES]))
def test_case_subprocess(env: Env, case: Case) -> None:
    """A few cases through the installed `returnsd` executable, as an operator runs it."""
    env.use_subprocess = True
    run_case(env, case)


def test_every_spec_error_code_has_a_case() -> None:
    """Every row error code of the returns-file rules appears in some expected result."""
    spec = {
        "MALFORMED",
        "MISSING_IDENTIFIER",
        "UNKNOWN_REASON",
        "ACTION_NOT_FOUND",
        "ACTIONTRACKER_NOT_FOUND",
        "ACTIONTRACKER_CAMPAIGN_MISMATCH",
        "ACTION_LOCKED",
        "ACTION_REVERSED",
        "CPC_NOT_SUPPORTED",
        "MODIFICATION_LIMIT",
        "CURRENCY_MISMATCH",
        "ITEM_NOT_FOUND",
    }
    seen = {
        row["ErrorCode"]
        for case in CASE_LIST
        if case.status == "COMPLETE" and not case.xfail
        for row in case.expected_rows()
    }
    assert spec <= seen, spec - seen


def test_every_file_level_failure_has_a_case() -> None:
    """Every file-level failure code has a case (DUPLICATE: test_duplicate_bytes)."""
    codes = {
        "EMPTY_FILE", "NO_HEADER", "NO_IDENTIFIER_COLUMN", "DUPLICATE_COLUMN", "TOO_LARGE",
        "TOO_MANY_ROWS", "UNSUPPORTED_FORMAT", "UNREADABLE", "ENCRYPTED", "CORRUPT_ARCHIVE",
    }  # fmt: skip
    assert codes <= {case.error for case in CASE_LIST}


def test_every_expected_file_is_used() -> None:
    """No orphan fixture: each <case>.expected.csv belongs to a case."""
    used = {
        case.expected or f"{Path(case.file).name.split('.')[0]}.expected.csv" for case in CASE_LIST
    }
    assert {p.name for p in CASES.glob("*.expected.csv")} <= used


def test_duplicate_bytes(env: Env) -> None:
    """The same bytes again for the same campaign: DUPLICATE, exit 1, nothing applied twice."""
    first = env.ingest(CASES / "modify.csv")
    assert first.exit_code == 0
    again = env.root / "in" / "modify_again.csv"
    shutil.copyfile(CASES / "modify.csv", again)
    run = env.ingest(again)
    doc = run.json()
    assert run.exit_code == 1
    assert doc["status"] == "DUPLICATE"
    assert doc["duplicate_of"] == first.json()["file_id"]
    assert doc["error"]["code"] == "DUPLICATE"
    check_action(env.action("MOD-1"), {"Amount": "60.00", "Modifications": 2})
    assert len(env.action("MOD-1")["History"]) == 2


def test_same_bytes_other_campaign_is_not_a_duplicate(env: Env) -> None:
    """Duplicate detection is per campaign: the same bytes for another campaign are processed."""
    assert env.ingest(CASES / "modify.csv").exit_code == 0
    run = env.ingest(CASES / "modify.csv", "other")
    doc = run.json()
    assert run.exit_code == 0 and doc["status"] == "COMPLETE"
    assert doc["counts"]["by_error_code"] == {"ACTION_NOT_FOUND": 10}


def test_unknown_campaign_is_a_usage_error(env: Env) -> None:
    """Exit code 2 for a campaign that is not configured."""
    run = env.ingest(CASES / "modify.csv", "nope")
    assert run.exit_code == 2
    assert "unknown campaign" in run.err


@pytest.mark.parametrize(
    ("name", "text"),
    [("semicolon_cp1252.csv", "windows-1252"), ("xlsx_is_csv.xlsx", "named .xlsx")],
)
def test_reader_warnings_reach_the_summary(env: Env, name: str, text: str) -> None:
    """A file read other than its name or encoding suggests says so in its summary."""
    doc = env.ingest(CASES / name).json()
    assert doc["status"] == "COMPLETE"
    assert any(text in warning for warning in doc["warnings"]), doc["warnings"]


def test_modlimit_fixture_is_current() -> None:
    """fixtures/cases/modlimit*.csv are what make_modlimit.py writes."""
    module = runpy.run_path(str(CASES / "make_modlimit.py"))
    data, expected = module["rows"]()
    assert (CASES / "modlimit.csv").read_text() == "\n".join(data) + "\n"
    assert (CASES / "modlimit.expected.csv").read_text() == "\n".join(expected) + "\n"
