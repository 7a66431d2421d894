"""impact.com's documented request shapes, byte for byte with curl, against the running server.

Each request is answered QUEUED with a QueuedUri; following it to Complete shows what the
engine made of it (ErrorType/ErrorReason), and the ledger shows the change. SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.impact_harness import BOTH_SID, SHOP_SID, Api, start_api
from tests.test_cases import make_env


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str) -> Iterator[Api]:
    """The API over the case ledger, with the applier running."""
    served = start_api(make_env(tmp_path, monkeypatch, db_url))
    yield served
    served.close()


def actions_url(sid: str = SHOP_SID) -> str:
    """impact's Actions resource of an account."""
    return f"/Advertisers/{sid}/Actions"


def queue(api: Api, method: str, data: str, user: str | None = None) -> str:
    """Send one PUT/DELETE as impact's examples do; return the QueuedUri."""
    status, doc = api.curl(
        actions_url(), "-X", method, "-H", "Content-Type: application/x-www-form-urlencoded",
        "-d", data, user=user or api.user(),
    )  # fmt: skip
    assert status == 200, doc
    assert doc["Status"] == "QUEUED" and doc["QueuedUri"].startswith(
        f"/Advertisers/{SHOP_SID}/APISubmissions/A-"
    ), doc
    return str(doc["QueuedUri"])


def test_put_amount_modifies_the_action(api: Api) -> None:
    uri = queue(api, "PUT", "ActionId=MOD-1&Amount=60.00&Reason=ITEM_RETURNED")
    doc = api.complete(uri)
    assert doc["Status"] == "Complete" and doc["ErrorType"] is None, doc
    assert doc["Type"] == "Modification" and doc["CampaignId"] == "shop"
    assert doc["Payload"] == "ActionId=MOD-1&Amount=60.00&Reason=ITEM_RETURNED"
    row = api.action("MOD-1")
    assert (row["amount"], row["payout"], row["state"]) == (6000, 450, "PENDING")
    (entry,) = api.audit("MOD-1")
    assert entry["channel"] == "api" and entry["actor"].startswith(f"api:{SHOP_SID}/tok_")
    assert entry["reason"] == "ITEM_RETURNED" and entry["file_id"] is None


def test_put_amount_zero_reverses_and_delete_reverses(api: Api) -> None:
    done = api.complete(queue(api, "PUT", "ActionId=MOD-1&Amount=0&Reason=ITEM_RETURNED"))
    assert done["ErrorReason"] is None, done
    assert api.action("MOD-1")["state"] == "REVERSED"
    done = api.complete(queue(api, "DELETE", "ActionId=MOD-2&DispositionCode=REJECTED"))
    assert (done["Type"], done["ErrorReason"]) == ("Reversal", None), done
    assert api.action("MOD-2")["state"] == "REVERSED"
    done = api.complete(queue(api, "DELETE", "ActionId=MOD-3&DispositionCode=CHARGEBACK"))
    assert done["ErrorReason"] is None and api.action("MOD-3")["state"] == "REVERSED", done


def test_delete_parameters_in_the_query_string(api: Api) -> None:
    status, doc = api.curl(
        actions_url() + "?ActionId=MOD-4&DispositionCode=CONS_FRAUD", "-X", "DELETE",
        user=api.user(),
    )  # fmt: skip
    assert status == 200, doc
    done = api.complete(doc["QueuedUri"])
    assert done["ErrorReason"] is None and api.action("MOD-4")["state"] == "REVERSED", done


def test_items_with_sku_quantity_and_sku2_quantity2(api: Api) -> None:
    before = api.items("IT-1")
    assert before == {"SKU-A": (2, 4000), "SKU-B": (1, 6000)}
    data = "ActionId=IT-1&Sku=SKU-A&Quantity=1&Sku2=SKU-B&Quantity2=0&Reason=ORDER_UPDATE"
    done = api.complete(queue(api, "PUT", data))
    assert done["ErrorReason"] is None, done
    assert api.items("IT-1") == {"SKU-A": (1, 2000), "SKU-B": (0, 0)}
    assert api.action("IT-1")["amount"] == 2000


def test_item_amount_with_its_sku(api: Api) -> None:
    data = "ActionId=IT-1&Sku=SKU-B&Quantity=1&Amount=45.00&Reason=ORDER_UPDATE"
    done = api.complete(queue(api, "PUT", data))
    assert done["ErrorReason"] is None, done
    assert api.items("IT-1")["SKU-B"] == (1, 4500)
    assert api.action("IT-1")["amount"] == 8500


