"""One rule book for every change, through the real CLI, on SQLite and PostgreSQL.

Single-action commands obey the reason rules a file row obeys; an operator's CPC override is
explicit and recorded; the history holds every changed field and, for changes that did not come
in a file, no file and no line. A file can be checked without applying it, a FAILED or DUPLICATE
file processed again, a result sent back as it is, and an XLSX export sums in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.test_cases import CASES, Env, make_env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Env:
    """The case fixtures' ledger (fixtures/cases/actions.csv, items.csv); SQLite and PostgreSQL."""
    return make_env(tmp_path, monkeypatch, db_url)


def change(env: Env, *args: str) -> tuple[int, dict[str, Any]]:
    """`returnsd actions ARGS --json`: the exit code and the outcome."""
    run = env.cli("actions", *args, "--json")
    return run.exit_code, run.json()


def history(env: Env, action_id: str) -> list[dict[str, Any]]:
    """The action's history (`actions show --json`)."""
    entries: list[dict[str, Any]] = env.action(action_id)["History"]
    return entries


@pytest.mark.parametrize("reason", ["ITEM_RETURNEDX", "customer returned it", "APPROVED", "RESET"])
def test_reverse_refuses_a_reason_that_is_not_a_reversal_reason(env: Env, reason: str) -> None:
    code, doc = change(env, "reverse", "MOD-1", "--reason", reason)
    assert code == 1
    assert (doc["status"], doc["error_code"]) == ("ERROR", "UNKNOWN_REASON"), doc
    assert env.action("MOD-1")["State"] == "PENDING"
    assert history(env, "MOD-1") == []


@pytest.mark.parametrize("reason", ["APPROVED", "RESET", "VIP_APPROVE", "Item Returned!"])
def test_modify_refuses_a_reason_that_is_not_a_modification_reason(env: Env, reason: str) -> None:
    code, doc = change(env, "modify", "MOD-1", "--customer-status", "X", "--reason", reason)
    assert code == 1 and doc["error_code"] == "UNKNOWN_REASON", doc
    assert env.action("MOD-1")["CustomerStatus"] == "NEW"


def test_modify_to_zero_reverses_as_in_a_file(env: Env) -> None:
    code, doc = change(env, "modify", "MOD-1", "--amount", "0", "--reason", "ITEM_RETURNED")
    assert code == 0 and (doc["status"], doc["state"]) == ("APPLIED", "REVERSED"), doc
    assert history(env, "MOD-1")[0]["operation"] == "reverse"


def test_reverse_modify_recorded_with_actor_and_channel_and_no_line(env: Env) -> None:
    code, doc = change(env, "reverse", "MOD-1", "--reason", "ITEM_RETURNED")
    assert code == 0 and doc["status"] == "APPLIED" and doc["state"] == "REVERSED", doc
    code, doc = change(env, "reverse", "MOD-2", "--reason", "CHARGEBACK")  # custom reverse code
    assert code == 0 and doc["state"] == "REVERSED", doc
    code, doc = change(env, "modify", "CS-1", "--customer-status", "EXISTING")
    assert code == 0 and doc["status"] == "APPLIED", doc
    (entry,) = history(env, "MOD-1")
    assert (entry["operation"], entry["reason"], entry["new_state"]) == (
        "reverse",
        "ITEM_RETURNED",
        "REVERSED",
    )
    assert entry["channel"] == "cli" and entry["actor"].startswith("cli:")
    assert entry["file_id"] is None and entry["line"] is None
    (status,) = history(env, "CS-1")
    assert status["customer_status"] == {"old": "NEW", "new": "EXISTING"}


@pytest.mark.parametrize(
    ("reason", "verb"), [("CHARGEBACK", "reverses"), ("VIP_APPROVE", "approves")]
)
def test_amount_with_a_reversing_or_approving_code_is_malformed(
    env: Env, reason: str, verb: str
) -> None:
    code, doc = change(env, "modify", "MOD-1", "--amount", "99.99", "--reason", reason)
    assert code == 1 and doc["error_code"] == "MALFORMED", doc
    assert verb in doc["message"] and "Amount" in doc["message"]
    assert env.action("MOD-1")["Amount"] == "100.00"


