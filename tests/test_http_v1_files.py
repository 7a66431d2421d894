"""returnsd's own /v1 API: a dry-run upload, and a campaign's files by status, page by page."""

from __future__ import annotations

import httpx

from tests.test_channel_http import ACME, CSV, Harness, api, auth, harness, upload_raw

__all__ = ["api", "harness"]  # the fixtures, shared with tests/test_channel_http.py


def test_dry_run_answers_the_result_and_stores_nothing(api: tuple[Harness, httpx.Client]) -> None:
    h, client = api
    r = upload_raw(client, params={"name": "returns.csv", "dry_run": "true"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["dry_run"] is True and doc["campaign"] == "acme" and doc["name"] == "returns.csv"
    assert doc["summary"]["counts"]["by_error_code"] == {"ACTION_NOT_FOUND": 1}, doc
    assert doc["result_csv"].splitlines()[0].startswith('"ActionId","Amount","Reason","Line"')
    assert h.results.recent(campaign="acme") == []  # nothing received, nothing recorded
    r = upload_raw(client)  # the same bytes for real afterwards: not a DUPLICATE
    assert r.status_code == 202, r.text
    bad = upload_raw(client, content=b"\x00\x01", params={"name": "x.csv", "dry_run": "1"})
    assert bad.status_code == 422 and bad.json()["code"], bad.text


def test_files_by_status_with_keyset_pages(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    ids = [upload_raw(client, content=CSV + f"1000.1.{i},0,OTHER\r\n".encode()).json()["file_id"]
           for i in range(3)]  # fmt: skip
    url = "/v1/campaigns/acme/files"
    page = client.get(url, params={"status": "QUEUED", "limit": 2}, headers=auth(ACME)).json()
    assert [f["file_id"] for f in page["files"]] == sorted(ids, reverse=True)[:2]
    assert "cursor=" in page["next"] and "status=QUEUED" in page["next"]
    rest = client.get(page["next"], headers=auth(ACME)).json()
    assert [f["file_id"] for f in rest["files"]] == sorted(ids, reverse=True)[2:]
    assert "next" not in rest
    none = client.get(url, params={"status": "FAILED"}, headers=auth(ACME)).json()
    assert none["files"] == []
    assert client.get(url, params={"status": "NOPE"}, headers=auth(ACME)).status_code == 422
