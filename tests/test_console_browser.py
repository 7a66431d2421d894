"""The console in a real browser (Playwright driving Debian's Chromium) against a real daemon
with the console enabled on 127.0.0.1:0, on SQLite and PostgreSQL.

Covers sign-in/out, throttling, session expiry, tenancy under URL tampering, a cross-site POST,
filtering and paging 20,000 actions, every per-row change, a bulk reversal of 100 actions, an
upload checked then applied with its line errors, CSV/XLSX/PDF downloads parsed, a scheduled
report arriving at a test relay, and the operator-only CPC override. Screenshots of the main
pages (desktop and phone) are written to docs/screenshots/.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from ingest import tables as t
from tests.conftest import _reset_pg, need
from tests.console_data import seed_actions
from tests.console_env import BETA_TRACKER, PASSWORD, console_settings
from tests.test_channel_smtp import Collector

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
N = 20_000


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """The module's daemon keeps its server's worker threads until it stops (module end)."""
    before = set(threading.enumerate())
    yield
    owned = ("AnyIO worker thread", "asyncio_")
    extra = [th for th in threading.enumerate() if th not in before and th.is_alive()
             and not th.daemon and not th.name.startswith(owned)]  # fmt: skip
    assert not extra, f"threads leaked: {[th.name for th in extra]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless (a Playwright browser download does not work here)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        need("chromium", "Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("chromium", "the playwright package is not installed (pip install playwright)")
        raise
    with sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield found
        found.close()


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[Collector, int]]:
    """A test SMTP relay on 127.0.0.1:0 that keeps what it is given."""
    from channels.smtp_server import PortController

    collector = Collector()
    controller = PortController(collector, hostname="127.0.0.1", port=0, server_hostname="relay")
    controller.start()
    yield collector, controller.port
    controller.stop()


class Live:
    """A running daemon with the console, and its store."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.url = daemon.console.url

    def state(self, action_id: str) -> str:
        """An action's state, read from the database."""
        with self.store.read() as conn:
            found: str = conn.scalar(select(t.actions.c.state).where(t.actions.c.id == action_id))
        return found


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql",
                marks=pytest.mark.postgres)])  # fmt: skip
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
    relay: tuple[Collector, int],
) -> Iterator[Live]:  # fmt: skip
    """`returnsd run` in-process: the console on 127.0.0.1:0 over 20,000 acme actions."""
    from ingest.store import prepare
    from ingest.users import ensure_users
    from returnsd.daemon import Daemon

    tmp = tmp_path_factory.mktemp(f"browser-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'returnsd.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        _reset_pg(url)
    settings = console_settings(tmp, url, login_failures_per_user=3, session_idle_minutes=30)
    settings = settings.model_copy(update={"channels": settings.channels.model_copy(update={
        "smtp": _smtp_relay(relay[1])})})  # fmt: skip
    store = prepare(settings)
    seed_actions(store, n=N)
    seed_actions(store, n=100, prefix="BULK", partners=1, partner_prefix="BULK", items=False)
    seed_actions(store, "beta", n=5, tracker=BETA_TRACKER)
    assert settings.console is not None
    ensure_users(store, settings.console.users)
    daemon = Daemon(settings, store)
    daemon.start()
    yield Live(daemon)
    daemon.stop()
    store.dispose()


def _smtp_relay(port: int) -> Any:
    from ingest.config import SmtpOptions

    return SmtpOptions(enabled=False, port=0, relay_host="127.0.0.1", relay_port=port)


@pytest.fixture
def page(browser: Any, live: Live) -> Iterator[Any]:
    """A fresh browser context (no cookies) at 1280×800."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    context.set_default_timeout(15_000)
    found = context.new_page()
    errors: list[str] = []
    found.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield found
    context.close()
    assert not [e for e in errors if "Content Security Policy" in e], errors


def sign_in(page: Any, live: Live, login: str, password: str = PASSWORD) -> None:
    page.goto(f"{live.url}/login?next=/actions")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def shot(page: Any, name: str, live: Live, full_page: bool = False) -> None:
    """A screenshot for the README (from the SQLite run only): the first screenful."""
    if "sqlite" in str(live.store.engine.url):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def test_login_logout_and_wrong_password_throttled(page: Any, live: Live) -> None:
    page.goto(f"{live.url}/actions")
    assert "/login" in page.url
    shot(page, "login", live)
    for _ in range(3):
        sign_in(page, live, "bob", "not the password")
        assert "Wrong login or password" in page.text_content("main")
    sign_in(page, live, "bob")
    assert "Too many failed sign-ins" in page.text_content("main")
    with live.store.begin() as conn:  # the other tests sign in as bob
        conn.execute(t.login_attempts.delete())
    sign_in(page, live, "ann")
    assert page.url.endswith("/actions")
    assert "Pending actions" in page.text_content("h1")
    page.click("text=Sign out >> nth=0")
    assert "/login" in page.url
    page.goto(f"{live.url}/actions")
    assert "/login" in page.url


def test_session_expires_when_idle(page: Any, live: Live) -> None:
    sign_in(page, live, "ann")
    assert page.url.endswith("/actions")
    with live.store.begin() as conn:
        conn.execute(update(t.sessions).where(t.sessions.c.revoked_at.is_(None))
                     .values(last_seen_at=datetime.now(UTC) - timedelta(hours=2)))  # fmt: skip
    page.goto(f"{live.url}/actions")
    assert "/login" in page.url


def test_an_advertiser_cannot_see_another_campaign(page: Any, live: Live) -> None:
    sign_in(page, live, "bob")
    paths = ("/actions/ACME-0000001", "/actions?campaign=acme", "/export/pending.csv?campaign=acme")
    for path in paths:
        response = page.goto(f"{live.url}{path}")
        assert response.status == 404, path
        assert "not yours to see" in page.text_content("main")
    page.goto(f"{live.url}/actions")
    assert "ACME-" not in page.text_content("main")


class EvilPage(BaseHTTPRequestHandler):
    """Another site whose form posts to the console."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<form method="post" action="{self.target}"><input name="op" value="reverse">'
                f'<button id="go">win a prize</button></form>').encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_cross_site_post_is_refused(page: Any, live: Live) -> None:
    sign_in(page, live, "ann")
    handler = type("Evil", (EvilPage,), {"target": f"{live.url}/actions/ACME-0000100/change"})
    evil = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://localhost:{evil.server_address[1]}/")
        page.click("#go")
        assert "Refused" in page.text_content("main")
    finally:
        evil.shutdown()
        evil.server_close()
    assert live.state("ACME-0000100") == "PENDING"


