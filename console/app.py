"""The console's ASGI app: routes, static files, security headers, error pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from console import actions, auth, dashboard, files, reports
from console.context import ConsoleContext
from console.web import HERE, LoginRequired, NotFound, Refused, is_htmx, render, templates
from ingest.sessions import Sessions
from ingest.users import LoginThrottle

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def build_app(ctx: ConsoleContext) -> FastAPI:
    """The console app over `ctx` (no module state: everything hangs off `app.state`)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    opts = ctx.options
    app.state.ctx = ctx
    app.state.templates = templates()
    app.state.sessions = Sessions(
        ctx.store, timedelta(minutes=opts.session_idle_minutes),
        timedelta(hours=opts.session_absolute_hours),
    )  # fmt: skip
    app.state.throttle = LoginThrottle(
        timedelta(seconds=opts.login_window_seconds), opts.login_failures_per_user,
        opts.login_failures_per_address,
    )  # fmt: skip
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (auth, dashboard, actions, files, reports):
        app.include_router(module.router)
    app.middleware("http")(_security_headers(ctx.tls))
    app.add_exception_handler(LoginRequired, _to_login)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(RequestValidationError, _not_found)  # e.g. /reports/abc/delete
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return app


Next = Callable[[Request], Awaitable[Response]]


def _security_headers(tls: bool) -> Callable[[Request, Next], Awaitable[Response]]:
    async def add(request: Request, call_next: Next) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if tls:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return add


async def _to_login(request: Request, _exc: Exception) -> Response:
    target = "/login?next=" + request.url.path if request.method == "GET" else "/login"
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _not_found(request: Request, _exc: Exception) -> Response:
    return render(request, "error.html", 404, title="Not found",
                  message="There is nothing here, or it is not yours to see.")  # fmt: skip


async def _http_error(request: Request, exc: Exception) -> Response:
    """Any other HTTP error as a page, never as JSON."""
    code = getattr(exc, "status_code", 500)
    if code == 404:
        return await _not_found(request, exc)
    message = str(getattr(exc, "detail", "")) or "The request could not be served."
    return render(request, "error.html", code, title=f"Error {code}", message=message)


async def _refused(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", 403, title="Refused", message=str(exc))