def test_amount_with_a_reversing_code_in_a_file_is_malformed(env: Env) -> None:
    path = env.root / "in" / "chargeback.csv"
    path.write_text(
        "ActionId,Amount,Reason\nMOD-1,99.99,CHARGEBACK\nMOD-2,,CHARGEBACK\nMOD-3,5,RESET\n"
    )
    doc = env.ingest(path).json()
    header, rows = env.result(doc["file_id"])
    by_line = {r[header.index("Line")]: dict(zip(header, r, strict=True)) for r in rows}
    assert by_line["2"]["ErrorCode"] == "MALFORMED" and "reverses" in by_line["2"]["Message"]
    assert by_line["3"]["Status"] == "APPLIED"
    assert by_line["4"]["ErrorCode"] == "MALFORMED" and "resets" in by_line["4"]["Message"]
    assert env.action("MOD-1")["State"] == "PENDING"


def test_cpc_needs_an_explicit_operator_override_which_is_recorded(env: Env) -> None:
    code, doc = change(env, "reverse", "E-CPC", "--reason", "TEST_ACTION")
    assert code == 1 and doc["error_code"] == "CPC_NOT_SUPPORTED", doc
    code, doc = change(env, "reverse", "E-CPC", "--reason", "TEST_ACTION", "--cpc-override")
    assert code == 0 and doc["status"] == "APPLIED" and doc["state"] == "REVERSED", doc
    (entry,) = history(env, "E-CPC")
    assert entry["override"] == "CPC"


def test_item_changes_are_in_the_history(env: Env) -> None:
    assert env.ingest(CASES / "items_long.csv").exit_code == 0
    first = history(env, "IT-1")[0]
    assert first["line"] == 2 and first["file_id"]
    assert first["items"] == [
        {"sku": "SKU-A", "old_quantity": 2, "new_quantity": 1,
         "old_amount": 4000, "new_amount": 2000},
    ]  # fmt: skip


def test_dry_run_gives_the_same_result_and_applies_nothing(env: Env) -> None:
    out = env.root / "dry.csv"
    run = env.cli("ingest", CASES / "modify.csv", "--campaign", "shop", "--dry-run", "--json",
                  "-o", out)  # fmt: skip
    assert run.exit_code == 0, run.err
    checked = run.json()
    assert checked["dry_run"] is True
    assert env.action("MOD-1")["History"] == [] and env.action("MOD-1")["Amount"] == "100.00"
    assert env.cli("files", "list", "--json").json() == []
    real = env.ingest(CASES / "modify.csv").json()  # not a DUPLICATE of the dry run
    assert real["status"] == "COMPLETE" and real["counts"] == checked["counts"]
    result = env.cli("files", "result", real["file_id"]).out
    assert out.read_bytes() == result


def test_reprocess_a_duplicate_on_request(env: Env) -> None:
    first = env.ingest(CASES / "reverse.csv").json()
    again = env.root / "in" / "again.csv"
    shutil.copyfile(CASES / "reverse.csv", again)
    dup = env.ingest(again).json()
    assert dup["status"] == "DUPLICATE"
    run = env.cli("files", "reprocess", dup["file_id"], "--json")
    doc = run.json()
    assert run.exit_code == 0 and doc["status"] == "COMPLETE", doc
    assert doc["reprocessed"][0]["from"] == "DUPLICATE"
    assert doc["counts"]["applied"] == 0  # everything was already applied by the first copy
    assert env.cli("files", "reprocess", first["file_id"]).exit_code == 1  # COMPLETE: refused


def test_reprocess_a_failed_file_after_the_limit_was_raised(env: Env) -> None:
    path = env.root / "in" / "many.csv"
    path.write_text("ActionId,Amount,Reason\n" + "NOPE-1,1.00,OTHER\n" * 1501)
    doc = env.ingest(path).json()
    assert doc["error"]["code"] == "TOO_MANY_ROWS"
    config = env.config.read_text().replace("max_rows: 1500", "max_rows: 2000")
    env.config.write_text(config)
    run = env.cli("files", "reprocess", doc["file_id"], "--json")
    assert run.exit_code == 0 and run.json()["status"] == "COMPLETE", run.out