def test_filter_and_page_through_20000_actions(page: Any, live: Live) -> None:
    sign_in(page, live, "ann")
    assert "1,000+ matching actions" in page.text_content("main")
    assert page.locator("tbody tr").count() == 50
    first_ids = page.locator("tbody tr td:nth-child(2)").all_text_contents()
    for _ in range(3):
        page.click("text=Next page")
    fourth = page.locator("tbody tr td:nth-child(2)").all_text_contents()
    assert not set(first_ids) & set(fourth) and len(fourth) == 50
    assert fourth == sorted(fourth, reverse=True) and fourth[0] < first_ids[-1]
    page.fill("input[name=partner]", "P007")
    page.click("text=Apply filters")
    assert "400 matching actions" in page.text_content("main")
    partners = page.locator("tbody tr td:nth-child(5)").all_text_contents()
    assert set(partners) == {"P007"}
    page.goto(f"{live.url}/actions?campaign=acme")
    page.fill("input[name=order_id]", "O0012345")
    page.click("text=Apply filters")
    assert page.locator("tbody tr").count() == 1 and "ACME-0012345" in page.text_content("tbody")
    page.goto(f"{live.url}/actions?campaign=acme&sort=lock&dir=asc&locks_within=30")
    shot(page, "pending", live)


def _row(page: Any, action_id: str) -> Any:
    return page.locator("tbody tr", has=page.locator(f"a:text-is('{action_id}')"))


