"""File submissions: every file from every channel, a file's line errors, downloads, uploads
(checked without applying, or spooled like any channel's file) and an operator's reprocess."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from console.web import CurrentUser, NotFound, Refused, check_csrf, client_address, ctx_of, render
from ingest import queries
from ingest.errors import ReturnsdError
from ingest.files import FileLifecycle
from ingest.operations import check_file
from ingest.users import User

router = APIRouter(dependencies=[Depends(check_csrf)])
CHANNELS = ("ftp", "smtp", "http", "dropdir", "pull", "cli", "console", "api")


def _filters(request: Request, user: User) -> tuple[queries.FileFilter, dict[str, str], list[str]]:
    p = request.query_params
    values = {k: (p.get(k) or "").strip() for k in ("status", "channel", "from", "to", "campaign")}
    errors: list[str] = []
    if values["campaign"] and not user.sees(values["campaign"]):
        raise NotFound()
    status = values["status"].upper()
    if status and status not in queries.FILE_STATUSES:
        errors.append(f"Status must be one of {', '.join(queries.FILE_STATUSES)}")
        status = values["status"] = ""
    days: dict[str, datetime | None] = {}
    for key, shift in (("from", 0), ("to", 1)):
        days[key] = None
        if values[key]:
            try:
                start = datetime.combine(date.fromisoformat(values[key]), time(), ctx_tz())
                days[key] = start + timedelta(days=shift)
            except ValueError:
                errors.append(f"{key.title()} date: {values[key]!r} is not a date (YYYY-MM-DD)")
                values[key] = ""
    flt = queries.FileFilter(
        campaign_id=values["campaign"] or None, statuses=(status,) if status else (),
        channel=values["channel"] or None, received_from=days["from"], received_to=days["to"],
    )  # fmt: skip
    return flt, values, errors


def ctx_tz() -> Any:
    """Files are listed by UTC day (they come from every campaign and time zone)."""
    from datetime import UTC

    return UTC


@router.get("/files")
def file_list(request: Request, user: CurrentUser) -> Response:
    """Every received file the user may see, newest first, filtered and keyset-paged."""
    ctx = ctx_of(request)
    flt, values, errors = _filters(request, user)
    cursor = request.query_params.get("cursor") or None
    with ctx.store.read() as conn:
        found = queries.list_files(conn, flt, user.scope, cursor=cursor, limit=50)
    query = "&".join(f"{k}={v}" for k, v in values.items() if v)
    return render(request, "files.html", rows=found.rows, next_cursor=found.next_cursor,
                  values=values, errors=errors, statuses=queries.FILE_STATUSES,
                  channels=CHANNELS, query=query, paged=bool(cursor),
                  title="File submissions")  # fmt: skip


def _visible_file(request: Request, user: User, file_id: str) -> queries.FileRow:
    with ctx_of(request).store.read() as conn:
        found = queries.get_file(conn, file_id, user.scope)
    if found is None:
        raise NotFound()
    return found


@router.get("/files/{file_id}")
def file_detail(request: Request, file_id: str, user: CurrentUser, kind: str = "") -> Response:
    """A file's summary and its line errors (all, Validation or Contract)."""
    f = _visible_file(request, user, file_id)
    kind = kind if kind in ("Validation", "Contract") else ""
    errors, total = queries.line_errors(f.result_path, kind or None)
    return render(request, "file.html", f=f, errors=errors, total=total, kind=kind,
                  title=f"File {f.name}")  # fmt: skip


@router.get("/files/{file_id}/original")
def download_original(request: Request, file_id: str, user: CurrentUser) -> Response:
    """The file as it was received."""
    f = _visible_file(request, user, file_id)
    path = _spooled(request, f)
    if path is None:
        raise NotFound()
    return FileResponse(path, filename=f.name, media_type="application/octet-stream")


def _spooled(request: Request, f: queries.FileRow) -> Path | None:
    with ctx_of(request).store.read() as conn:
        return queries.spool_path(conn, f.id)


@router.get("/files/{file_id}/result")
def download_result(request: Request, file_id: str, user: CurrentUser) -> Response:
    """The result CSV (the original columns, then Line, Status, ErrorCode…)."""
    from ingest.results import reply_name

    f = _visible_file(request, user, file_id)
    if f.result_path is None or not f.result_path.exists():
        raise NotFound()
    return FileResponse(f.result_path, filename=reply_name("result_", f.name, ".csv", f.id),
                        media_type="text/csv")  # fmt: skip


@router.get("/upload")
def upload_form(request: Request, user: CurrentUser) -> Response:
    """The upload form."""
    return render(request, "upload.html", title="Upload a file")


@router.post("/upload")
async def upload(request: Request, user: CurrentUser) -> Response:
    """Check a file without applying it, or spool it for processing like any channel's file."""
    ctx = ctx_of(request)
    form = await request.form()
    campaign = str(form.get("campaign") or "")
    if not user.sees(campaign) or ctx.settings.campaign(campaign) is None:
        raise NotFound()
    upload = form.get("file")
    if upload is None or isinstance(upload, str) or not upload.filename:
        return render(request, "upload.html", 400, error="Choose a file to upload.",
                      title="Upload a file")  # fmt: skip
    name = upload.filename
    if form.get("check_only") == "1":
        data = await upload.read()
        try:
            checked = check_file(ctx.store, ctx.settings, campaign, name, data)
        except ReturnsdError as exc:
            return render(request, "upload.html", 400, error=f"{name}: {exc}", campaign=campaign,
                          title="Upload a file")  # fmt: skip
        problems, total = queries.result_errors(checked.result_csv)
        return render(request, "upload.html", checked=checked.summary, problems=problems,
                      total=total, name=name, campaign=campaign, title="Check result")  # fmt: skip
    try:
        accepted = ctx.spool.accept(campaign, "console", name, upload.file, sender=user.login,
                                    peer=client_address(request))  # fmt: skip
    except ReturnsdError as exc:
        return render(request, "upload.html", 400, error=f"{name}: {exc}", campaign=campaign,
                      title="Upload a file")  # fmt: skip
    return RedirectResponse(f"/files/{accepted.file_id}", status_code=303)


@router.post("/files/{file_id}/reprocess")
def reprocess(request: Request, file_id: str, user: CurrentUser) -> Response:
    """Queue a FAILED or DUPLICATE file again (operators only)."""
    if not user.is_operator:
        raise Refused("only operators can process a file again")
    f = _visible_file(request, user, file_id)
    try:
        FileLifecycle(ctx_of(request).store).reprocess(f.id, user.login)
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    return RedirectResponse(f"/files/{f.id}", status_code=303)
