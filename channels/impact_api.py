"""impact.com's Brand API (v14) Actions resources under `/Advertisers/{AccountSID}/`.

HTTP Basic `AccountSID:AuthToken`; `401` for a missing or wrong pair (or a SID that is not the
path's), `403` for a campaign the token may not change, `429` past the account's hourly limit
(`X-RateLimit-Limit`, `-Remaining`, `-Reset` on every answer; `Reset` in seconds). PUT and
DELETE store the request (ingest.submissions) and answer `QUEUED` with its `QueuedUri` once it
is committed; the daemon's applier applies it with the same engine as a file row. Parameters
come form-encoded in the body, in the query string, or as a JSON object; `POST` with
`_method=PUT|DELETE` stands for those verbs, as impact allows. `IR-Version` / `IrVersion` are
accepted and ignored (one version is served).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from channels.base import ChannelContext
from channels.impact_action_routes import mount_action_reads, mount_action_writes
from channels.impact_reads import ImpactReads
from channels.impact_shapes import (
    WANTS_JSON,
    ApiSubmission,
    ApiSubmissionPage,
    BadRequest,
    QueuedReply,
    error,
    iso,
    page_params,
    paging,
    render,
)
from channels.impact_submission_routes import mount_api_submissions, mount_file_submissions
from ingest.api_accounts import Authenticator, Principal
from ingest.errors import Transient
from ingest.submissions import Submission, Submissions, SubmissionType

log = logging.getLogger(f"returnsd.{__name__}")
MAX_BODY = 64 * 1024
SCRYPT_AT_ONCE = 2
UNSUPPORTED = {"itemsubtotaldelta": "ItemSubTotalDelta (relative item amounts)"}
Handler = Callable[..., Awaitable[Response]]  # (request, principal, **path parameters)


class RateLimiter:
    """A fixed window per clock hour and account, in this process's memory."""

    def __init__(self, default: int) -> None:
        self.default = default
        self._windows: dict[str, tuple[int, int]] = {}  # sid -> (hour, requests)

    def hit(self, sid: str, limit: int | None) -> tuple[bool, dict[str, str]]:
        """Count one request; (allowed, the X-RateLimit headers)."""
        cap = limit or self.default
        now = time.time()
        hour = int(now // 3600)
        seen_hour, used = self._windows.get(sid, (hour, 0))
        used = used if seen_hour == hour else 0
        allowed = used < cap
        used += allowed
        self._windows[sid] = (hour, used)
        reset = str(int((hour + 1) * 3600 - now) or 1)
        headers = {
            "X-RateLimit-Limit": str(cap),
            "X-RateLimit-Remaining": str(max(cap - used, 0)),
            "X-RateLimit-Reset": reset,
        }
        if not allowed:
            headers["Retry-After"] = reset
        return allowed, headers


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """The (user, password) of an `Authorization: Basic` header, or None."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


async def request_fields(request: Request) -> list[tuple[str, str]]:
    """The request's parameters: the query string, then a form or JSON body (in that order)."""
    fields = list(request.query_params.multi_items())
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadRequest(413, f"the request body is over {MAX_BODY} bytes")
    if not body.strip():
        return fields
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if ctype == "application/json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise BadRequest(400, f"the JSON body does not parse: {exc}") from None
        if not isinstance(doc, dict):
            raise BadRequest(400, "the JSON body must be an object of parameters")
        return fields + [(str(k), "" if v is None else str(v)) for k, v in doc.items()]
    return fields + parse_qsl(text, keep_blank_values=True)


class ImpactApi:
    """The routes of the impact-compatible API and what they share (auth, limits, the queue)."""

    def __init__(self, ctx: ChannelContext) -> None:
        store = ctx.spool.store  # the channel reaches the database only through ingest modules
        self.settings = ctx.settings
        self.auth = Authenticator(store)
        self.submissions = Submissions(store)
        self.limiter = RateLimiter(ctx.settings.impact_api.rate_limit_per_hour)
        self._scrypt: asyncio.Semaphore | None = None

    async def caller(self, request: Request, sid: str) -> Principal | Response:
        """The authenticated caller, or the 401/429 answer."""
        creds = basic_credentials(request)
        principal = None
        if creds is not None and creds[0] == sid:
            principal = self.auth.cached(*creds)
        if principal is None and creds is not None and creds[0] == sid:
            if self._scrypt is None:
                self._scrypt = asyncio.Semaphore(SCRYPT_AT_ONCE)
            async with self._scrypt:
                principal = await run_in_threadpool(self.auth.check, *creds)
        if principal is None:
            headers = {"WWW-Authenticate": 'Basic realm="returnsd"'}
            return error(request, 401, "Invalid AccountSID or AuthToken", headers)
        allowed, headers = self.limiter.hit(sid, principal.rate_limit_per_hour)
        request.state.rate_headers = headers
        if not allowed:
            return error(request, 429, "Too many requests: the hourly limit is reached", headers)
        return principal

    async def guarded(
        self, request: Request, sid: str, handler: Handler, **params: Any
    ) -> Response:
        """Authenticate, count, run the handler, map its errors to impact's envelope."""
        found = await self.caller(request, sid)
        if isinstance(found, Response):
            return found
        try:
            response = await handler(request, found, **params)
        except BadRequest as exc:
            response = error(request, exc.status, exc.message)
        except Transient as exc:
            log.warning("impact API: %s", exc)
            response = error(request, 503, "temporarily unavailable; retry", {"Retry-After": "10"})
        response.headers.update(request.state.rate_headers)
        return response

    async def modify(self, request: Request, who: Principal) -> Response:
        """Modify an action (order level, or items with Sku/Quantity/Amount, Sku2…): queued."""
        return await self._queue(request, who, SubmissionType.MODIFICATION)

    async def reverse(self, request: Request, who: Principal) -> Response:
        """Reverse an action (ActionId, or ActionTrackerId + OrderId; DispositionCode): queued."""
        return await self._queue(request, who, SubmissionType.REVERSAL)

    async def overloaded(self, request: Request, who: Principal) -> Response:
        """POST with `_method=PUT` or `_method=DELETE` (impact's method override)."""
        fields = await request_fields(request)
        method = next((v.upper() for k, v in fields if k == "_method"), "")
        if method == "PUT":
            return await self.modify(request, who)
        if method == "DELETE":
            return await self.reverse(request, who)
        raise BadRequest(400, "POST …/Actions needs _method=PUT or _method=DELETE")

    async def _queue(self, request: Request, who: Principal, kind: SubmissionType) -> Response:
        fields = [(k, v) for k, v in await request_fields(request) if k != "_method"]
        for name, _ in fields:
            if name.lower() in UNSUPPORTED:
                raise BadRequest(400, f"{UNSUPPORTED[name.lower()]} is not supported by returnsd")
        campaign = next((v.strip() for k, v in fields if k.lower() == "campaignid"), None)
        if not who.campaigns or (campaign and campaign not in who.campaigns):
            return error(request, 403, "This AuthToken may not change that campaign's actions")
        payload = (await request.body()).decode("utf-8", "replace") or request.url.query
        batch_id = await run_in_threadpool(
            lambda: self.submissions.enqueue(
                sid=who.sid, token_id=who.token_id, campaigns=who.campaigns, kind=kind,
                fields=fields, payload=payload, campaign_id=campaign or None,
            )
        )  # fmt: skip
        uri = f"/Advertisers/{who.sid}/APISubmissions/{batch_id}"
        return render(request, QueuedReply(QueuedUri=uri))

    async def submission(self, request: Request, who: Principal, batch_id: str) -> Response:
        """One API submission: its status and, once Complete, ErrorType and ErrorReason."""
        found = await run_in_threadpool(self.submissions.get, who.sid, batch_id)
        if found is None:
            return error(request, 404, f"No API submission {batch_id}")
        return render(request, submission_doc(found))

    async def submissions_page(self, request: Request, who: Principal) -> Response:
        """The account's API submissions, newest first (Page, PageSize)."""
        page, size = page_params(request, default=100, smallest=1, largest=1000)
        subs, total = await run_in_threadpool(
            self.submissions.recent, who.sid, size, (page - 1) * size
        )
        keys = paging(request, page, size, total, len(subs))
        docs = [submission_doc(s) for s in subs]
        return render(request, ApiSubmissionPage(**keys, APISubmissions=docs))


def submission_doc(s: Submission) -> ApiSubmission:
    """A stored submission in impact's shape."""
    message = (s.outcome or {}).get("message") if s.error_reason else None
    return ApiSubmission(
        BatchId=s.batch_id,
        AccountId=s.sid,
        SubmissionDate=iso(s.submitted_at) or "",
        CampaignId=s.campaign_id,
        ActionTrackerId=s.action_tracker_id,
        ActionId=s.action_id,
        OrderId=s.order_id,
        Payload=s.payload,
        Type=s.type.value,
        Status=s.status.value,
        CompletionDate=iso(s.completed_at),
        ErrorType=s.error_type,
        ErrorReason=s.error_reason,
        ErrorMessage=message,
        Uri=f"/Advertisers/{s.sid}/APISubmissions/{s.batch_id}",
    )


async def _invalid(request: Request, exc: Exception) -> Response:
    """A malformed parameter: impact's 400 envelope under /Advertisers, FastAPI's 422 elsewhere."""
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith("/Advertisers/"):
        return await request_validation_exception_handler(request, exc)
    problems = [f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors()]
    return error(request, 400, "; ".join(problems) or "malformed request")


class JsonSuffix:
    """ASGI middleware: `/Advertisers/…/X.json` is `/Advertisers/…/X` answered in JSON."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Strip the suffix and mark the request before routing."""
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/Advertisers/") and path.endswith(".json"):
            scope = {**scope, "path": path[: -len(".json")], WANTS_JSON: True}
        await self.app(scope, receive, send)


def mount_impact(app: FastAPI, ctx: ChannelContext) -> ImpactApi | None:
    """Add the impact-compatible routes (and the `.json` suffix) to the HTTP channel's app."""
    if not ctx.settings.impact_api.enabled:
        return None
    api = ImpactApi(ctx)
    app.add_middleware(JsonSuffix)
    app.add_exception_handler(RequestValidationError, _invalid)
    reads = ImpactReads(ctx.settings, ctx.spool.store.read)
    mount_action_reads(app, api, reads)
    mount_file_submissions(app, api, reads)
    mount_action_writes(app, api)
    mount_api_submissions(app, api)
    return api
