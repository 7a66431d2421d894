"""HTTP upload API: the real uvicorn server on 127.0.0.1:0, a real httpx client."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from channels.base import ChannelContext, ChannelError
from channels.http_api import HttpApiChannel
from ingest import tables as t
from ingest.config import Settings
from ingest.passwords import hash_password
from ingest.results import ResultStore
from ingest.spool import Spool
from ingest.store import Store, prepare
from tests.conftest import campaign_dict

CSV = b"ActionId,Amount,Reason\r\n1000.1.1,0,ITEM_RETURNED\r\n"
ACME = "acme-token-0123456789"
BETA = "beta-token-9876543210"
ACME_HASH = hash_password(ACME)  # once: scrypt is slow on purpose


class Harness:
    """An HTTP API channel over its own SQLite store, with an httpx client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Store = prepare(settings)
        self.spool = Spool(settings, self.store)
        self.results = ResultStore(self.store)
        self.channel = HttpApiChannel(ChannelContext(settings, self.spool, self.results))
        self._client: httpx.Client | None = None

    def start(self) -> httpx.Client:
        """Start the channel and return a client for it."""
        self.channel.start()
        self._client = httpx.Client(base_url=f"http://127.0.0.1:{self.channel.port}", timeout=10)
        return self._client

    def spooled(self, campaign: str, file_id: str) -> bytes:
        """The bytes the spool stored."""
        return (self.settings.path(self.settings.spool_dir) / campaign / file_id).read_bytes()

    def close(self) -> None:
        """Stop the client, the channel and the store."""
        if self._client is not None:
            self._client.close()
            self.channel.stop()
        self.store.dispose()