def test_a_result_sent_back_as_it_is_ingests(env: Env) -> None:
    doc = env.ingest(CASES / "modify.csv").json()
    data = env.cli("files", "result", doc["file_id"]).out
    header = next(csv.reader(io.StringIO(data.decode())))
    assert len(header) == len(set(header)) and "ResolvedActionId" in header
    back = env.root / "in" / "fixed.csv"
    back.write_bytes(data)
    again = env.ingest(back).json()
    assert again["status"] == "COMPLETE", again
    assert not [w for w in again["warnings"] if "unknown column" in w], again["warnings"]
    assert again["counts"]["lines"] == doc["counts"]["lines"]


def test_result_in_the_senders_dialect(env: Env) -> None:
    doc = env.ingest(CASES / "semicolon_cp1252.csv").json()
    data = env.cli("files", "result", doc["file_id"]).out
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # Windows-1252 in, Windows-1252 out
    text = data.decode("cp1252")
    assert "Stammkunde – Ü €" in text and text.splitlines()[0].count(";") >= 11


def test_xlsx_export_amounts_are_numbers(env: Env) -> None:
    from openpyxl import load_workbook

    out = env.root / "actions.xlsx"
    assert env.cli("actions", "export", "--format", "xlsx", "-o", out).exit_code == 0
    sheet = load_workbook(out).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    amount = rows[0].index("Amount")
    first = next(r for r in rows[1:] if r[0] == "MOD-1")
    assert first[amount] == 100 and isinstance(first[amount], int | float)


def test_history_json_is_valid(env: Env) -> None:
    change(env, "modify", "MOD-1", "--amount", "80", "--reason", "ITEM_RETURNED")
    json.dumps(env.action("MOD-1"))
    assert history(env, "MOD-1")[0]["new_amount"] == "80.00"


def test_operation_layer_called_directly(env: Env) -> None:
    """The signature a console or API calls: actor, channel and role are arguments."""
    from ingest import config
    from ingest.operations import Change, ItemEdit, Operation, Role, apply_changes
    from ingest.store import prepare

    settings = config.load(env.config)
    store = prepare(settings)
    try:
        out = apply_changes(
            store,
            settings,
            "shop",
            [
                Change("IT-1", Operation.MODIFY, "ITEM_RETURNED", items=(ItemEdit("SKU-B", "0"),)),
                Change("E-CPC", Operation.REVERSE, "TEST_ACTION", override_cpc=True),
                Change("NOPE", Operation.APPROVE),
                Change(None, Operation.MODIFY, amount="70", order_id="O-MOD-2", tracker="3001"),
            ],
            actor="token:abc",
            channel="api",
            role=Role.ADVERTISER,
        )
    finally:
        store.dispose()
    assert [(o.status, o.error_code) for o in out] == [
        ("APPLIED", None),
        ("ERROR", "CPC_NOT_SUPPORTED"),  # only an operator's override counts
        ("ERROR", "ACTION_NOT_FOUND"),
        ("APPLIED", None),
    ]
    assert (out[3].action_id, out[3].new_amount) == ("MOD-2", "70.00")
    assert (out[0].old_amount, out[0].new_amount) == ("100.00", "40.00")
    (entry,) = history(env, "IT-1")
    assert (entry["channel"], entry["actor"], entry["line"]) == ("api", "token:abc", None)


def test_a_semicolon_cp1252_result_sent_back_ingests(env: Env) -> None:
    doc = env.ingest(CASES / "semicolon_cp1252.csv").json()
    back = env.root / "in" / "fixed_cp1252.csv"
    back.write_bytes(env.cli("files", "result", doc["file_id"]).out)
    again = env.ingest(back).json()
    assert again["status"] == "COMPLETE", again
    assert (again["encoding"], again["delimiter"]) == ("windows-1252", ";")
    assert again["counts"]["lines"] == doc["counts"]["lines"]
