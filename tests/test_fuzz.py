"""Fuzzing the parsers and the row validation with hypothesis.

- Random bytes, and mutations of every valid fixture (fixtures/formats, fixtures/cases,
  fixtures/bad/files): bit flips, overwrites, inserts, deletions, truncation, splices with another
  fixture, duplicated chunks. `read_table` + `canonicalise` may raise nothing but `FileRejected`.
- Generated CSV text from a grammar of hostile header names and cell values, with broken quoting.
- `parsers.canonical.validate` on random canonical frames (any unicode, white space, huge values):
  it never raises, every row gets no error or a known code, and `amount` / item amounts, `quantity`
  and `tracker` are exact for well-formed values (checked against `decimal.Decimal` and `int`).
- The xlsx pre-scan against calamine itself: on random small sheets (cells with and without `r`,
  odd quoting and case, repeated attributes), the span the scan computes holds calamine's span.

The short form runs 200 examples per test (`make test`); `RETURNSD_LONG=1` runs 20,000 per test
(profile `returnsd-fuzz-long`, or set `RETURNSD_FUZZ_EXAMPLES`). Each profile is applied per test,
so other test modules keep hypothesis's defaults. Whatever a run finds becomes a file of the
bad-input corpus (fixtures/bad/make_corpus.py).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from parsers.base import ParseLimits
from parsers.canonical import _clean, canonicalise, validate
from parsers.errors import FileRejected
from parsers.readers import read_table
from parsers.reasons import REASON_CODES, suggest_reason, unknown_reason_message
from parsers.validation import RULES, SUGGESTED

ROOT = Path(__file__).resolve().parents[1]
LONG = os.environ.get("RETURNSD_LONG") == "1"
EXAMPLES = int(os.environ.get("RETURNSD_FUZZ_EXAMPLES", 20_000 if LONG else 200))

settings.register_profile(
    "returnsd-fuzz-short",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "returnsd-fuzz-long",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = settings(
    settings.get_profile("returnsd-fuzz-long" if LONG else "returnsd-fuzz-short"),
    max_examples=EXAMPLES,
)
LIMITS = ParseLimits(max_rows=5_000, max_uncompressed_bytes=20_000_000, max_archive_members=10)
ROW_CODES = {"MALFORMED", "MISSING_IDENTIFIER", "UNKNOWN_REASON"}
CUSTOM = {"DAMAGED_IN_TRANSIT": "modify", "CHARGEBACK": "reverse", "VIP_APPROVE": "approve"}
TIMEOUT = 3_600 if LONG else 120


def fixture_files() -> list[Path]:
    """Every input fixture (formats, cases, the bad-input corpus) but those of known bugs."""
    folders = [
        ROOT / "fixtures" / "formats",
        ROOT / "fixtures" / "cases",
        ROOT / "fixtures" / "bad" / "files",
    ]
    found = [
        p
        for folder in folders
        for p in sorted(folder.iterdir())
        if p.is_file()
        and p.suffix != ".py"
        and not p.name.endswith((".expected.csv", ".md", ".yaml"))
    ]
    manifest = json.loads((ROOT / "fixtures" / "bad" / "expected.json").read_text("utf-8"))
    known_bugs = {name for name, e in manifest["files"].items() if e.get("xfail")}
    return [p for p in found if p.stat().st_size <= 300_000 and p.name not in known_bugs]


FIXTURES = fixture_files()
FIXTURE_BYTES = {p: p.read_bytes() for p in FIXTURES}


def parse(name: str, data: bytes) -> None:
    """Read and canonicalise `data`; only FileRejected may escape, with a known code."""
    try:
        raw = read_table(name, data, LIMITS)
        canon = canonicalise(raw, CUSTOM)
    except FileRejected as exc:
        assert exc.code and exc.message
        return
    codes = set(canon.rows["error_code"].dropna().unique())
    assert codes <= ROW_CODES, codes
    lines = canon.rows["line"].to_numpy()
    assert (lines >= 2).all()


# --- bytes ---------------------------------------------------------------------------------------

NAMES = st.sampled_from(["r.csv", "r.xml", "r.xlsx", "r.zip", "r.csv.gz", "r.txt", "r"])


@pytest.mark.timeout(TIMEOUT)
@PROFILE
@given(NAMES, st.binary(max_size=4096))
def test_random_bytes_raise_only_file_rejected(name: str, data: bytes) -> None:
    """Any bytes under any name: a table or a FileRejected, nothing else."""
    parse(name, data)


MAGIC = st.sampled_from(
    [
        b"",
        b"PK\x03\x04",
        b"\x1f\x8b\x08",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"\xfe\xff",
        b"<",
        b"<?xml ",
    ]
)


@pytest.mark.timeout(TIMEOUT)
@PROFILE
@given(NAMES, MAGIC, st.binary(max_size=2048))
def test_random_bytes_behind_a_magic_number(name: str, magic: bytes, data: bytes) -> None:
    """Random bytes after a zip, gzip, BOM or XML start reach the deeper readers."""
    parse(name, magic + data)


Edit = tuple[str, float, float, int]
EDITS = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate", "splice", "duplicate", "swap"]),
    st.floats(0, 1),
    st.floats(0, 1),
    st.integers(0, 255),
)


def mutate(data: bytes, edits: list[Edit], other: bytes) -> bytes:
    """Apply the edits: positions are fractions of the current length."""
    out = bytearray(data)
    for how, where, span, value in edits:
        at = int(where * len(out))
        size = 1 + int(span * min(len(out), 4096))
        if how == "flip" and at < len(out):
            out[at] ^= 1 << (value % 8)
        elif how == "set" and at < len(out):
            out[at] = value
        elif how == "insert":
            out[at:at] = bytes([value]) * (1 + value % 8)
        elif how == "delete":
            del out[at : at + size]
        elif how == "truncate":
            del out[at:]
        elif how == "splice":
            start = int(span * len(other))
            out[at:] = other[start:]
        elif how == "duplicate":
            out[at:at] = out[at : at + size]
        elif how == "swap":
            chunk = bytes(out[at : at + size])
            del out[at : at + size]
            there = int(span * len(out))
            out[there:there] = chunk
    return bytes(out)


@pytest.mark.timeout(TIMEOUT)
@PROFILE
@given(
    st.sampled_from(FIXTURES),
    st.lists(EDITS, min_size=1, max_size=8),
    st.sampled_from(FIXTURES),
    st.booleans(),
)
def test_mutated_fixtures_raise_only_file_rejected(
    path: Path, edits: list[Edit], other: Path, rename: bool
) -> None:
    """Every fixture, damaged in up to eight ways, under its own name or another."""
    data = mutate(FIXTURE_BYTES[path], edits, FIXTURE_BYTES[other])
    parse(other.name if rename else path.name, data)


def rezip(data: bytes, edits: list[Edit], other: bytes) -> bytes:
    """Mutate each member of a zip (an .xlsx's XML parts) and zip it again, so the damage passes
    the CRC and reaches the reader inside."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        members = [(info.filename, source.read(info)) for info in source.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for i, (name, payload) in enumerate(members):
            mine = [e for j, e in enumerate(edits) if j % len(members) == i]
            target.writestr(name, mutate(payload, mine, other) if mine else payload)
    return out.getvalue()


ZIPS = [p for p in FIXTURES if zipfile.is_zipfile(p)]


@pytest.mark.timeout(TIMEOUT)
@PROFILE
@given(
    st.sampled_from(ZIPS),
    st.lists(EDITS, min_size=1, max_size=12),
    st.sampled_from(FIXTURES),
)
def test_mutated_zip_members_raise_only_file_rejected(
    path: Path, edits: list[Edit], other: Path
) -> None:
    """Workbooks and zips whose parts are damaged but correctly packed (calamine sees them)."""
    try:
        data = rezip(FIXTURE_BYTES[path], edits, FIXTURE_BYTES[other])
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError, EOFError):
        assume(False)
    parse(path.name, data)