def test_order_id_identification_changes_the_newest_action(api: Api) -> None:
    data = "ActionTrackerId=3001&OrderId=O-300&Amount=5.00&Reason=ORDER_UPDATE"
    done = api.complete(queue(api, "PUT", data))
    assert done["ErrorReason"] is None and done["OrderId"] == "O-300", done
    assert api.action("ORD-X1")["amount"] == 500  # the newest of O-300
    assert api.action("ORD-X2")["amount"] == 2000
    done = api.complete(queue(api, "DELETE", "ActionTrackerId=3001&OrderId=O-MOD-4&"
                                             "DispositionCode=REJECTED"))  # fmt: skip
    assert done["ErrorReason"] is None and api.action("MOD-4")["state"] == "REVERSED", done


@pytest.mark.parametrize(
    ("method", "data", "kind", "code"),
    [
        ("PUT", "ActionId=NOPE-1&Amount=1.00&Reason=ITEM_RETURNED", "Contract Error",
         "ACTION_NOT_FOUND"),
        ("PUT", "ActionId=E-LOCKED&Amount=1.00&Reason=ITEM_RETURNED", "Contract Error",
         "ACTION_LOCKED"),
        ("PUT", "ActionId=E-REVD&Amount=1.00&Reason=ITEM_RETURNED", "Contract Error",
         "ACTION_REVERSED"),
        ("PUT", "ActionId=E-CPC&Amount=1.00&Reason=ITEM_RETURNED", "Contract Error",
         "CPC_NOT_SUPPORTED"),
        ("PUT", "ActionId=MOD-1&Amount=1.00&Reason=NOT_A_REASON", "Validation",
         "UNKNOWN_REASON"),
        ("PUT", "ActionId=MOD-1&Amount=1.00", "Validation", "MALFORMED"),
        ("PUT", "ActionId=MOD-1&Amount=12,5&Reason=ITEM_RETURNED", "Validation", "MALFORMED"),
        ("PUT", "Amount=1.00&Reason=ITEM_RETURNED", "Validation", "MISSING_IDENTIFIER"),
        ("PUT", "OrderId=O-MOD-1&Amount=1.00&Reason=ITEM_RETURNED", "Validation",
         "MISSING_IDENTIFIER"),
        ("PUT", "ActionTrackerId=9999&OrderId=O-MOD-1&Amount=1.00&Reason=ITEM_RETURNED",
         "Contract Error", "ACTIONTRACKER_NOT_FOUND"),
        ("PUT", "ActionTrackerId=4001&OrderId=O-MOD-1&Amount=1.00&Reason=ITEM_RETURNED",
         "Contract Error", "ACTIONTRACKER_CAMPAIGN_MISMATCH"),
        ("PUT", "ActionId=MOD-1&Amount=1.00&CurrencyCode=EUR&Reason=ITEM_RETURNED",
         "Contract Error", "CURRENCY_MISMATCH"),
        ("PUT", "ActionId=IT-1&Sku=NO-SUCH&Quantity=0&Reason=ORDER_UPDATE", "Contract Error",
         "ITEM_NOT_FOUND"),
        ("DELETE", "ActionId=MOD-1&DispositionCode=RESET", "Validation", "UNKNOWN_REASON"),
        ("DELETE", "ActionId=MOD-1&DispositionCode=REJECTED&Amount=3.00", "Validation",
         "MALFORMED"),
        ("DELETE", "ActionId=MOD-1", "Validation", "MALFORMED"),
    ],
)  # fmt: skip
def test_every_error_code_comes_back_through_error_reason(
    api: Api, method: str, data: str, kind: str, code: str
) -> None:
    before = api.action("MOD-1")
    done = api.complete(queue(api, method, data))
    assert done["Status"] == "Complete", done
    assert (done["ErrorType"], done["ErrorReason"]) == (kind, code), done
    assert done["ErrorMessage"], done
    assert api.action("MOD-1") == before


