"""Sign in and out: a throttled login form, server-side sessions, revoke every session."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from console.web import (
    COOKIE,
    LOGIN_COOKIE,
    Refused,
    check_csrf,
    check_origin,
    client_address,
    ctx_of,
    render,
    session_of,
    sessions_of,
)
from ingest.users import LoginResult, check_login

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never `//host` or a full URL) after signing in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form (with a login CSRF token in a cookie and the form)."""
    return _login_form(request, next)


def _login_form(
    request: Request, next_path: str | None, error: str | None = None, status: int = 200,
    login: str = "",
) -> Response:  # fmt: skip
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", status, login_csrf=token, error=error,
                      next=_safe_next(next_path), login=login)  # fmt: skip
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                        secure=ctx_of(request).tls, path="/login")  # fmt: skip
    return response


@router.post("/login")
def login(
    request: Request,
    login: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the login (throttled per login and per address); open a session."""
    check_origin(request)
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf):
        raise Refused("the sign-in form expired: reload the page and try again")
    ctx = ctx_of(request)
    address = client_address(request)
    result, user = check_login(ctx.store, request.app.state.throttle, login.strip(), password,
                               address)  # fmt: skip
    if result == LoginResult.THROTTLED:
        minutes = max(1, ctx.options.login_window_seconds // 60)
        msg = f"Too many failed sign-ins. Wait {minutes} minutes, then try again."
        return _login_form(request, next, msg, 429, login)
    if result != LoginResult.OK or user is None:
        return _login_form(request, next, "Wrong login or password.", 401, login)
    token = sessions_of(request).create(user, address)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=ctx.tls, path="/",
                        max_age=ctx.options.session_absolute_hours * 3600)  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End this session."""
    await check_csrf(request)
    sessions_of(request).end(request.cookies.get(COOKIE))
    return _signed_out()


@router.post("/logout/everywhere")
async def logout_everywhere(request: Request) -> Response:
    """End every session of the signed-in user (on every browser)."""
    await check_csrf(request)
    sessions_of(request).revoke_all(session_of(request).user.id)
    return _signed_out()


def _signed_out() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