# --- grammar-generated CSV -----------------------------------------------------------------------

HEADERS = st.one_of(
    st.sampled_from(
        [
            "ActionId",
            "action_id",
            "ACTIONID",
            " ActionId ",
            "Oid",
            "OrderId",
            "ActionTrackerId",
            "Amount",
            "amount",
            "currencyCode",
            "Currency",
            "CustomerStatus",
            "Reason",
            "DispositionCode",
            "Sku",
            "ItemSku",
            "Quantity",
            "ItemSubtotal",
            "ItemPrice",
            "Category",
            "Sku1",
            "Quantity1",
            "Amount1",
            "Sku2",
            "Quantity2",
            "ItemPrice2",
            "Sku999",
            "PartnerId",
            "EventDate",
            "",
            " ",
            "=cmd|'/C calc'!A0",
            "\ufeffActionId",
        ]
    ),
    st.text(max_size=12),
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "0.00",
            "80.00",
            "1,234.56",
            "-1",
            "12.345",
            "1.23E+05",
            "00123",
            "999999.99",
            "1000000",
            ".5",
            "5.",
            "NaN",
            "ITEM_RETURNED",
            "item_returned",
            "RESET",
            "APPROVED",
            "CHARGEBACK",
            "VIP_APPROVE",
            "DAMAGED_IN_TRANSIT",
            "USD",
            "usd",
            "EUR",
            "3001",
            "4001",
            "1.0",
            '=HYPERLINK("x")',
            "+1",
            "@SUM(1)",
            "\t=1",
            "\r=1",
            '"',
            '""',
            "a,b",
            "a;b",
            "a\nb",
            "a\r\nb",
            "\x00",
            "\u200b",
            "\U0001f600",
            "x" * 200,
        ]
    ),
    st.text(max_size=20),
    st.from_regex(r"\A[0-9]{1,7}(\.[0-9]{0,3})?\Z"),
)


