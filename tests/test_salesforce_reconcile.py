"""The reconciler against a stand-in for Salesforce's REST API: a real HTTP server on loopback.

The stand-in answers the OAuth token request (username-password, or a JWT bearer assertion whose
RS256 signature it verifies) and SOQL queries as Salesforce's REST API shapes them (`records`
with `attributes`, `done`, `nextRecordsUrl` pages, `+0000` date-times, JSON numbers).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ingest.actions import import_actions
from ingest.config import Settings
from ingest.salesforce_reconcile import read_cursor, reconcile
from ingest.store import prepare
from tests.conftest import campaign_dict
from tests.sfdc import ORG, Harness, mapping, note, soap

TOKEN = "00D5g000004SGxb!AR8AQ-test-access-token"
PASSWORD, SECURITY_TOKEN, SECRET = "s3cret-pw", "TOKEN123", "client-secret-9"


class FakeSalesforce:
    """Token endpoint + query endpoint over a list of records; records every SOQL it is sent."""

    def __init__(self, public_key: Any = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.public_key = public_key
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSalesforce:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def record(self, rid: str, action: str, stage: str, stamp: str, **extra: Any) -> None:
        """A record as the REST API returns it."""
        self.records.append(
            {
                "attributes": {
                    "type": "Opportunity",
                    "url": f"/services/data/v61.0/sobjects/Opportunity/{rid}",
                },
                "Id": rid,
                "ActionId__c": action,
                "StageName": stage,
                "Amount": extra.pop("Amount", None),
                "SystemModstamp": stamp,
                **extra,
            }
        )

    def _answer(self, path: str, form: dict[str, list[str]], auth: str) -> tuple[int, Any]:
        if path == "/services/oauth2/token":
            if not self._signed_in(form):
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "authentication failure",
                }
            return 200, {
                "access_token": TOKEN,
                "instance_url": self.url,
                "token_type": "Bearer",
                "id": f"{self.url}/id/{ORG}/0055g00000AbCdEAAV",
            }
        if auth != f"Bearer {TOKEN}":
            return 401, [{"errorCode": "INVALID_SESSION_ID", "message": "Session expired"}]
        if path == "/services/data/v61.0/query":
            q = form["q"][0]
            self.queries.append(q)
            since = re.search(r"SystemModstamp >= (\S+)", q)
            assert since, q
            cut = datetime.fromisoformat(since.group(1).replace("Z", "+00:00"))
            found = sorted((r for r in self.records if _at(r) >= cut), key=_at)
            return 200, self._page(found, 0)
        if path.startswith("/services/data/v61.0/query/01gNEXT-"):
            start = int(path.rpartition("-")[2])
            q = self.queries[-1]
            since = re.search(r"SystemModstamp >= (\S+)", q)
            assert since
            cut = datetime.fromisoformat(since.group(1).replace("Z", "+00:00"))
            return 200, self._page(
                sorted((r for r in self.records if _at(r) >= cut), key=_at), start
            )
        return 404, [{"errorCode": "NOT_FOUND", "message": path}]

    def _page(self, found: list[dict[str, Any]], start: int, size: int = 2) -> dict[str, Any]:
        page: dict[str, Any] = {
            "totalSize": len(found),
            "done": start + size >= len(found),
            "records": found[start : start + size],
        }
        if not page["done"]:
            page["nextRecordsUrl"] = f"/services/data/v61.0/query/01gNEXT-{start + size}"
        return page

    def _signed_in(self, form: dict[str, list[str]]) -> bool:
        grant = form.get("grant_type", [""])[0]
        if grant == "password":
            return form.get("password") == [PASSWORD + SECURITY_TOKEN] and form.get(
                "client_secret"
            ) == [SECRET]
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer" and self.public_key:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            head, claims, sig = form["assertion"][0].split(".")
            raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
            self.public_key.verify(
                raw, f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
            doc = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
            return bool(doc["sub"] == "integration@acme.test" and doc["aud"] == self.url)
        return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                self._reply(*fake._answer(self.path, parse_qs(body), ""))

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                auth = self.headers.get("Authorization", "")
                self._reply(*fake._answer(url.path, parse_qs(url.query), auth))

            def _reply(self, status: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                return None

        return Handler


def _at(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(record["SystemModstamp"]))


@pytest.fixture
def fake() -> Iterator[FakeSalesforce]:
    """The stand-in, serving."""
    with FakeSalesforce() as server:
        yield server


def reconciling(fake_url: str, tmp_path: Path, **oauth: Any) -> dict[str, Any]:
    """The campaign mapping with a reconciler signing in to the stand-in (password flow)."""
    (tmp_path / "pw").write_text(PASSWORD)
    (tmp_path / "tok").write_text(SECURITY_TOKEN)
    (tmp_path / "secret").write_text(SECRET)
    auth = oauth or {
        "client_secret": {"file": str(tmp_path / "secret")},
        "password": {"file": str(tmp_path / "pw")},
        "security_token": {"file": str(tmp_path / "tok")},
    }
    return mapping(
        reconcile={
            "lookback_hours": 48,
            "oauth": {
                "login_url": fake_url,
                "client_id": "3MVG9test",
                "username": "integration@acme.test",
                **auth,
            },
        }
    )


def harness_for(
    make_settings: Callable[..., Settings], tmp_path: Path, sf: dict[str, Any], db_url: str
) -> Harness:
    """A started Salesforce harness whose campaign reconciles against the stand-in."""
    settings = make_settings(
        database_url=db_url,
        channels={"http": {"host": "127.0.0.1", "port": 0}},
        campaigns=[campaign_dict(salesforce=sf)],
    )
    h = Harness(settings, tmp_path)
    h.start()
    return h


def test_reconciler_applies_what_salesforce_dropped_once(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    fake: FakeSalesforce,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness_for(make_settings, tmp_path, reconciling(fake.url, tmp_path), db_url)
    try:
        delivered = note(
            "04l5g0000000001AAA", "006A1", "A1", "Closed Lost", "2026-12-01T10:15:02.000Z"
        )
        assert b"<Ack>true</Ack>" in h.post(soap(delivered)).content
        h.process()
        fake.record("006A1", "A1", "Closed Lost", "2026-12-01T10:15:02.000+0000")  # delivered
        fake.record("006A2", "A2", "Closed Won", "2026-12-01T10:20:00.000+0000")  # dropped
        fake.record("006A3", "A3", "Returned", "2026-12-01T10:21:00.000+0000", Amount=60.5)
        now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        report = reconcile(h.spool, h.settings, "acme", now=now)
        assert (report.queried, report.spooled, len(report.files)) == (3, 2, 1)
        assert "FROM Opportunity WHERE SystemModstamp >= 2026-11-29T12:00:00Z" in fake.queries[0]
        assert "ORDER BY SystemModstamp ASC" in fake.queries[0]
        assert h.process() == 1
        rows = h.results.outcome(report.files[0])
        assert rows is not None and rows.counts["applied"] == 2, rows
        assert h.state("A2")[0] == "APPROVED" and h.state("A3") == ("PENDING", 6050)
        assert read_cursor(h.store, "acme") == datetime(2026, 12, 1, 10, 21, tzinfo=UTC)
        assert len(h.audit()) == 3
        again = reconcile(h.spool, h.settings, "acme", now=now)
        assert (again.queried, again.spooled) == (1, 0)  # the cursor moved; nothing is new
        assert "SystemModstamp >= 2026-12-01T10:21:00Z" in fake.queries[-1]
        restarted = prepare(h.settings)  # a new process: the cursor comes from the database
        try:
            assert read_cursor(restarted, "acme") == datetime(2026, 12, 1, 10, 21, tzinfo=UTC)
        finally:
            restarted.dispose()
        assert reconcile(h.spool, h.settings, "acme", now=now).spooled == 0
        assert len(h.audit()) == 3 and len(h.files()) == 2
        assert TOKEN not in caplog.text and PASSWORD not in caplog.text
    finally:
        h.close()


def test_reconciler_signs_in_with_a_jwt_bearer_assertion(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "jwt.key"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with FakeSalesforce(key.public_key()) as fake:
        sf = reconciling(fake.url, tmp_path, private_key={"file": str(pem)})
        h = harness_for(make_settings, tmp_path, sf, f"sqlite:///{tmp_path / 'jwt.db'}")
        try:
            fake.record("006A4", "A4", "Closed Lost", "2026-12-01T10:30:00.000+0000")
            report = reconcile(h.spool, h.settings, "acme")
            assert report.spooled == 1
            h.process()
            assert h.state("A4") == ("REVERSED", 0)
        finally:
            h.close()


def test_refused_sign_in_names_the_reason(
    make_settings: Callable[..., Settings], tmp_path: Path, fake: FakeSalesforce
) -> None:
    from ingest.salesforce_rest import SalesforceRefused

    sf = reconciling(fake.url, tmp_path)
    h = harness_for(make_settings, tmp_path, sf, f"sqlite:///{tmp_path / 'no.db'}")
    try:
        (tmp_path / "pw").write_text("wrong")
        with pytest.raises(SalesforceRefused, match="invalid_grant: authentication failure"):
            reconcile(h.spool, h.settings, "acme")
        assert read_cursor(h.store, "acme") is None
    finally:
        h.close()


def test_the_daemon_serves_the_endpoint_and_schedules_the_reconciler(
    make_settings: Callable[..., Settings], tmp_path: Path, fake: FakeSalesforce
) -> None:
    import time

    import httpx

    from returnsd.daemon import Daemon
    from tests.sfdc import write_actions

    settings = make_settings(
        channels={"http": {"host": "127.0.0.1", "port": 0}},
        campaigns=[campaign_dict(salesforce=reconciling(fake.url, tmp_path))],
    )
    store = prepare(settings)
    import_actions(store, settings, write_actions(tmp_path))
    fake.record("006A4", "A4", "Closed Lost", datetime.now(UTC).isoformat())
    daemon = Daemon(settings, store)
    daemon.start()  # the reconciler never ran: it runs at once
    try:
        assert daemon.scheduler.get_job("salesforce:acme") is not None
        port = daemon.channels["http"].port  # type: ignore[attr-defined]
        message = soap(
            note("04l5g0000000009AAA", "006A1", "A1", "Closed Won", datetime.now(UTC).isoformat())
        )
        r = httpx.post(
            f"http://127.0.0.1:{port}/salesforce/acme",
            content=message,
            headers={"Content-Type": "text/xml"},
        )
        assert r.status_code == 200 and b"<Ack>true</Ack>" in r.content
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _states(store, "A1", "A4") != [
            "APPROVED",
            "REVERSED",
        ]:
            time.sleep(0.05)
        assert _states(store, "A1", "A4") == ["APPROVED", "REVERSED"]
    finally:
        daemon.stop()
        store.dispose()


def _states(store: Any, *ids: str) -> list[str]:
    from sqlalchemy import select

    from ingest import tables as t

    with store.read() as conn:
        found = dict(conn.execute(select(t.actions.c.id, t.actions.c.state)).all())
    return [found[i] for i in ids]