def test_wrong_credentials_are_401_and_another_campaign_is_403(api: Api) -> None:
    status, doc = api.curl(actions_url(), "-X", "PUT", "-d", "ActionId=MOD-1",
                           user=f"{SHOP_SID}:wrong")  # fmt: skip
    assert status == 401 and doc == {"Status": "ERROR", "Message": doc["Message"]}, doc
    status, _ = api.curl(actions_url(), "-X", "PUT", "-d", "ActionId=MOD-1")
    assert status == 401
    status, _ = api.curl(actions_url(BOTH_SID), "-X", "PUT", "-d", "ActionId=MOD-1",
                         user=f"{BOTH_SID}:{api.tokens['shop']}")  # fmt: skip
    assert status == 401  # the shop token is not BOTH's
    status, _ = api.curl(actions_url(), "-X", "PUT", "-d", "ActionId=MOD-1",
                         user=f"{BOTH_SID}:{api.tokens['both']}")  # fmt: skip
    assert status == 401  # a SID that is not the path's
    status, doc = api.curl(
        actions_url(BOTH_SID), "-X", "PUT", "-d",
        "CampaignId=shop&ActionId=MOD-1&Amount=1.00&Reason=ITEM_RETURNED",
        user=f"{BOTH_SID}:{api.tokens['other-only']}",
    )  # fmt: skip
    assert status == 403 and doc["Status"] == "ERROR", doc


def test_a_scoped_token_cannot_reach_another_campaigns_action(api: Api) -> None:
    user = f"{BOTH_SID}:{api.tokens['other-only']}"
    data = "ActionId=MOD-1&Amount=1.00&Reason=ITEM_RETURNED"
    status, doc = api.curl(actions_url(BOTH_SID), "-X", "PUT", "-d", data, user=user)
    assert status == 200, doc
    done = api.complete(doc["QueuedUri"], user=user)
    assert done["ErrorReason"] == "ACTION_NOT_FOUND", done
    assert api.action("MOD-1")["amount"] == 10000


def test_xml_by_default_and_json_by_suffix(api: Api) -> None:
    status, body = api.curl(actions_url(), "-X", "DELETE", "-d",
                            "ActionId=MOD-1&DispositionCode=REJECTED", user=api.user(),
                            json_out=False)  # fmt: skip
    assert status == 200 and body.startswith("<?xml"), body
    assert "<ImpactRadiusResponse><Status>QUEUED</Status><QueuedUri>" in body
    uri = body.split("<QueuedUri>")[1].split("</QueuedUri>")[0]
    status, doc = api.curl(uri + ".json", user=api.user(), json_out=False)
    assert status == 200 and '"BatchId"' in doc, doc


def test_method_override_and_ir_version(api: Api) -> None:
    status, doc = api.curl(actions_url(), "-X", "POST", "-H", "IR-Version: 14", "-d",
                           "_method=DELETE&ActionId=MOD-2&DispositionCode=REJECTED",
                           user=api.user())  # fmt: skip
    assert status == 200, doc
    assert api.complete(doc["QueuedUri"])["ErrorReason"] is None
    assert api.action("MOD-2")["state"] == "REVERSED"


def test_rate_limit_headers_and_429(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'r.db'}")
    api = start_api(env, applier=False, rate_limit_per_hour=3)
    try:
        uri = f"/Advertisers/{SHOP_SID}/APISubmissions"
        first = api.headers(uri, user=api.user())
        assert (first["x-ratelimit-limit"], first["x-ratelimit-remaining"]) == ("3", "2")
        assert 0 < int(first["x-ratelimit-reset"]) <= 3600
        api.curl(uri, user=api.user())
        api.curl(uri, user=api.user())
        status, doc = api.curl(uri, user=api.user())
        assert status == 429 and doc["Status"] == "ERROR", doc
        other = api.headers(f"/Advertisers/{BOTH_SID}/APISubmissions", user=api.user("both"))
        assert other["x-ratelimit-remaining"] == "2"  # per account
    finally:
        api.close()


def test_queued_before_applied_and_nothing_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'q.db'}")
    api = start_api(env, applier=False)
    try:
        uris = [queue(api, "PUT", f"ActionId=MOD-1&Amount={n}.00&Reason=ORDER_UPDATE")
                for n in (90, 80, 70)]  # fmt: skip
        _, doc = api.curl(uris[0], user=api.user())
        assert doc["Status"] == "Queued" and doc["CompletionDate"] is None, doc
        assert api.action("MOD-1")["amount"] == 10000  # stored, not applied yet
        api.start_applier()
        done = [api.complete(u) for u in uris]
        assert [d["ErrorReason"] for d in done] == [None, None, None]
        assert api.action("MOD-1")["amount"] == 7000  # in arrival order
        assert [a["new_amount"] for a in api.audit("MOD-1")] == [9000, 8000, 7000]
    finally:
        api.close()