def quote(value: str, how: int) -> str:
    """Write a cell: bare, quoted correctly, or quoted wrongly on purpose."""
    if how == 0:
        return value
    if how == 1:
        return '"' + value.replace('"', '""') + '"'
    return '"' + value  # an unbalanced quote


@pytest.mark.timeout(TIMEOUT)
@PROFILE
@given(
    st.lists(HEADERS, min_size=1, max_size=8),
    st.lists(
        st.lists(st.tuples(VALUES, st.sampled_from([0, 0, 0, 1, 1, 2])), max_size=9), max_size=12
    ),
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
)
def test_generated_csv_raises_only_file_rejected(
    header: list[str],
    rows: list[list[tuple[str, int]]],
    delimiter: str,
    newline: str,
    encoding: str,
) -> None:
    """Header names and cells from a hostile grammar, any delimiter, newline and encoding."""
    lines = [delimiter.join(quote(h, 1 if delimiter in h or '"' in h else 0) for h in header)]
    lines += [delimiter.join(quote(v, how) for v, how in row) for row in rows]
    data = newline.join(lines).encode(encoding, errors="replace")
    parse("r.csv", data)


# --- the row validation --------------------------------------------------------------------------

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
DECIMAL_DIGITS: tuple[Literal["Nd"]] = ("Nd",)
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=SURROGATES), max_size=30)
# Digits of every script (Arabic-Indic, full-width, Devanagari, …): only 0-9 count as digits.
ANY_DIGITS = st.text(
    st.characters(categories=DECIMAL_DIGITS) | st.sampled_from(".,"), min_size=1, max_size=9
)
MONEYISH = st.one_of(
    st.from_regex(r"\A[0-9]{0,8}(\.[0-9]{0,3})?\Z"),
    st.sampled_from(["0", "0.0", "00.01", "999999.99", "1000000", ".", ".5", "5.", "-1", "1e3"]),
    ANY_DIGITS,
)
INTISH = st.one_of(
    st.from_regex(r"\A[0-9]{0,11}\Z"), st.sampled_from(["0", "-0", "1.0", "+1"]), ANY_DIGITS
)
HUGE = st.builds(
    lambda c, n: c * n, st.sampled_from(["9", "x", "é", " ", "\u0000"]), st.integers(60, 20_000)
)


