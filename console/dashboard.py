"""The dashboard: channels up, the queue, today's files and errors, deliveries, locks."""

from __future__ import annotations

from datetime import UTC, datetime, time

from fastapi import APIRouter, Request, Response

from console.web import CurrentUser, ctx_of, render
from ingest import queries

router = APIRouter()


@router.get("/")
def dashboard(request: Request, user: CurrentUser) -> Response:
    """What an operator (or advertiser, for their campaigns) checks first."""
    ctx = ctx_of(request)
    today = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    with ctx.store.read() as conn:
        stats = queries.file_stats(conn, user.scope, today)
        soon = queries.locking_soon(conn, user.scope, days=7)
        last_lock = queries.last_job_run(conn, "lock")
        recent = queries.list_files(conn, queries.FileFilter(), user.scope, limit=8).rows
    lines = stats["lines"]
    rate = f"{100 * stats['error_lines'] / lines:.1f} %" if lines else "—"
    return render(request, "dashboard.html", stats=stats, soon=soon, last_lock=last_lock,
                  recent=recent, error_rate=rate, channels=sorted(ctx.running()),
                  title="Dashboard")  # fmt: skip