def test_get_actions_with_campaign_and_page_size(api: Api) -> None:
    api.complete(queue(api, "PUT", "ActionId=MOD-1&Amount=60.00&Reason=ITEM_RETURNED"))
    status, doc = api.curl(actions_url(), "-G", "-d", "CampaignId=shop&PageSize=2000",
                           user=api.user())  # fmt: skip
    assert status == 200, doc
    assert (doc["@page"], doc["@numpages"], doc["@pagesize"]) == ("1", "1", "2000")
    assert doc["@total"] == str(len(doc["Actions"])) and doc["@nextpageuri"] == ""
    ids = [a["Id"] for a in doc["Actions"]]
    assert "MOD-1" in ids and "RS-7" not in ids  # neither date: updated in the last 7 days
    mod = next(a for a in doc["Actions"] if a["Id"] == "MOD-1")
    assert (mod["Amount"], mod["IntendedAmount"], mod["DeltaAmount"]) == ("60.00", "100.00",
                                                                          "-40.00")  # fmt: skip
    assert mod["Uri"] == f"/Advertisers/{SHOP_SID}/Actions/MOD-1" and mod["State"] == "PENDING"
    status, doc = api.curl(actions_url(), "-G", "-d", "CampaignId=shop&State=REVERSED",
                           user=api.user())  # fmt: skip
    assert status == 200 and {a["State"] for a in doc["Actions"]} == {"REVERSED"}, doc
    status, doc = api.curl(actions_url(), "-G", "-d", "CampaignId=shop&PageSize=100",
                           user=api.user())  # fmt: skip
    assert status == 400 and doc["Status"] == "ERROR", doc  # impact's smallest page is 2,000
    status, doc = api.curl(actions_url(), "-G", "-d", "PageSize=2000", user=api.user())
    assert status == 400 and "CampaignId" in doc["Message"], doc
    status, doc = api.curl(actions_url(), "-G", "-d", "CampaignId=other", user=api.user())
    assert status == 403, doc
    status, doc = api.curl(
        actions_url(), "-G", "-d", "CampaignId=shop&StartDate=2026-01-01T00:00:00Z", user=api.user()
    )
    assert status == 400, doc


def test_action_items_and_updates(api: Api) -> None:
    api.complete(queue(api, "PUT", "ActionId=IT-1&Sku=SKU-A&Quantity=1&Reason=ORDER_UPDATE"))
    status, doc = api.curl(actions_url() + "/IT-1", user=api.user())
    assert status == 200 and doc["Id"] == "IT-1" and doc["Amount"] == "80.00", doc
    status, doc = api.curl(actions_url() + "/IT-1/Items", user=api.user())
    assert status == 200, doc
    assert {(i["Sku"], i["Quantity"], i["Amount"]) for i in doc["Items"]} == {
        ("SKU-A", "1", "20.00"), ("SKU-B", "1", "60.00")}  # fmt: skip
    status, doc = api.curl(f"/Advertisers/{SHOP_SID}/ActionUpdates", "-G", "-d",
                           "ActionId=IT-1", user=api.user())  # fmt: skip
    assert status == 200, doc
    (update,) = doc["ActionUpdates"]
    assert (update["Type"], update["PreviousAmount"], update["Amount"], update["Channel"]) == (
        "Modification",
        "100.00",
        "80.00",
        "api",
    )
    status, doc = api.curl(actions_url() + "/NOPE", user=api.user())
    assert status == 404 and doc["Status"] == "ERROR"
    other = f"{BOTH_SID}:{api.tokens['other-only']}"
    status, _ = api.curl(f"/Advertisers/{BOTH_SID}/Actions/IT-1", user=other)
    assert status == 404  # another campaign's action is not found