def test_approve_reverse_modify_reject_item_restore(page: Any, live: Live) -> None:
    sign_in(page, live, "ann")
    page.goto(f"{live.url}/actions?campaign=acme&order_id=O0000011")
    row = _row(page, "ACME-0000011")
    row.locator("button:text('Approve')").click()
    page.wait_for_selector(".row-outcome .badge")
    assert "APPLIED" in _row(page, "ACME-0000011").locator(".row-outcome").text_content()
    assert live.state("ACME-0000011") == "APPROVED"
    page.goto(f"{live.url}/actions?campaign=acme&order_id=O0000012")
    _row(page, "ACME-0000012").locator("text=Reverse…").click()
    page.select_option("tr.editing select[name=reason]", "CONS_FRAUD")
    shot(page, "row-editor", live)
    page.click("tr.editing button:text('Reverse')")
    page.wait_for_selector(".row-outcome .badge")
    assert "REVERSED" in page.text_content("tbody")
    assert live.state("ACME-0000012") == "REVERSED"
    page.goto(f"{live.url}/actions?campaign=acme&order_id=O0000013")
    _row(page, "ACME-0000013").locator("text=Modify…").click()
    page.fill("tr.editing input[name=amount]", "7.50")
    page.click("tr.editing button:text('Save amount')")
    page.wait_for_selector(".row-outcome .badge")
    assert "7.50" in page.text_content("tbody") and "APPLIED" in page.text_content("tbody")
    page.goto(f"{live.url}/actions/ACME-0000020")  # has items SKU-A and SKU-B
    item = page.locator("tr", has=page.locator("td:text-is('SKU-A')"))
    item.locator("input[name=quantity]").fill("0")
    item.locator("button:text('Save item')").click()
    assert "APPLIED" in page.text_content(".flash")
    shot(page, "action-detail", live, full_page=True)
    with live.store.read() as conn:
        i = t.action_items.c
        qty = conn.scalar(select(i.quantity).where(i.action_id == "ACME-0000020", i.sku == "SKU-A"))
    assert qty == 0
    page.goto(f"{live.url}/reversed?campaign=acme&reason=CONS_FRAUD")
    shot(page, "reversed", live)
    _row(page, "ACME-0000012").locator("button:text('Restore')").click()
    page.wait_for_selector(".row-outcome .badge")
    assert live.state("ACME-0000012") == "PENDING"
    page.goto(f"{live.url}/actions/ACME-0000012")
    history = page.text_content("main")
    assert "reverse" in history and "reset" in history and "ann · console" in history


def test_bulk_reverse_100_actions(page: Any, live: Live) -> None:
    sign_in(page, live, "ann")
    page.goto(f"{live.url}/actions?campaign=acme&partner=BULK000")
    page.select_option("#bulk select[name=reason]", "ITEM_RETURNED")
    page.check("input[name=all_matching]")
    page.click("#bulk button:text('Reverse…')")
    assert "Reverse 100 actions?" in page.text_content("h1")
    page.click("button:text('Yes, reverse 100 actions')")
    assert "APPLIED 100" in page.text_content(".flash")
    shot(page, "bulk-result", live)
    with live.store.read() as conn:
        states = conn.execute(select(t.actions.c.state).where(
            t.actions.c.partner_id == "BULK000")).all()  # fmt: skip
    assert {s for (s,) in states} == {"REVERSED"} and len(states) == 100


def test_upload_check_only_then_apply_and_read_line_errors(
    page: Any, live: Live, tmp_path: Path
) -> None:
    body = ("ActionId,Amount,Reason\nACME-0000030,0,ITEM_RETURNED\nNOPE-1,0,ITEM_RETURNED\n"
            "ACME-0000031,abc,ORDER_UPDATE\nACME-0000032,9.99,MADE_UP\n")  # fmt: skip
    upload = tmp_path / f"returns-{live.store.dialect}.csv"
    upload.write_text(body)
    sign_in(page, live, "ann")
    page.goto(f"{live.url}/upload")
    page.set_input_files("input[type=file]", str(upload))
    page.click("form.card button:text('Upload')")
    text = page.text_content("main")
    assert "nothing was applied" in text and "ACTION_NOT_FOUND" in text and "MALFORMED" in text
    shot(page, "upload-check", live)
    assert live.state("ACME-0000030") == "PENDING"
    page.set_input_files("input[type=file]", str(upload))
    page.uncheck("input[name=check_only]")
    page.click("form.card button:text('Upload')")
    for _ in range(100):
        if "COMPLETE" in page.text_content("h1"):
            break
        page.wait_for_timeout(200)
        page.reload()
    assert "COMPLETE" in page.text_content("h1")
    assert live.state("ACME-0000030") == "REVERSED"
    shot(page, "file-detail", live, full_page=True)
    page.click(".tabs a:has-text('Contract')")
    contract = page.text_content("tbody")
    assert "ACTION_NOT_FOUND" in contract and "MALFORMED" not in contract
    page.click(".tabs a:has-text('Validation')")
    validation = page.text_content("tbody")
    assert "MALFORMED" in validation and "UNKNOWN_REASON" in validation
    page.goto(f"{live.url}/files")
    assert upload.name in page.text_content("tbody")
    shot(page, "files", live)


