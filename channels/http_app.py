"""The FastAPI application of the HTTP upload API: upload, status, result, receipt, health.

Answers, in the order they are checked for an upload:

- `401` no bearer token, or a token that is not this campaign's (another campaign's token included:
  a caller learns nothing about campaigns it holds no token for);
- `404` the campaign does not exist (or takes no HTTP uploads), told only to a caller whose token is
  known valid for some campaign; anyone else gets `401`;
- `503` too many uploads at once (`Retry-After`); `413` Content-Length or streamed body over
  `limits.max_file_bytes`; `415` Content-Type or file name extension not readable; `400` malformed
  multipart; `422` a name returnsd reserves (`receipt_…`, `result_…`); `507` spool disk full;
- `202` queued (or the same bytes are already queued/processing: that file's id), `200` DUPLICATE
  (the same bytes were processed before; `duplicate_of` names that file; nothing is applied again).

`GET /v1/files/{id}/result` answers `409` while the file is QUEUED or PROCESSING and `404` when it
finished without a result CSV (FAILED, DUPLICATE: the status says why).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Literal
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from channels.base import ChannelContext
from channels.http_auth import TokenChecker
from channels.http_body import (
    MULTIPART_OVERHEAD,
    BodyError,
    Upload,
    media_type,
    raw_name,
    read_multipart,
    read_raw,
    too_large,
)
from channels.http_docs import (
    CheckReply,
    FileList,
    FileStatus,
    Health,
    UploadReply,
    mount_docs,
    upload_body,
    upload_responses,
)
from channels.http_health import HealthRoutes
from channels.impact_api import mount_impact
from channels.intake import Intake, Refusal, RefusalKind, Sender
from ingest import queries as q
from ingest.errors import FileRejected, Transient
from ingest.operations import check_file
from ingest.results import FileOutcome
from ingest.spool import DUPLICATE, Accepted

CHANNEL = "http"
log = logging.getLogger(f"returnsd.{__name__}")
MAX_CONCURRENT_UPLOADS = 8
SCRYPT_AT_ONCE = 2
bearer = HTTPBearer(auto_error=False, description="The campaign's upload token")
Credentials = HTTPAuthorizationCredentials | None
Token = Annotated[Credentials, Depends(bearer)]
NameParam = Annotated[str | None, Query(description="File name for a raw body, e.g. returns.csv")]
DryRunParam = Annotated[
    bool, Query(description="Check the file without storing or applying it (SPEC §8)")
]
FileStatusName = Literal["QUEUED", "PROCESSING", "COMPLETE", "FAILED", "DUPLICATE"]


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


REFUSAL_STATUS = {
    RefusalKind.TOO_LARGE: 413,
    RefusalKind.REJECTED: 422,
    RefusalKind.SPOOL_FULL: 507,
    RefusalKind.TEMPORARY: 503,
}
MAX_PAGE = 200


def attachment(name: str) -> str:
    """Content-Disposition for `name`: plain when it is safe ASCII, else RFC 6266's UTF-8 form."""
    if all(c.isascii() and c.isprintable() and c not in '"\\;' for c in name):
        return f'attachment; filename="{name}"'
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