def test_file_submissions_and_error_details(api: Api) -> None:
    path = api.env.root / "in" / "returns.csv"
    path.write_text("ActionId,Amount,Reason\nMOD-1,50.00,ITEM_RETURNED\nNOPE,1.00,OTHER\n"
                    "MOD-2,1.00,NOT_A_CODE\n")  # fmt: skip
    run = api.env.ingest(path)
    assert run.exit_code == 0, run.err
    status, doc = api.curl(f"/Advertisers/{SHOP_SID}/FTPFileSubmissions", user=api.user())
    assert status == 200, doc
    (sub,) = doc["FTPFileSubmissions"]
    assert (sub["FileName"], sub["Status"], sub["TotalRecords"], sub["TotalErrors"]) == (
        "returns.csv",
        "Complete",
        "3",
        "2",
    )
    assert sub["Channel"] == "cli"
    status, doc = api.curl(sub["ErrorsUri"], user=api.user())
    assert status == 200, doc
    assert [(e["Line"], e["Status"], e["Reason"]) for e in doc["ErrorDetails"]] == [
        ("3", "Contract Error", "ACTION_NOT_FOUND"),
        ("4", "Validation", "UNKNOWN_REASON"),
    ]
    status, doc = api.curl(f"/Advertisers/{SHOP_SID}/FTPFileSubmissions", "-G", "-d",
                           "SubmissionDateStart=2000-01-01T00:00:00Z&"
                           "SubmissionDateEnd=2000-01-02T00:00:00Z", user=api.user())  # fmt: skip
    assert status == 200 and doc["FTPFileSubmissions"] == [] and doc["@total"] == "0", doc
    status, body = api.curl(f"/Advertisers/{SHOP_SID}/FTPFileSubmissions", user=api.user(),
                            json_out=False)  # fmt: skip
    assert '<FTPFileSubmissions page="1" numpages="1"' in body, body
    assert "<FTPFileSubmission><BatchId>" in body


def test_paging_keys_follow_to_the_last_page(api: Api) -> None:
    from datetime import UTC, datetime, timedelta

    when = (datetime.now(UTC) - timedelta(days=1)).isoformat(timespec="seconds")
    rows = [f"PG-{i:05d},shop,3001,O-PG-{i},P-1,{when},10.00,USD,0.75,NEW" for i in range(2050)]
    path = api.env.root / "more.csv"
    path.write_text("ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,"
                    "Currency,Payout,CustomerStatus\n" + "\n".join(rows) + "\n")  # fmt: skip
    assert api.env.cli("actions", "import", path).exit_code == 0
    status, first = api.curl(actions_url(), "-G", "-d", "CampaignId=shop&PageSize=2000",
                             user=api.user())  # fmt: skip
    assert status == 200, first
    total = int(first["@total"])
    assert total > 2050 and first["@numpages"] == "2" and len(first["Actions"]) == 2000
    assert (first["@start"], first["@end"], first["@previouspageuri"]) == ("0", "1999", "")
    assert first["@nextpageuri"] == first["@lastpageuri"] and "Page=2" in first["@nextpageuri"]
    status, second = api.curl(first["@nextpageuri"], user=api.user())
    assert status == 200 and second["@page"] == "2" and second["@nextpageuri"] == "", second
    assert len(second["Actions"]) == total - 2000 and second["@start"] == "2000"
    assert second["@end"] == str(total - 1)
    seen = [a["Id"] for a in first["Actions"] + second["Actions"]]
    assert len(set(seen)) == total  # newest first, no row twice, none left out


def test_put_reset_and_approved_do_what_a_file_row_does(api: Api) -> None:
    api.complete(queue(api, "PUT", "ActionId=MOD-1&Amount=60.00&Reason=ITEM_RETURNED"))
    done = api.complete(queue(api, "PUT", "ActionId=MOD-1&Reason=RESET"))
    assert done["ErrorReason"] is None, done
    assert api.action("MOD-1")["amount"] == 10000
    done = api.complete(queue(api, "PUT", "ActionId=MOD-2&Reason=APPROVED"))
    assert done["ErrorReason"] is None and api.action("MOD-2")["state"] == "APPROVED", done


def test_xml_lists_parse(api: Api) -> None:
    import xml.etree.ElementTree as ET

    queue(api, "PUT", "ActionId=MOD-1&Amount=1.00&Reason=ITEM_RETURNED&Note=%00%01")
    status, body = api.curl(f"/Advertisers/{SHOP_SID}/APISubmissions", user=api.user(),
                            json_out=False)  # fmt: skip
    assert status == 200
    root = ET.fromstring(body.encode())
    holder = root.find("APISubmissions")
    assert holder is not None and holder.get("page") == "1" and holder.get("total") == "1"
    assert [e.findtext("Type") for e in holder.findall("APISubmission")] == ["Modification"]
