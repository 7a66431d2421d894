"""The console over HTTP (Starlette's test client against the ASGI app): sign-in, throttling,
sessions, CSRF and origin checks, tenancy, changes through the operation layer, uploads,
exports and scheduled reports. SQLite and PostgreSQL where the database matters."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from ingest import tables as t
from ingest.worker import Worker
from tests.console_env import PASSWORD, ConsoleEnv, csrf_of, make_console_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Iterator[ConsoleEnv]:
    """Two campaigns, 120 acme actions, three users; SQLite and PostgreSQL."""
    found = make_console_env(tmp_path, db_url, login_failures_per_user=3,
                             login_failures_per_address=6)  # fmt: skip
    yield found
    found.store.dispose()


@pytest.fixture
def sqlite_env(tmp_path: Path) -> Iterator[ConsoleEnv]:
    """The same on SQLite only, for what does not depend on the database."""
    found = make_console_env(tmp_path, f"sqlite:///{tmp_path / 'c.db'}",
                             login_failures_per_user=3, login_failures_per_address=6)  # fmt: skip
    yield found
    found.store.dispose()


def client(env: ConsoleEnv) -> TestClient:
    """A browser-like client of a fresh console app."""
    from console.app import build_app

    return TestClient(build_app(env.context()), base_url="http://console.test",
                      follow_redirects=False)  # fmt: skip


def signed_in(env: ConsoleEnv, login: str) -> tuple[TestClient, str]:
    """A client signed in as `login`, and its CSRF token."""
    c = client(env)
    assert sign_in(c, login, PASSWORD).status_code == 303
    return c, csrf_of(c.get("/actions").text)


def sign_in(c: TestClient, login: str, password: str, headers: dict[str, str] | None = None) -> Any:
    page = c.get("/login")
    form = {"login": login, "password": password, "csrf": csrf_of(page.text), "next": "/actions"}
    return c.post("/login", data=form, headers=headers or {})


def test_pages_need_a_session_and_send_security_headers(sqlite_env: ConsoleEnv) -> None:
    c = client(sqlite_env)
    r = c.get("/actions")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/actions"
    page = c.get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text and "https://" not in page.text  # nothing from outside
    assert "httponly" in page.headers["set-cookie"].lower()
    r = sign_in(c, "ann", PASSWORD)
    assert r.status_code == 303 and r.headers["location"] == "/actions"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert c.get("/actions").status_code == 200
    assert c.get("/static/htmx-2.0.11.min.js").status_code == 200
    for method, path in (("DELETE", "/actions"), ("GET", "/no/such/page"),
                         ("POST", "/reports/abc/delete")):  # fmt: skip
        r = c.request(method, path, headers={"Origin": "http://console.test"})
        assert r.status_code in (403, 404, 405) and r.text.startswith("<!doctype html>"), path


def test_wrong_password_then_throttled_per_login_and_per_address(sqlite_env: ConsoleEnv) -> None:
    c = client(sqlite_env)
    for _ in range(3):
        r = sign_in(c, "ann", "wrong")
        assert r.status_code == 401 and "Wrong login or password" in r.text
    r = sign_in(c, "ann", PASSWORD)  # right password, but the login is throttled
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    for login in ("x1", "x2", "x3"):  # the address reaches its limit of 6 failures
        sign_in(c, login, "wrong")
    assert sign_in(c, "op", PASSWORD).status_code == 429
    with sqlite_env.store.read() as conn:
        n = conn.scalar(select(t.login_attempts.c.id).where(t.login_attempts.c.ok == 1))
    assert n is None


def test_logout_idle_absolute_expiry_and_revoke(sqlite_env: ConsoleEnv) -> None:
    c, token = signed_in(sqlite_env, "ann")
    assert c.post("/logout", data={"csrf": token}).status_code == 303
    assert c.get("/actions").status_code == 303  # the old cookie no longer works
    for column in ("last_seen_at", "expires_at"):
        c, _ = signed_in(sqlite_env, "ann")
        old = datetime.now(UTC) - timedelta(hours=1)
        with sqlite_env.store.begin() as conn:
            conn.execute(update(t.sessions).where(t.sessions.c.revoked_at.is_(None))
                         .values({column: old}))  # fmt: skip
        assert c.get("/actions").status_code == 303, column
    one, token = signed_in(sqlite_env, "ann")
    two, _ = signed_in(sqlite_env, "ann")
    assert one.post("/logout/everywhere", data={"csrf": token}).status_code == 303
    assert two.get("/actions").status_code == 303
    r = one.get("/actions", headers={"HX-Request": "true"})
    assert r.status_code == 204 and r.headers["HX-Redirect"].startswith("/login")


def test_every_post_needs_the_token_and_the_same_origin(sqlite_env: ConsoleEnv) -> None:
    c, token = signed_in(sqlite_env, "ann")
    url = "/actions/ACME-0000001/change"
    assert c.post(url, data={"op": "approve"}).status_code == 403
    assert c.post(url, data={"op": "approve", "csrf": "forged"}).status_code == 403
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Referer": "https://evil.example/x"}, {"Origin": "null"}):  # fmt: skip
        r = c.post(url, data={"op": "approve", "csrf": token}, headers=headers)
        assert r.status_code == 403, headers
    r = sign_in(client(sqlite_env), "ann", PASSWORD, {"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    with sqlite_env.store.read() as conn:
        assert (
            conn.scalar(select(t.actions.c.state).where(t.actions.c.id == "ACME-0000001"))
            == "PENDING"
        )
    r = c.post(
        url,
        data={"op": "approve", "csrf": token},
        headers={"Origin": "http://console.test", "Sec-Fetch-Site": "same-origin"},
    )
    assert r.status_code == 200 and "APPLIED" in r.text


def test_an_advertiser_sees_nothing_of_another_campaign(env: ConsoleEnv) -> None:
    c, token = signed_in(env, "ann")
    for path in ("/actions/BETA-0000001", "/actions?campaign=beta", "/reversed?campaign=beta",
                 "/export/pending.csv?campaign=beta", "/actions/BETA-0000001/edit",
                 "/files?campaign=beta"):  # fmt: skip
        assert c.get(path).status_code == 404, path
    r = c.post("/actions/BETA-0000001/change", data={"op": "approve", "csrf": token})
    assert r.status_code == 404
    r = c.post("/actions/bulk", data={"csrf": token, "op": "approve", "campaign": "acme",
               "ids": ["BETA-0000002"], "confirmed": "1"})  # fmt: skip
    assert r.status_code == 200 and "ACTION_NOT_FOUND" in r.text
    with env.store.read() as conn:
        states = set(conn.scalars(select(t.actions.c.state).where(
            t.actions.c.campaign_id == "beta")))  # fmt: skip
    assert states == {"PENDING"}
    beta = env.context().spool.accept("beta", "ftp", "b.csv", b"ActionId,Amount,Reason\n")
    assert c.get(f"/files/{beta.file_id}").status_code == 404
    assert c.get(f"/files/{beta.file_id}/original").status_code == 404
    assert beta.file_id not in c.get("/files").text
    op, _ = signed_in(env, "op")
    assert op.get(f"/files/{beta.file_id}").status_code == 200
    assert op.get("/actions/BETA-0000001").status_code == 200


def _history(env: ConsoleEnv, action_id: str) -> list[Any]:
    with env.store.read() as conn:
        return list(conn.execute(select(t.audit).where(t.audit.c.action_id == action_id)
                                 .order_by(t.audit.c.id)))  # fmt: skip


def test_changes_answer_at_once_and_are_recorded_as_the_user(env: ConsoleEnv) -> None:
    c, token = signed_in(env, "ann")
    row = {"csrf": token, "view": "row"}
    hx = {"HX-Request": "true"}
    r = c.post("/actions/ACME-0000001/change", data={**row, "op": "reverse",
               "reason": "ITEM_RETURNED"}, headers=hx)  # fmt: skip
    assert r.text.lstrip().startswith("<tr") and "APPLIED" in r.text and "REVERSED" in r.text
    r = c.post("/actions/ACME-0000001/change", data={**row, "op": "modify", "amount": "5",
               "reason": "ORDER_UPDATE"}, headers=hx)  # fmt: skip
    assert "ACTION_REVERSED" in r.text and "Contract" in r.text
    r = c.post("/actions/ACME-0000001/change", data={**row, "op": "restore", "reason": "RESET"},
               headers=hx)  # fmt: skip
    assert "APPLIED" in r.text and "PENDING" in r.text
    r = c.post("/actions/ACME-0000002/change", data={"csrf": token, "op": "reverse",
               "reason": "APPROVED"})  # fmt: skip
    assert "UNKNOWN_REASON" in r.text
    r = c.post("/actions/ACME-0000002/change", data={"csrf": token, "op": "modify",
               "amount": "12.34", "reason": "DAMAGED"})  # a custom modify code  # fmt: skip
    assert "APPLIED" in r.text and "12.34" in r.text
    r = c.post("/actions/ACME-0000010/change", data={"csrf": token, "op": "modify",
               "sku": "SKU-A", "quantity": "0", "reason": "ITEM_RETURNED"})  # fmt: skip
    assert "APPLIED" in r.text
    r = c.post("/actions/ACME-0000003/change", data={"csrf": token, "op": "approve"})
    assert "APPLIED" in r.text and "APPROVED" in r.text
    r = c.post("/actions/ACME-0000003/change", data={"csrf": token, "op": "reverse"})
    assert "ACTION_LOCKED" in r.text
    ops = [(h.operation, h.actor, h.channel, h.file_id) for h in _history(env, "ACME-0000001")]
    assert ops == [("reverse", "ann", "console", None), ("reset", "ann", "console", None)]
    (item,) = _history(env, "ACME-0000010")
    assert item.new_amount < item.old_amount
    detail = c.get("/actions/ACME-0000010").text
    assert "SKU-A" in detail and "ann · console" in detail and "Locks in" in detail


def test_cpc_override_only_for_operators_with_a_confirmation(sqlite_env: ConsoleEnv) -> None:
    with sqlite_env.store.begin() as conn:
        conn.execute(update(t.actions).where(t.actions.c.id == "ACME-0000005")
                     .values(event_type_id=103))  # the CPC tracker  # fmt: skip
    ann, token = signed_in(sqlite_env, "ann")
    form = {"op": "reverse", "reason": "CONS_FRAUD", "override_cpc": "1", "confirm_cpc": "1"}
    r = ann.post("/actions/ACME-0000005/change", data={**form, "csrf": token})
    assert "CPC_NOT_SUPPORTED" in r.text
    assert "Override" not in ann.get("/actions/ACME-0000005").text
    op, token = signed_in(sqlite_env, "op")
    assert "Override: reverse this CPC action" in op.get("/actions/ACME-0000005").text
    first = {k: v for k, v in form.items() if k != "confirm_cpc"}
    r = op.post("/actions/ACME-0000005/change", data={**first, "csrf": token})
    assert "Override a CPC action?" in r.text and "_history" not in r.text
    assert _history(sqlite_env, "ACME-0000005") == []
    r = op.post("/actions/ACME-0000005/change", data={**form, "csrf": token})
    assert "APPLIED" in r.text
    (h,) = _history(sqlite_env, "ACME-0000005")
    assert h.actor == "op" and "cpc" in (h.detail or "").lower()


def test_bulk_reverse_confirms_the_count_then_lists_each_outcome(env: ConsoleEnv) -> None:
    c, token = signed_in(env, "ann")
    base = {"csrf": token, "op": "reverse", "reason": "ITEM_RETURNED", "campaign": "acme",
            "all_matching": "1", "partner": "P001"}  # fmt: skip
    r = c.post("/actions/bulk", data=base)
    assert "Reverse 3 actions?" in r.text
    r = c.post("/actions/bulk", data={**base, "confirmed": "1"})
    assert "APPLIED</strong> 3" in r.text
    with env.store.read() as conn:
        rows = conn.execute(select(t.actions.c.state).where(t.actions.c.partner_id == "P001",
                            t.actions.c.campaign_id == "acme")).all()  # fmt: skip
    assert {s for (s,) in rows} == {"REVERSED"}
    ids = [f"ACME-{k:07d}" for k in range(20, 30)]
    r = c.post("/actions/bulk", data={"csrf": token, "op": "approve", "campaign": "acme",
               "ids": ids})  # fmt: skip
    assert "Approve 10 actions?" in r.text
    page = c.get("/reversed?campaign=acme&reason=ITEM_RETURNED").text
    assert page.count('value="restore"') == 3


def test_filters_and_keyset_pages(sqlite_env: ConsoleEnv) -> None:
    c, _ = signed_in(sqlite_env, "ann")
    first = c.get("/actions").text
    assert "120 matching actions" in first and first.count("<tr>") == 51
    nxt = first.split('rel="next" href="')[1].split('"')[0].replace("&amp;", "&")
    second = c.get(nxt).text
    assert "ACME-0000069" in second and "ACME-0000070" not in second
    r = c.get("/actions?order_id=O0000042&event_type=abc&from=yesterday")
    assert "ACME-0000042" in r.text and "not a whole number" in r.text and "not a date" in r.text
    assert "No  actions match" in c.get("/actions?partner=nobody").text


def _worker_run(env: ConsoleEnv, file_id: str) -> None:
    w = Worker(env.settings, env.store)
    rec = w.claim(file_id)
    assert rec is not None
    w.process(rec)


def test_upload_check_only_then_apply_and_read_line_errors(env: ConsoleEnv) -> None:
    c, token = signed_in(env, "ann")
    body = (b"ActionId,Amount,Reason\nACME-0000001,0,ITEM_RETURNED\nNOPE-1,0,ITEM_RETURNED\n"
            b"ACME-0000002,abc,ORDER_UPDATE\n")  # fmt: skip
    files = {"file": ("returns.csv", body, "text/csv")}
    r = c.post("/upload", data={"csrf": token, "campaign": "acme", "check_only": "1"},
               files=files)  # fmt: skip
    assert "nothing was applied" in r.text and "ACTION_NOT_FOUND" in r.text
    assert "MALFORMED" in r.text
    with env.store.read() as conn:
        assert conn.scalar(select(t.files.c.id)) is None
    r = c.post("/upload", data={"csrf": token, "campaign": "acme"}, files=files)
    assert r.status_code == 303
    file_id = r.headers["location"].rsplit("/", 1)[1]
    assert "queued" in c.get(f"/files/{file_id}").text
    _worker_run(env, file_id)
    page = c.get(f"/files/{file_id}").text
    assert "COMPLETE" in page and "ACTION_NOT_FOUND" in page and "MALFORMED" in page
    contract = c.get(f"/files/{file_id}?kind=Contract").text
    assert "ACTION_NOT_FOUND" in contract and "MALFORMED" not in contract
    assert c.get(f"/files/{file_id}/original").content == body
    result = c.get(f"/files/{file_id}/result").text
    assert "ErrorCode" in result.splitlines()[0]
    listing = c.get("/files?channel=console").text
    assert "returns.csv" in listing and ">1</td>" in listing
    with env.store.read() as conn:
        f = conn.execute(select(t.files).where(t.files.c.id == file_id)).one()
    assert (f.channel, f.sender) == ("console", "ann")


def test_reprocess_is_for_operators(sqlite_env: ConsoleEnv) -> None:
    ctx = sqlite_env.context()
    body = b"ActionId,Amount,Reason\nACME-0000001,0,ITEM_RETURNED\n"
    first = ctx.spool.accept("acme", "ftp", "a.csv", body)
    _worker_run(sqlite_env, first.file_id)
    dup = ctx.spool.accept("acme", "ftp", "a.csv", body)
    assert dup.duplicate
    ann, token = signed_in(sqlite_env, "ann")
    assert "Process again" not in ann.get(f"/files/{dup.file_id}").text
    assert ann.post(f"/files/{dup.file_id}/reprocess", data={"csrf": token}).status_code == 403
    op, token = signed_in(sqlite_env, "op")
    assert "Process again" in op.get(f"/files/{dup.file_id}").text
    assert op.post(f"/files/{dup.file_id}/reprocess", data={"csrf": token}).status_code == 303
    with sqlite_env.store.read() as conn:
        assert conn.scalar(select(t.files.c.status).where(t.files.c.id == dup.file_id)) == "QUEUED"


def test_exports_csv_xlsx_pdf(env: ConsoleEnv) -> None:
    from openpyxl import load_workbook
    from pypdf import PdfReader

    c, _ = signed_in(env, "ann")
    r = c.get("/export/pending.csv?campaign=acme&partner=P002")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [x["ActionId"] for x in rows] == ["ACME-0000102", "ACME-0000052", "ACME-0000002"]
    assert rows[0]["Amount"] == "112.00"
    r = c.get("/export/pending.xlsx?campaign=acme")
    ws = load_workbook(io.BytesIO(r.content)).active
    assert ws is not None and ws.freeze_panes == "A2"
    header = [cell.value for cell in ws[1]]
    assert header[:3] == ["ActionId", "CampaignId", "ActionTrackerId"] and ws.max_row == 121
    second = [cell.value for cell in ws[2]]
    assert isinstance(second[header.index("Amount")], (int, float))
    assert isinstance(second[header.index("EventDate")], datetime)
    r = c.get("/export/pending.pdf?campaign=acme&partner=P002")
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages)
    assert "Pending actions" in text and "Partner: P002" in text and "Totals: 3 actions" in text
    assert "ACME-0000052" in text
    big = c.get("/export/pending.pdf?campaign=acme")
    assert len(PdfReader(io.BytesIO(big.content)).pages) >= 3


def test_saved_views_and_scheduled_reports(sqlite_env: ConsoleEnv) -> None:
    from console.schedules import run_due

    c, token = signed_in(sqlite_env, "ann")
    r = c.post("/views", data={"csrf": token, "page": "pending", "name": "P3",
               "query": "campaign=acme&partner=P003&cursor=x&evil=1"})  # fmt: skip
    assert r.headers["location"] == "/actions?campaign=acme&partner=P003"
    assert ">P3</a>" in c.get("/actions").text
    form = {"csrf": token, "page": "pending", "query": "campaign=acme&partner=P003",
            "name": "Daily P3", "format": "xlsx", "frequency": "daily", "at_time": "07:00",
            "timezone": "Europe/Paris", "recipients": "ann@acme.test, boss@acme.test"}  # fmt: skip
    bad = c.post("/reports", data={**form, "timezone": "Mars/Olympus", "recipients": "nobody"})
    assert bad.status_code == 400 and "Unknown time zone" in bad.text
    assert c.post("/reports", data=form).status_code == 303
    assert (
        c.post(
            "/reports",
            data={
                **form,
                "name": "Empty",
                "format": "pdf",
                "query": "campaign=acme&partner=none",
                "skip_if_empty": "1",
            },
        ).status_code
        == 303
    )
    ctx = sqlite_env.context()
    later = datetime.now(UTC) + timedelta(days=2)
    assert sorted(s for _, s in run_due(ctx, later)) == ["SENT", "SKIPPED"]
    (mail,) = sqlite_env.mails
    assert mail["To"] == "ann@acme.test, boss@acme.test" and "3 actions" in mail["Subject"]
    (att,) = list(mail.iter_attachments())
    assert att.get_filename() == "Daily_P3.xlsx"
    assert run_due(ctx, later) == []  # the next run is a day later

    def broken(_msg: Any) -> None:
        raise OSError("relay down")

    failing = sqlite_env.context(send_mail=broken)
    for k in range(3):
        ran = run_due(failing, later + timedelta(days=k + 1))
        assert "FAILED" in {s for _, s in ran}, ran
    page = c.get("/reports").text
    assert "paused after 3 failures" in page and "relay down" in page
    assert run_due(failing, later + timedelta(days=9)) == [(2, "SKIPPED")]
    stolen = c.post("/reports", data={**form, "query": "campaign=beta"})
    assert stolen.status_code == 404  # a report of another campaign's view
    bob, bob_token = signed_in(sqlite_env, "bob")
    assert bob.post("/reports/1/delete", data={"csrf": bob_token}).status_code == 404
    assert "Daily P3" not in bob.get("/reports").text
