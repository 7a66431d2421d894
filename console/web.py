"""What every page shares: templates, the signed-in user, the CSRF and origin checks, errors."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from console.context import ConsoleContext
from ingest.domain import money_text
from ingest.sessions import Session, Sessions
from ingest.users import User

HERE = Path(__file__).parent
COOKIE = "rd_session"
LOGIN_COOKIE = "rd_login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_FIELDS = 12_000  # a bulk change posts up to 10,000 action ids


class LoginRequired(Exception):
    """No live session: the browser is sent to the login page."""


class NotFound(Exception):
    """Nothing here for this user (absent, or another campaign's): a 404 page."""


class Refused(Exception):
    """A state-changing request that failed the origin or CSRF check: a 403 page."""


def templates() -> Environment:
    """The Jinja2 environment (autoescaped) with the console's filters."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
        trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip
    env.filters["money"] = lambda cents: money_text(cents) if cents is not None else ""
    env.filters["when"] = when
    env.filters["short"] = lambda d: d.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if d else ""
    env.filters["day"] = lambda d: d.strftime("%Y-%m-%d") if d else ""
    env.filters["until"] = until
    env.filters["num"] = lambda n: f"{n:,}"
    env.filters["detail"] = detail_lines
    env.filters["view_text"] = view_text
    return env


def view_text(query: str) -> str:
    """A saved view's query string in words: `acme · partner P013 · state PENDING`."""
    from urllib.parse import parse_qsl

    parts = [v if k == "campaign" else f"{k.replace('_', ' ')} {v}" for k, v in parse_qsl(query)]
    return " · ".join(parts) or "everything"


def detail_lines(detail: dict[str, Any]) -> list[str]:
    """An audit entry's details as sentences: item changes, customer status, an override."""
    lines = []
    for item in detail.get("items") or []:
        lines.append(
            f"item {item.get('sku')}: quantity {item.get('old_quantity')} → "
            f"{item.get('new_quantity')}, amount {money_text(item.get('old_amount'))} → "
            f"{money_text(item.get('new_amount'))}"
        )
    status = detail.get("customer_status")
    if isinstance(status, dict):
        lines.append(f"customer status {status.get('old') or '—'} → {status.get('new') or '—'}")
    if detail.get("override"):
        lines.append(f"operator override ({detail['override']})")
    known = {"items", "customer_status", "override"}
    lines += [f"{k.replace('_', ' ')}: {v}" for k, v in sorted(detail.items()) if k not in known]
    return lines


def when(moment: datetime | None) -> str:
    """A UTC time as `2026-12-01 22:15 UTC`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def until(moment: datetime, now: datetime | None = None) -> str:
    """Time left until `moment`: `3 days 4 h`, `5 h 10 min`, or `passed`."""
    left = moment - (now or datetime.now(UTC))
    secs = int(left.total_seconds())
    if secs <= 0:
        return "passed"
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days} day{'s' if days != 1 else ''} {hours} h"
    return f"{hours} h {rest // 60} min"


def ctx_of(request: Request) -> ConsoleContext:
    """The console context of this app."""
    ctx: ConsoleContext = request.app.state.ctx
    return ctx


def sessions_of(request: Request) -> Sessions:
    """The session store of this app."""
    s: Sessions = request.app.state.sessions
    return s


def session_of(request: Request) -> Session:
    """The live session of the request (raises LoginRequired)."""
    found = getattr(request.state, "session", None)
    if found is None:
        found = sessions_of(request).resolve(request.cookies.get(COOKIE))
        if found is None:
            raise LoginRequired()
        request.state.session = found
    return found


def current_user(request: Request) -> User:
    """The signed-in user (raises LoginRequired)."""
    return session_of(request).user


CurrentUser = Annotated[User, Depends(current_user)]


def client_address(request: Request) -> str:
    """The client's address, for throttling and the audit of sessions."""
    return request.client.host if request.client else "unknown"


def check_origin(request: Request) -> None:
    """Refuse a cross-site state-changing request (Sec-Fetch-Site, then Origin/Referer)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Refused(f"cross-site request ({site})")
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc.lower() != request.headers.get("host", "").lower():
            raise Refused("the request comes from another site")
    elif origin == "null":
        raise Refused("the request comes from an opaque origin")


async def check_csrf(request: Request) -> None:
    """On every state-changing request: same origin, and the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    check_origin(request)
    session = session_of(request)
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=10)  # cached for the route
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise Refused("the form's security token is missing or stale: reload the page")


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """Render a template with the user, their CSRF token and the navigation."""
    session = getattr(request.state, "session", None)
    if session is None and COOKIE in request.cookies:  # error pages keep the navigation
        session = sessions_of(request).resolve(request.cookies.get(COOKIE))
    ctx = ctx_of(request)
    doc = {
        "request": request, "user": session.user if session else None,
        "csrf": session.csrf if session else "", "campaigns": visible_campaigns(ctx, session),
        "path": request.url.path, **values,
    }  # fmt: skip
    html = request.app.state.templates.get_template(template).render(doc)
    return HTMLResponse(html, status_code=status)


def visible_campaigns(ctx: ConsoleContext, session: Session | None) -> list[Any]:
    """The configured campaigns this session's user may see."""
    if session is None:
        return []
    return [c for c in ctx.settings.campaigns if session.user.sees(c.id)]


def is_htmx(request: Request) -> bool:
    """True for a request htmx made (it swaps a partial in place)."""
    return request.headers.get("hx-request") == "true"