def test_download_csv_xlsx_pdf_and_parse_each(page: Any, live: Live) -> None:
    from openpyxl import load_workbook
    from pypdf import PdfReader

    sign_in(page, live, "ann")
    page.goto(f"{live.url}/actions?campaign=acme&partner=P019")
    got: dict[str, bytes] = {}
    for label in ("CSV", "Excel", "PDF"):
        with page.expect_download() as info:
            page.click(f"a.button:text-is('{label}')")
        got[label] = Path(info.value.path()).read_bytes()
    rows = list(csv.DictReader(io.StringIO(got["CSV"].decode("utf-8-sig"))))
    assert len(rows) == 400 and {r["PartnerId"] for r in rows} == {"P019"}
    ws = load_workbook(io.BytesIO(got["Excel"])).active
    assert ws is not None and ws.max_row == 401 and ws.freeze_panes == "A2"
    assert isinstance(ws.cell(2, 8).value, (int, float))
    assert isinstance(ws.cell(2, 6).value, datetime)
    pdf = PdfReader(io.BytesIO(got["PDF"]))
    text = "".join(p.extract_text() for p in pdf.pages)
    assert len(pdf.pages) >= 8 and "Partner: P019" in text and "Totals: 400 actions" in text


def test_scheduled_report_arrives_at_the_relay(
    page: Any, live: Live, relay: tuple[Collector, int]
) -> None:
    from console.schedules import run_due

    collector, _port = relay
    before = len(collector.messages)
    sign_in(page, live, "ann")
    page.goto(f"{live.url}/actions?campaign=acme&partner=P013")
    page.click("text=Schedule…")
    name = f"P13 weekly {live.store.dialect}"
    page.fill("input[name=name]", name)
    page.select_option("select[name=format]", "csv")
    page.select_option("select[name=frequency]", "weekly")
    page.select_option("select[name=weekday]", "0")
    page.click("button:text('Schedule')")
    assert name in page.text_content("tbody")
    ran = run_due(live.daemon.console.ctx, datetime.now(UTC) + timedelta(days=8))
    assert "SENT" in {s for _, s in ran}
    (msg,) = collector.wait(before + 1)[before:]
    assert "400 actions" in msg["Subject"] and msg["To"] == "ann@acme.test"
    page.reload()
    assert "SENT" in page.text_content("tbody")
    shot(page, "reports", live)


def test_cpc_override_only_for_operators(page: Any, live: Live) -> None:
    with live.store.begin() as conn:
        conn.execute(update(t.actions).where(t.actions.c.id == "ACME-0000040")
                     .values(event_type_id=103))  # the CPC tracker  # fmt: skip
    sign_in(page, live, "ann")
    page.goto(f"{live.url}/actions/ACME-0000040")
    assert "Override" not in page.text_content("main")
    page.click("#reverse button")
    assert "CPC_NOT_SUPPORTED" in page.text_content(".flash")
    page.click("text=Sign out >> nth=0")
    sign_in(page, live, "op")
    page.goto(f"{live.url}/actions/ACME-0000040")
    page.check("#reverse input[name=override_cpc]")
    page.click("#reverse button")
    assert "Override a CPC action?" in page.text_content("h1")
    page.click("button:text('Yes, reverse this CPC action')")
    assert "APPLIED" in page.text_content(".flash")
    assert live.state("ACME-0000040") == "REVERSED"


def test_dashboard_and_phone_layout(browser: Any, page: Any, live: Live) -> None:
    sign_in(page, live, "op")
    page.goto(f"{live.url}/")
    text = page.text_content("main")
    assert "Channels up" in text and "Locking in 7 days" in text
    shot(page, "dashboard", live)
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        p = phone.new_page()
        sign_in(p, live, "ann")
        width = p.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, width  # no sideways scrolling of the page (tables scroll inside)
        shot(p, "pending-phone", live)
    finally:
        phone.close()
    assert not re.search(r"[{]\s*\"", page.text_content("main"))  # no raw JSON on the page