def cell_values(kind: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    """A column's cells: missing, well-shaped, any text, or huge."""
    return st.one_of(st.none(), kind, ANY_TEXT, HUGE)


FIELDS: dict[str, st.SearchStrategy[str | None]] = {
    "action_id": cell_values(st.sampled_from(["B-001", "1.23E+05", "00123", "a" * 64, "a" * 65])),
    "order_id": cell_values(st.sampled_from(["O-1", "4.00E+12", "PO 12345"])),
    "tracker": cell_values(INTISH),
    "amount": cell_values(MONEYISH),
    "currency": cell_values(st.sampled_from(["USD", "usd", "US$", "EURO"])),
    "customer_status": cell_values(st.sampled_from(["NEW", "x" * 65])),
    "reason": cell_values(st.sampled_from([*CUSTOM, "ITEM_RETURNED", "reset", "Approved"])),
    "sku": cell_values(st.sampled_from(["SKU-A", "s" * 129])),
    "quantity": cell_values(INTISH),
    "item_amount": cell_values(MONEYISH),
    "item_price": cell_values(MONEYISH),
    "category": cell_values(st.sampled_from(["Shoes"])),
}
TEXT = "string[pyarrow]"


@st.composite
def canonical_frames(draw: st.DrawFn) -> pd.DataFrame:
    """A frame shaped like parsers.canonical's output before validate, cells all text."""
    n = draw(st.integers(0, 12))
    # As the pipeline hands them over: trimmed, empty → missing (parsers.canonical._clean).
    columns: dict[str, Any] = {
        name: _clean(pd.Series(pd.array([draw(kind) for _ in range(n)], dtype=TEXT)))
        for name, kind in FIELDS.items()
    }
    columns["line"] = pd.Series(np.arange(2, 2 + n, dtype=np.int64))
    columns["is_item"] = pd.Series([draw(st.booleans()) for _ in range(n)], dtype=bool)
    return pd.DataFrame(columns)


MONEY_SHAPE = re.compile(r"[0-9]{0,6}(\.[0-9]{1,2})?")
INT_SHAPE = {"quantity": re.compile(r"[0-9]{1,6}"), "tracker": re.compile(r"[0-9]{1,9}")}


@pytest.mark.timeout(TIMEOUT)
@PROFILE
@given(canonical_frames(), st.sampled_from([{}, CUSTOM]))
def test_validate_never_raises_and_money_is_exact(
    frame: pd.DataFrame, codes: dict[str, str]
) -> None:
    """validate types every column and marks bad rows, for any text in any column."""
    out = validate(frame, codes)
    assert len(out) == len(frame)
    assert set(out["error_code"].dropna().unique()) <= ROW_CODES
    assert out["error_message"].notna().tolist() == out["error_code"].notna().tolist()
    for name in ("amount", "item_amount", "item_price"):
        for raw, cents, failed in zip(
            frame[name], out[name], out["error_code"].notna(), strict=True
        ):
            check_money(raw, cents, failed)
    for name, shape in INT_SHAPE.items():
        for raw, value, failed in zip(
            frame[name], out[name], out["error_code"].notna(), strict=True
        ):
            if raw is pd.NA or raw is None:
                assert value is pd.NA
            elif shape.fullmatch(raw):
                assert value == int(raw)
            else:
                assert value is pd.NA and failed


def check_money(raw: Any, cents: Any, failed: bool) -> None:
    """A well-shaped amount gives its exact cents; anything else gives NA and a row error."""
    if raw is pd.NA or raw is None:
        assert cents is pd.NA
    elif MONEY_SHAPE.fullmatch(raw) and raw not in ("", "."):
        assert cents == int(Decimal(raw) * 100), (raw, cents)
    else:
        assert cents is pd.NA and failed, (raw, cents)


SEPARATORS = st.sampled_from([" ", "_", "-", "  ", " - ", "."])


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(REASON_CODES)), st.data())
def test_a_standard_code_respelled_is_suggested(code: str, data: st.DataObject) -> None:
    """Any case, any separators between its words: the code itself is suggested."""
    words = code.split("_")
    seps = [data.draw(SEPARATORS) for _ in words[1:]]
    cased = [data.draw(st.sampled_from([w, w.lower(), w.title()])) for w in words]
    value = cased[0] + "".join(s + w for s, w in zip(seps, cased[1:], strict=True))
    assert suggest_reason(value, CUSTOM) == code
    if value.upper() != code:
        assert f"did you mean {code}?" in unknown_reason_message(value, CUSTOM)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Item Returned", "Reason 'Item Returned' is neither"),
        ("ITEM_RETURNEDX", "did you mean ITEM_RETURNED?"),
        ("APPROVE", "did you mean APPROVED?"),
        (
            "chargeback",
            "did you mean CHARGEBACK? The campaign's disposition codes are case-sensitive",
        ),
        ("vip approve", "did you mean VIP_APPROVE? The campaign's disposition codes are case-sens"),
        ("CHARGEBAK", "did you mean CHARGEBACK?"),
        ("xyz", "(reason codes are e.g. ITEM_RETURNED, CONS_FRAUD"),
        ("x" * 500, "'" + "x" * 39 + "…'"),
    ],
)
def test_unknown_reason_messages(value: str, says: str) -> None:
    assert says in unknown_reason_message(value, CUSTOM)
    if "case-" not in says:
        assert "case-sensitive" not in unknown_reason_message(value, CUSTOM)