def _error(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": message, "code": code}, status_code=status, headers=headers)


def _unauthorized() -> JSONResponse:
    return _error(
        401,
        "UNAUTHORIZED",
        "missing or invalid bearer token for this campaign (check the token and the campaign id)",
        **{"WWW-Authenticate": "Bearer"},
    )


class HttpApi:
    """The routes and their shared state (tokens, upload counter, file store)."""

    def __init__(self, ctx: ChannelContext, public_url: str | None) -> None:
        self.ctx = ctx
        self.public_url = public_url.rstrip("/") if public_url else None
        self.tokens = TokenChecker(ctx.settings)
        self.intake = Intake(ctx.spool, CHANNEL)
        self.limit = ctx.settings.limits.max_file_bytes
        self.uploading = 0
        self._scrypt: asyncio.Semaphore | None = None

    async def _valid(self, campaign: str, token: str) -> bool:
        if self._scrypt is None:
            self._scrypt = asyncio.Semaphore(SCRYPT_AT_ONCE)
        async with self._scrypt:
            return await run_in_threadpool(self.tokens.check, campaign, token)

    def _refused(self, request: Request, campaign: str, outcome: str) -> None:
        self.intake.refused(Sender(campaign, None, _peer(request)), outcome)

    async def _deny(self, request: Request, campaign: str, cred: Credentials) -> Response | None:
        """None when the token is the campaign's; else the 401/404 answer (see module doc)."""
        token = cred.credentials if cred else None
        if token and self.tokens.has_account(campaign) and await self._valid(campaign, token):
            return None
        self._refused(request, campaign, "UNAUTHORIZED")
        if token and not self.tokens.has_account(campaign) and self.tokens.owner(token):
            return _error(404, "NOT_FOUND", f"no campaign {campaign!r} takes HTTP uploads")
        return _unauthorized()

    def _links(self, request: Request, file_id: str) -> dict[str, str]:
        base = self.public_url or str(request.base_url).rstrip("/")
        status_url = f"{base}/v1/files/{file_id}"
        return {"status_url": status_url, "result_url": f"{status_url}/result"}

    async def upload(
        self,
        request: Request,
        campaign: str,
        cred: Token,
        name: NameParam = None,
        dry_run: DryRunParam = False,
    ) -> Response:
        """Store one returns file for the campaign; answer only once it is durably spooled.

        With `dry_run=true` the file is checked instead: the answer is its summary and result
        CSV exactly as a real run would give them, and nothing is stored, applied or recorded.
        """
        denied = await self._deny(request, campaign, cred)
        if denied is not None:
            return denied
        if self.uploading >= MAX_CONCURRENT_UPLOADS:
            self._refused(request, campaign, "BUSY")
            return _error(503, "BUSY", "too many uploads at once; retry", **{"Retry-After": "5"})
        self.uploading += 1
        try:
            return await self._upload(request, campaign, name, dry_run)
        except BodyError as exc:
            self._refused(request, campaign, exc.code)
            return _error(exc.status, exc.code, exc.message)
        except ClientDisconnect:  # the upload was cut off: nothing stored, nobody to answer
            self._refused(request, campaign, "ABORTED")
            return Response(status_code=400)
        finally:
            self.uploading -= 1

    async def _upload(
        self, request: Request, campaign: str, name: str | None, dry_run: bool = False
    ) -> Response:
        started = time.monotonic()
        ctype = request.headers.get("content-type")
        media = media_type(ctype)
        multipart = media == "multipart/form-data"
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit + (MULTIPART_OVERHEAD * multipart):
            raise too_large(self.limit)
        tmp = self.ctx.spool.tmp
        if multipart:
            body = await read_multipart(request.stream(), ctype or "", self.limit, tmp)
        else:
            body = await read_raw(request.stream(), raw_name(media, name), self.limit, tmp)
        try:
            if dry_run:
                return await self._check(campaign, body)
            return await self._store(request, campaign, body, started)
        finally:
            body.close()

    async def _check(self, campaign: str, body: Upload) -> Response:
        """The dry run of an uploaded file (the CLI's `ingest --dry-run`: operations.check_file)."""
        body.file.seek(0)
        data = body.file.read()
        store = self.ctx.spool.store
        try:
            found = await run_in_threadpool(
                check_file, store, self.ctx.settings, campaign, body.name, data
            )
        except FileRejected as exc:
            return _error(422, exc.code, exc.message)
        except Transient as exc:
            log.warning("http dry run for %s not done: %s", campaign, exc)
            return _error(503, "TRY_AGAIN", "temporarily unable to check the file; retry")
        reply = CheckReply(
            campaign=campaign, name=body.name, summary=found.summary,
            result_csv=found.result_csv.decode("utf-8-sig", "replace"),
        )  # fmt: skip
        return JSONResponse(reply.model_dump())

    async def _store(
        self, request: Request, campaign: str, body: Upload, started: float
    ) -> Response:
        who = Sender(campaign, f"token:{campaign}", _peer(request))
        meta: dict[str, object] = {"user_agent": request.headers.get("user-agent", "")[:200]}
        try:
            acc: Accepted = await run_in_threadpool(
                self.intake.accept, who, body.name, body.file, meta=meta, started=started
            )
        except Refusal as exc:
            # A temporary failure's detail (e.g. the database's address) is for the log only.
            if exc.kind is RefusalKind.TEMPORARY:
                log.warning("http upload for %s not stored: %s", campaign, exc.cause)
                message = "temporarily unable to store the file; retry"
                return _error(503, "TRY_AGAIN", message, **{"Retry-After": "10"})
            return _error(REFUSAL_STATUS[exc.kind], exc.code, exc.message)
        reply = UploadReply(
            file_id=acc.file_id,
            status=acc.status,
            duplicate_of=acc.duplicate_of,
            **self._links(request, acc.file_id),
        )
        code = 200 if acc.status == DUPLICATE else 202
        return JSONResponse(reply.model_dump(exclude_none=True), status_code=code)

    async def _outcome(
        self, request: Request, file_id: str, cred: Credentials
    ) -> FileOutcome | Response:
        token = cred.credentials if cred else None
        if not token:
            return _unauthorized()
        outcome = await run_in_threadpool(self.ctx.results.outcome, file_id)
        if outcome is None:
            if self.tokens.owner(token):
                return _error(404, "NOT_FOUND", f"no file {file_id!r}")
            return _unauthorized()
        if not await self._valid(outcome.campaign, token):
            return _unauthorized()
        return outcome

    async def status(self, request: Request, file_id: str, cred: Token) -> Response:
        """The file's JSON summary: status, counts by status and error code, timings."""
        found = await self._outcome(request, file_id, cred)
        if isinstance(found, Response):
            return found
        return JSONResponse(self._status(request, found).model_dump(mode="json", exclude_none=True))

    async def result(self, request: Request, file_id: str, cred: Token) -> Response:
        """The result CSV (409 while not finished, 404 if the file finished without one)."""
        found = await self._outcome(request, file_id, cred)
        if isinstance(found, Response):
            return found
        if not found.finished:
            return _error(
                409,
                "NOT_FINISHED",
                f"file is {found.status}; try again later",
                **{"Retry-After": "10"},
            )
        data = await run_in_threadpool(found.result_csv)
        if data is None:
            return _error(404, "NO_RESULT", f"file is {found.status}: no result CSV; see status")
        headers = {"Content-Disposition": attachment(found.result_name)}
        return Response(data, media_type="text/csv", headers=headers)

    async def receipt(self, request: Request, file_id: str, cred: Token) -> Response:
        """The receipt as text (id, name, size, sha256, status)."""
        found = await self._outcome(request, file_id, cred)
        if isinstance(found, Response):
            return found
        return PlainTextResponse(found.receipt_text())

    async def files(
        self,
        request: Request,
        campaign: str,
        cred: Token,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Files per page")] = 50,
        status: Annotated[
            list[FileStatusName] | None, Query(description="Only files in these statuses")
        ] = None,
        cursor: Annotated[str | None, Query(max_length=200, description="From `next`")] = None,
    ) -> Response:
        """The campaign's files, newest first, one keyset page at a time (`next`: the next page)."""
        denied = await self._deny(request, campaign, cred)
        if denied is not None:
            return denied
        wanted = q.FileFilter(campaign_id=campaign, statuses=tuple(status or ()))

        def page() -> tuple[list[FileOutcome], str | None]:
            with self.ctx.spool.store.read() as conn:
                found = q.list_files(conn, wanted, [campaign], cursor=cursor, limit=limit)
            outcomes = [self.ctx.results.outcome(f.id) for f in found.rows]
            return [o for o in outcomes if o is not None], found.next_cursor

        shown, following = await run_in_threadpool(page)
        items = [self._status(request, f) for f in shown]
        nxt = None
        if following:
            params = [("limit", str(limit)), *(("status", s) for s in status or ()),
                      ("cursor", following)]  # fmt: skip
            nxt = f"{request.url.remove_query_params(['cursor', 'limit', 'status'])}?" + urlencode(
                params
            )
        doc = FileList(campaign=campaign, files=items, limit=limit, cursor=cursor, next=nxt)
        return JSONResponse(doc.model_dump(mode="json", exclude_none=True))

    def _status(self, request: Request, outcome: FileOutcome) -> FileStatus:
        return FileStatus.model_validate(
            {**outcome.summary(), **self._links(request, outcome.file_id)}
        )


def build_app(ctx: ChannelContext, public_url: str | None = None) -> FastAPI:
    """The API as a FastAPI app (OpenAPI at /openapi.json, docs at /docs, served offline)."""
    api = HttpApi(ctx, public_url)
    health = HealthRoutes(ctx)
    app = FastAPI(
        title="returnsd upload API",
        version="1",
        description="Upload returns files for a campaign and fetch their results.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.post(
        "/v1/campaigns/{campaign}/files",
        status_code=202,
        responses=upload_responses(),
        openapi_extra=upload_body(),
        summary="Upload a returns file",
    )(api.upload)
    app.get(
        "/v1/campaigns/{campaign}/files",
        summary="List the campaign's files",
        response_model=FileList,
        responses={401: {"description": "Missing or invalid token for this campaign"}},
    )(api.files)
    app.get("/v1/files/{file_id}", summary="File status", response_model=FileStatus)(api.status)
    app.get(
        "/v1/files/{file_id}/result",
        summary="Result CSV",
        response_class=Response,
        responses={
            200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                  "description": "The result CSV"},
            409: {"description": "Not finished yet"},
            404: {"description": "No such file, or it finished without a result"},
        },
    )(api.result)  # fmt: skip
    app.get("/v1/files/{file_id}/receipt", summary="Receipt", response_class=PlainTextResponse)(
        api.receipt
    )
    app.get(
        "/healthz",
        summary="Health",
        response_model=Health,
    )(health.health)
    mount_impact(app, ctx)  # impact.com's Actions API under /Advertisers/{AccountSID}/
    app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)(
        health.metrics
    )
    mount_docs(app)
    from channels.salesforce import mount_salesforce

    mount_salesforce(app, ctx)  # Outbound Message endpoints of the campaigns that map Salesforce
    return app
