"""Reports: the current view as CSV/XLSX/PDF, saved views, and scheduled reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from sqlalchemy import select
from starlette.background import BackgroundTask

from console import schedules
from console.exports import FORMATS, csv_chunks, temp_path, write_pdf, write_xlsx
from console.views import FIELDS, PAGES, View, parse_view
from console.web import CurrentUser, NotFound, check_csrf, ctx_of, render
from ingest import queries
from ingest import tables as t
from ingest.store import Store
from ingest.users import User

router = APIRouter(dependencies=[Depends(check_csrf)])


def _view(request: Request, user: User, page: str) -> View:
    if page not in PAGES:
        raise NotFound()
    return parse_view(ctx_of(request).settings, user, page, request.query_params)


@router.get("/export/{page}.{fmt}")
def export(request: Request, page: str, fmt: str, user: CurrentUser) -> Response:
    """The view (every matching row, not only the page shown) as CSV, XLSX or PDF."""
    if fmt not in FORMATS:
        raise NotFound()
    view = _view(request, user, page)
    store = ctx_of(request).store
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
    filename = f"{page}-{view.campaign.id}-{stamp}.{fmt}"
    title = f"{'Reversed' if page == 'reversed' else 'Pending'} actions — {view.campaign.name}"
    if fmt == "csv":
        return StreamingResponse(_csv(store, view), media_type=FORMATS[fmt],
                                 headers={"Content-Disposition":
                                          f'attachment; filename="{filename}"'})  # fmt: skip
    path = temp_path("." + fmt)
    with store.read() as conn:
        rows = queries.iter_actions(conn, view.filter, sort=view.sort, descending=view.descending)
        if fmt == "xlsx":
            write_xlsx(rows, path, page)
        else:
            write_pdf(rows, path, title, view.describe())
    return FileResponse(path, media_type=FORMATS[fmt], filename=filename,
                        background=BackgroundTask(path.unlink, missing_ok=True))  # fmt: skip


def _csv(store: Store, view: View) -> Any:
    with store.read() as conn:
        rows = queries.iter_actions(conn, view.filter, sort=view.sort, descending=view.descending)
        yield from csv_chunks(rows)


# --- saved views ---------------------------------------------------------------------------


def saved_views(store: Store, user: User, page: str) -> list[Any]:
    """The user's saved views of a page, by name."""
    v = t.saved_views.c
    with store.read() as conn:
        return list(conn.execute(select(t.saved_views).where(v.user_id == user.id, v.page == page)
                                 .order_by(v.name)).mappings())  # fmt: skip


def _clean_query(raw: str) -> str:
    return urlencode([(k, v) for k, v in parse_qsl(raw) if k in FIELDS and v])


@router.post("/views")
async def save_view(request: Request, user: CurrentUser) -> Response:
    """Pin the current view under a name (per user)."""
    form = await request.form()
    page = str(form.get("page") or "")
    if page not in PAGES:
        raise NotFound()
    name = str(form.get("name") or "").strip()[:128] or "My view"
    query = _clean_query(str(form.get("query") or ""))
    with ctx_of(request).store.begin() as conn:
        conn.execute(t.saved_views.insert(), {"user_id": user.id, "name": name, "page": page,
                     "query": query, "created_at": datetime.now(UTC)})  # fmt: skip
    return RedirectResponse(f"/{'reversed' if page == 'reversed' else 'actions'}?{query}",
                            status_code=303)  # fmt: skip


@router.post("/views/{view_id}/delete")
def delete_view(request: Request, view_id: int, user: CurrentUser) -> Response:
    """Forget one of the user's saved views."""
    v = t.saved_views.c
    with ctx_of(request).store.begin() as conn:
        row = conn.execute(select(t.saved_views).where(v.id == view_id, v.user_id == user.id))
        found = row.mappings().first()
        if found is None:
            raise NotFound()
        conn.execute(t.saved_views.delete().where(v.id == view_id))
    target = "reversed" if found["page"] == "reversed" else "actions"
    return RedirectResponse(f"/{target}?{found['query']}", status_code=303)


# --- scheduled reports ---------------------------------------------------------------------


@router.get("/reports")
def report_list(request: Request, user: CurrentUser) -> Response:
    """The user's scheduled reports with their run history, and a form for a new one."""
    page = request.query_params.get("page", "pending")
    page = page if page in PAGES else "pending"
    query = _clean_query(request.query_params.get("query", ""))
    return render(request, "reports.html", items=schedules.schedules_of(ctx_of(request), user.id),
                  page=page, query=query, weekdays=schedules.WEEKDAYS,
                  title="Scheduled reports")  # fmt: skip


def _form(form: Any) -> schedules.ScheduleForm:
    def text(key: str, default: str = "") -> str:
        return str(form.get(key) or default).strip()

    def number(key: str) -> int | None:
        return int(text(key)) if text(key).isdigit() else None

    return schedules.ScheduleForm(
        name=text("name")[:128], page=text("page", "pending"), query=_clean_query(text("query")),
        format=text("format", "csv").lower(), frequency=text("frequency", "daily"),
        at_time=text("at_time", "07:00"), timezone=text("timezone", "UTC"),
        weekday=number("weekday"), monthday=number("monthday"),
        recipients=[r.strip() for r in text("recipients").split(",") if r.strip()],
        skip_if_empty=form.get("skip_if_empty") == "1",
    )  # fmt: skip


@router.post("/reports")
async def add_report(request: Request, user: CurrentUser) -> Response:
    """Schedule the view: daily, weekly or monthly, at a time in a time zone."""
    ctx = ctx_of(request)
    wanted = _form(await request.form())
    if wanted.page not in PAGES:
        raise NotFound()
    parse_view(ctx.settings, user, wanted.page, dict(parse_qsl(wanted.query)))  # 404 if not theirs
    problems = wanted.problems()
    if problems:
        return render(request, "reports.html", 400, items=schedules.schedules_of(ctx, user.id),
                      page=wanted.page, query=wanted.query, weekdays=schedules.WEEKDAYS,
                      errors=problems, wanted=wanted, title="Scheduled reports")  # fmt: skip
    schedules.add_schedule(ctx, user.id, wanted)
    return RedirectResponse("/reports", status_code=303)


@router.post("/reports/{schedule_id}/delete")
def delete_report(request: Request, schedule_id: int, user: CurrentUser) -> Response:
    """Remove one of the user's scheduled reports."""
    if not schedules.delete_schedule(ctx_of(request), user.id, schedule_id):
        raise NotFound()
    return RedirectResponse("/reports", status_code=303)


@router.post("/reports/{schedule_id}/resume")
def resume_report(request: Request, schedule_id: int, user: CurrentUser) -> Response:
    """Resume a schedule that was paused after failing."""
    if not schedules.resume_schedule(ctx_of(request), user.id, schedule_id):
        raise NotFound()
    return RedirectResponse("/reports", status_code=303)