def test_unknown_reasons_echo_each_row_and_suggest_a_bounded_number() -> None:
    """Every unknown reason is echoed; only the first SUGGESTED distinct ones get a suggestion."""
    reasons = ["Item Returned", "Item Returned", *(f"RESETT{i}" for i in range(SUGGESTED + 5))]
    frame = blank_frame(len(reasons)).assign(
        action_id=pd.Series(pd.array(["B-001"] * len(reasons), dtype=TEXT)),
        reason=pd.Series(pd.array(reasons, dtype=TEXT)),
    )
    out = validate(frame, CUSTOM)
    assert set(out["error_code"]) == {"UNKNOWN_REASON"}
    messages = out["error_message"].tolist()
    assert messages[0] == messages[1] and "did you mean ITEM_RETURNED?" in messages[0]
    assert all(f"'RESETT{i}'" in m for i, m in enumerate(messages[2:]))
    assert sum("did you mean" in m for m in messages) == 2 + SUGGESTED - 1


def test_a_sku_in_a_number_cell_beyond_2_53_is_malformed() -> None:
    """Number cells in the wide item form are checked per item (the Sku of item 2 here)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["ActionId", "Reason", "Sku1", "Quantity1", "Sku2", "Quantity2"])
    sheet.append(["I-001", "ITEM_RETURNED", 4006381333931, 0, 2**60, 1])
    out = io.BytesIO()
    book.save(out)
    rows = canonicalise(read_table("items.xlsx", out.getvalue(), ParseLimits()), {}).rows
    assert rows["sku"].tolist() == ["4006381333931", str(2**60)]
    assert rows["error_code"].tolist() == [None, "MALFORMED"]
    assert "Sku was a number cell" in rows["error_message"][1]


def blank_frame(n: int) -> pd.DataFrame:
    """A canonical frame of `n` rows before validate, every field missing."""
    return pd.DataFrame(
        {name: pd.Series(pd.array([None] * n, dtype=TEXT)) for name in FIELDS}
        | {"line": pd.Series(np.arange(2, 2 + n)), "is_item": pd.Series([False] * n)}
    )


def test_every_rule_is_about_a_schema_field_and_gives_a_row_code() -> None:
    assert {rule.column for rule in RULES} <= set(FIELDS)
    assert {rule.code for rule in RULES} == ROW_CODES


def test_unicode_digits_in_an_amount_are_malformed() -> None:
    """An Amount in non-ASCII digits is a MALFORMED row, not an exception."""
    frame = pd.DataFrame(
        {name: pd.Series(pd.array([None], dtype=TEXT)) for name in FIELDS}
        | {"line": pd.Series([2]), "is_item": pd.Series([False])}
    )
    frame["action_id"] = pd.Series(pd.array(["B-001"], dtype=TEXT))
    frame["reason"] = pd.Series(pd.array(["OTHER"], dtype=TEXT))
    frame["amount"] = pd.Series(pd.array(["٣"], dtype=TEXT))
    out = validate(frame, {})
    assert out["error_code"].tolist() == ["MALFORMED"]


# --- the xlsx pre-scan against calamine ----------------------------------------------------------


@st.composite
def sheets(draw: st.DrawFn) -> str:
    """<sheetData> content: rows with or without r, cells with or without r, in odd forms."""
    out = []
    for _ in range(draw(st.integers(0, 6))):
        row_r = draw(st.one_of(st.none(), st.integers(1, 40)))
        row_attrs = f' r="{row_r}"' if row_r else ""
        if draw(st.booleans()) and row_r:
            out.append(f"<row{row_attrs}/>")
            continue
        cells = []
        for _ in range(draw(st.integers(0, 5))):
            ref = draw(st.one_of(st.none(), st.tuples(st.integers(0, 30), st.integers(1, 40))))
            attrs = ""
            if ref:
                col, row = ref
                letters = draw(st.sampled_from([str.upper, str.lower]))(_col(col))
                q = draw(st.sampled_from(['"', "'"]))
                space = draw(st.sampled_from(["", " "]))
                attrs = f" r{space}={space}{q}{letters}{row}{q}"
                if draw(st.integers(0, 9)) == 0:  # a repeated r: calamine keeps the last one
                    attrs = f' r="A1"{attrs}'
            if draw(st.booleans()):
                attrs = ' s="0"' + attrs
            value = draw(st.sampled_from(["<v>1</v>", "<is><t>x</t></is>", "", "<v></v>"]))
            kind = ' t="inlineStr"' if "<is>" in value else ""
            cells.append(
                f"<c{attrs}{kind}>{value}</c>" if value or draw(st.booleans()) else f"<c{attrs}/>"
            )
        out.append(f"<row{row_attrs}>{''.join(cells)}</row>")
    return "".join(out)


def _col(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


@pytest.mark.timeout(TIMEOUT)
@PROFILE
@given(sheets())
def test_xlsx_scan_covers_what_calamine_lays_out(sheet_data: str) -> None:
    """The span parsers.xlsxscan computes before calamine holds the span calamine lays out."""
    import python_calamine

    from parsers import xlsxscan

    make = _corpus()
    data = make.xlsx(make.sheet_xml(sheet_data))
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo("xl/worksheets/sheet1.xml")
    scan = xlsxscan._PartScan()
    for piece in xlsxscan._pieces(archive, info):
        scan.feed(piece)
    grid = scan.grid if scan.canonical else xlsxscan._emulated_grid(xlsxscan._pieces(archive, info))
    try:
        sheet = python_calamine.CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_index(
            0
        )
    except Exception:  # noqa: BLE001 - calamine refuses it (any of its errors): nothing laid out
        return
    if sheet.start is None or sheet.end is None:
        return
    (top, left), (bottom, right) = sheet.start, sheet.end
    assert grid.cells > 0
    assert grid.top <= top and grid.left <= left and grid.bottom >= bottom and grid.right >= right


_MAKE: Any = None


def _corpus() -> Any:
    """fixtures/bad/make_corpus.py, loaded once (its xlsx writer)."""
    global _MAKE
    if _MAKE is None:
        import importlib.util
        import sys

        spec = importlib.util.spec_from_file_location(
            "make_corpus", ROOT / "fixtures" / "bad" / "make_corpus.py"
        )
        assert spec and spec.loader
        _MAKE = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("make_corpus", _MAKE)
        spec.loader.exec_module(_MAKE)
    return _MAKE