@pytest.fixture
def harness(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[Callable[..., Harness]]:
    """Build a Harness: `acme` has a scrypt token hash, `beta` a token in a secret file."""
    made: list[Harness] = []
    secret = tmp_path / "beta.token"
    secret.write_text(BETA + "\n")

    def build(limits: dict[str, Any] | None = None, **options: Any) -> Harness:
        settings = make_settings(
            channels={"http": {"host": "127.0.0.1", "port": 0, **options}},
            campaigns=[
                campaign_dict(http={"token_hash": ACME_HASH}),
                campaign_dict("beta", http={"token": {"file": str(secret)}}),
                campaign_dict("gamma"),
            ],
            **({"limits": limits} if limits else {}),
        )
        made.append(Harness(settings))
        return made[-1]

    yield build
    for h in made:
        h.close()


@pytest.fixture
def api(harness: Callable[..., Harness]) -> Iterator[tuple[Harness, httpx.Client]]:
    """A started API with default limits."""
    h = harness()
    yield h, h.start()


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def upload_raw(client: httpx.Client, campaign: str = "acme", token: str = ACME, **kw: Any) -> Any:
    """POST CSV as a raw body with ?name=returns.csv."""
    headers = {**auth(token), "Content-Type": kw.pop("content_type", "text/csv")}
    params = kw.pop("params", {"name": "returns.csv"})
    return client.post(
        f"/v1/campaigns/{campaign}/files",
        content=kw.pop("content", CSV),
        params=params,
        headers=headers,
        **kw,
    )


def test_raw_upload_is_spooled_then_202(api: tuple[Harness, httpx.Client]) -> None:
    h, client = api
    r = upload_raw(client)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "QUEUED" and "duplicate_of" not in body
    assert h.spooled("acme", body["file_id"]) == CSV
    assert body["status_url"].endswith(f"/v1/files/{body['file_id']}")
    assert body["result_url"] == body["status_url"] + "/result"
    out = h.results.outcome(body["file_id"])
    assert out is not None and out.name == "returns.csv" and out.channel == "http"
    assert out.peer == "127.0.0.1" and out.sender == "token:acme"
    status = client.get(f"/v1/files/{body['file_id']}", headers=auth(ACME))
    assert status.status_code == 200
    assert status.json()["status"] == "QUEUED"
    assert status.json()["sha256"] == hashlib.sha256(CSV).hexdigest()
    receipt = client.get(f"/v1/files/{body['file_id']}/receipt", headers=auth(ACME))
    assert receipt.status_code == 200 and f"file_id: {body['file_id']}" in receipt.text


def test_multipart_upload(api: tuple[Harness, httpx.Client]) -> None:
    h, client = api
    r = client.post(
        "/v1/campaigns/beta/files",
        headers=auth(BETA),
        files={"file": ("Returns May.CSV", CSV, "text/csv")},
    )
    assert r.status_code == 202, r.text
    out = h.results.outcome(r.json()["file_id"])
    assert out is not None and out.name == "Returns May.CSV" and out.campaign == "beta"
    assert h.spooled("beta", out.file_id) == CSV


def test_multipart_large_file_goes_through_disk(harness: Callable[..., Harness]) -> None:
    h = harness()
    client = h.start()
    big = CSV + b"1000.1.2,0,OTHER\r\n" * 200_000  # ~3.6 MB: past the 1 MiB in-memory part
    r = client.post(
        "/v1/campaigns/acme/files", headers=auth(ACME), files={"file": ("big.csv", big, "text/csv")}
    )
    assert r.status_code == 202, r.text
    assert h.spooled("acme", r.json()["file_id"]) == big
    assert list(h.spool.tmp.iterdir()) == []  # temporary data removed


def test_multipart_without_file_field(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    r = client.post(
        "/v1/campaigns/acme/files", headers=auth(ACME), files={"upload": ("r.csv", CSV, "text/csv")}
    )
    assert r.status_code == 400 and r.json()["code"] == "NO_FILE"


def test_resend_and_duplicate(api: tuple[Harness, httpx.Client]) -> None:
    h, client = api
    first = upload_raw(client).json()
    again = upload_raw(client)
    assert again.status_code == 202 and again.json()["file_id"] == first["file_id"]
    with h.store.begin() as conn:
        conn.execute(
            update(t.files).where(t.files.c.id == first["file_id"]).values(status="COMPLETE")
        )
    dup = upload_raw(client)
    assert dup.status_code == 200
    assert dup.json()["status"] == "DUPLICATE" and dup.json()["duplicate_of"] == first["file_id"]


def test_missing_and_bad_token_401(api: tuple[Harness, httpx.Client]) -> None:
    h, client = api
    r = client.post(
        "/v1/campaigns/acme/files",
        content=CSV,
        params={"name": "r.csv"},
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert upload_raw(client, token="wrong").status_code == 401
    assert upload_raw(client, campaign="beta", token="wrong").status_code == 401
    assert h.results.recent() == []


def test_other_campaigns_token_401(
    api: tuple[Harness, httpx.Client], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h, client = api
    assert upload_raw(client, campaign="acme", token=BETA).status_code == 401
    assert upload_raw(client, campaign="beta", token=ACME).status_code == 401
    acme_file = upload_raw(client).json()["file_id"]
    assert client.get(f"/v1/files/{acme_file}", headers=auth(BETA)).status_code == 401
    assert client.get(f"/v1/files/{acme_file}/result", headers=auth(BETA)).status_code == 401
    assert [f.campaign for f in h.results.recent()] == ["acme"]
    assert "event=refused" in caplog.text and "event=received" in caplog.text
    assert ACME not in caplog.text and BETA not in caplog.text  # tokens are never logged


def test_unknown_campaign_404_only_with_a_valid_token(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    assert upload_raw(client, campaign="nope", token=BETA).status_code == 404
    assert upload_raw(client, campaign="gamma", token=BETA).status_code == 404  # no http account
    assert upload_raw(client, campaign="nope", token="guess").status_code == 401
    assert client.get("/v1/files/20990101000000abcdefabcd", headers=auth(BETA)).status_code == 404
    assert client.get("/v1/files/20990101000000abcdefabcd", headers=auth("x")).status_code == 401


def test_too_large_413(harness: Callable[..., Harness]) -> None:
    h = harness(limits={"max_file_bytes": 1000})
    client = h.start()
    assert upload_raw(client, content=b"x" * 1001).status_code == 413  # by Content-Length

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 500  # chunked: no Content-Length, the limit applies while streaming

    r = upload_raw(client, content=chunks())
    assert r.status_code == 413 and r.json()["code"] == "TOO_LARGE"
    r = client.post(
        "/v1/campaigns/acme/files",
        headers=auth(ACME),
        files={"file": ("r.csv", b"z" * 1500, "text/csv")},
    )
    assert r.status_code == 413
    assert upload_raw(client, content=b"x" * 1000).status_code == 202  # exactly the limit
    assert len(h.results.recent()) == 1
    assert list(h.spool.tmp.iterdir()) == []


def test_content_type_and_name_415(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    assert upload_raw(client, content_type="application/json").status_code == 415
    assert upload_raw(client, content_type="application/x-www-form-urlencoded").status_code == 415
    r = upload_raw(client, content_type="application/octet-stream", params={})
    assert r.status_code == 415 and r.json()["code"] == "NAME_REQUIRED"
    assert upload_raw(client, params={"name": "returns.pdf"}).status_code == 415
    ok = upload_raw(client, content_type="application/octet-stream", params={"name": "R.XLSX"})
    assert ok.status_code == 202
    nameless = upload_raw(client, content=CSV + b"1,0,OTHER\r\n", params={})
    assert nameless.status_code == 202


def test_reserved_name_422(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    r = upload_raw(client, params={"name": "result_returns.csv"})
    assert r.status_code == 422 and r.json()["code"] == "RESERVED_NAME"


def test_result_before_processing_409(api: tuple[Harness, httpx.Client]) -> None:
    h, client = api
    file_id = upload_raw(client).json()["file_id"]
    r = client.get(f"/v1/files/{file_id}/result", headers=auth(ACME))
    assert r.status_code == 409 and r.json()["code"] == "NOT_FINISHED"
    with h.store.begin() as conn:
        conn.execute(update(t.files).where(t.files.c.id == file_id).values(status="FAILED"))
    r = client.get(f"/v1/files/{file_id}/result", headers=auth(ACME))
    assert r.status_code == 404 and r.json()["code"] == "NO_RESULT"


def test_openapi_docs_and_health(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    doc = client.get("/openapi.json").json()
    upload = doc["paths"]["/v1/campaigns/{campaign}/files"]["post"]
    assert {"text/csv", "multipart/form-data"} <= set(upload["requestBody"]["content"])
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert "/v1/files/{file_id}/result" in doc["paths"]
    status = doc["paths"]["/v1/files/{file_id}"]["get"]["responses"]["200"]["content"]
    ref = status["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert {"file_id", "status", "counts"} <= set(doc["components"]["schemas"][ref]["properties"])
    assert "get" in doc["paths"]["/v1/campaigns/{campaign}/files"]
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "queued": 0, "processing": 0,
                             "queue_capped": False, "channels": []}  # fmt: skip


def test_docs_load_nothing_from_outside(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    found = [u for pair in urls for u in pair if u]
    assert found and all(u.startswith("/") for u in found), found
    for url in found:
        assert client.get(url).status_code == 200, url
    assert "swagger-ui" in client.get("/docs/assets/swagger-ui-bundle.js").text[:5000].lower()


def test_campaign_files_are_listed_page_by_page(api: tuple[Harness, httpx.Client]) -> None:
    _, client = api
    ids = [upload_raw(client, content=CSV + f"1000.1.{i},0,OTHER\r\n".encode()).json()["file_id"]
           for i in range(3)]  # fmt: skip
    assert client.get("/v1/campaigns/acme/files").status_code == 401
    assert client.get("/v1/campaigns/acme/files", headers=auth(BETA)).status_code == 401
    page = client.get("/v1/campaigns/acme/files", params={"limit": 2}, headers=auth(ACME)).json()
    newest_first = sorted(ids, reverse=True)  # ids sort by time (then at random within a second)
    assert [f["file_id"] for f in page["files"]] == newest_first[:2]
    assert page["files"][0]["status"] == "QUEUED" and page["files"][0]["status_url"]
    rest = client.get(page["next"], headers=auth(ACME)).json()
    assert [f["file_id"] for f in rest["files"]] == newest_first[2:] and "next" not in rest


def test_start_fails_with_address_when_port_taken(harness: Callable[..., Harness]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        h = harness(port=port)
        with pytest.raises(ChannelError, match=f"127.0.0.1:{port}"):
            h.channel.start()


def test_end_to_end_upload_process_result(
    api: tuple[Harness, httpx.Client], tmp_path: Path
) -> None:
    from ingest.actions import import_actions
    from ingest.worker import Worker

    h, client = api
    today = datetime.now(UTC).date().isoformat()
    actions = tmp_path / "actions.csv"
    actions.write_text(
        "ActionId,CampaignId,ActionTrackerId,OrderId,PartnerId,EventDate,Amount,Currency,Payout,"
        f"CustomerStatus\nA1,acme,101,O1,P1,{today}T10:00:00,100.00,USD,10.00,NEW\n"
    )
    assert import_actions(h.store, h.settings, actions).imported == 1
    returns = b"ActionId,Amount,Reason\r\nA1,60.00,ITEM_RETURNED\r\nNOPE,1,OTHER\r\n"
    file_id = upload_raw(client, content=returns).json()["file_id"]
    assert Worker(h.settings, h.store).drain() == 1
    status = client.get(f"/v1/files/{file_id}", headers=auth(ACME)).json()
    assert status["status"] == "COMPLETE"
    r = client.get(f"/v1/files/{file_id}/result", headers=auth(ACME))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="result_returns.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(r["Status"], r["ErrorCode"]) for r in rows] == [
        ("APPLIED", ""),
        ("ERROR", "ACTION_NOT_FOUND"),
    ]
    assert rows[0]["NewAmount"] == "60.00" and rows[0]["NewPayout"] == "6.00"
    assert h.channel.deliver(h.results.outcome(file_id)) is True  # type: ignore[arg-type]


def test_public_url_in_links(harness: Callable[..., Harness]) -> None:
    client = harness(public_url="https://returns.example.com/api/").start()
    body = upload_raw(client).json()
    assert body["status_url"] == f"https://returns.example.com/api/v1/files/{body['file_id']}"


def test_body_reading_stops_at_the_limit(tmp_path: Path) -> None:
    from channels.http_body import BodyError, read_raw

    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(10_000):
            sent += 1
            yield b"z" * 500

    with pytest.raises(BodyError) as exc:
        asyncio.run(read_raw(endless(), "r.csv", 1000, tmp_path))
    assert exc.value.status == 413 and sent == 3  # stopped at the first chunk past the limit
    assert list(tmp_path.iterdir()) == []


def test_verified_token_is_remembered(make_settings: Callable[..., Settings]) -> None:
    from channels.http_auth import TokenChecker

    settings = make_settings(campaigns=[campaign_dict(http={"token_hash": ACME_HASH})])
    tokens = TokenChecker(settings)
    assert tokens.owner(ACME) is None  # hashed tokens are known only once verified
    assert not tokens.check("acme", "wrong") and tokens.owner("wrong") is None
    assert tokens.check("acme", ACME) and tokens.owner(ACME) == "acme"
    assert not tokens.check("beta", ACME)


@pytest.mark.parametrize("name", ["returns.tsv", "returns.psv", "returns.xlsm", "Returns.CSV"])
def test_every_suffix_the_parsers_read_is_taken(
    api: tuple[Harness, httpx.Client], name: str
) -> None:
    _, client = api
    r = upload_raw(client, params={"name": name}, content_type="application/octet-stream")
    assert r.status_code == 202, r.text
    assert upload_raw(client, params={"name": "returns.pdf"}).status_code == 415
