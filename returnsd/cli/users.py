"""`returnsd users add/list/disable/enable/passwd/revoke`: the web console's users."""

from __future__ import annotations

import getpass
import sys
from datetime import timedelta
from typing import Any

import click

from ingest.users import User
from returnsd.cli.app import main
from returnsd.cli.common import (
    EXIT_USAGE,
    Context,
    choice,
    emit,
    fail,
    json_option,
    pass_ctx,
    table,
)


@main.group()
def users() -> None:
    """Web console users (operators: every campaign; advertisers: their campaigns)."""


def _password(from_stdin: bool) -> str:
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\n")
    else:
        secret = getpass.getpass("password: ")
        if getpass.getpass("again: ") != secret:
            fail("the passwords differ", EXIT_USAGE)
    if len(secret) < 8:
        fail("a password has at least 8 characters", EXIT_USAGE)
    return secret


@users.command("add")
@click.argument("login")
@click.option("--role", type=choice(("operator", "advertiser")), required=True)
@click.option("--campaign", "campaigns", multiple=True, help="an advertiser's campaign (repeat)")
@click.option("--name", default=None, help="the name shown in the console")
@click.option("--email", default=None, help="default recipient of their scheduled reports")
@click.option("--stdin", "from_stdin", is_flag=True, help="read the password from stdin")
@json_option
@pass_ctx
def add(
    ctx: Context, login: str, role: str, campaigns: tuple[str, ...], name: str | None,
    email: str | None, from_stdin: bool, json_out: bool,
) -> None:  # fmt: skip
    """Create a console user (asks for the password)."""
    from ingest.passwords import hash_password
    from ingest.users import add_user

    role = role.lower()
    for c in campaigns:
        ctx.campaign(c)
    if role == "advertiser" and not campaigns:
        fail("an advertiser needs at least one --campaign", EXIT_USAGE)
    secret = _password(from_stdin)
    try:
        user = add_user(ctx.store, login, hash_password(secret), role, campaigns, name=name,
                        email=email)  # fmt: skip
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    emit(_doc(user), json_out, f"user {user.login} added ({user.role})")


def _doc(u: User) -> dict[str, Any]:
    return {
        "login": u.login,
        "role": u.role,
        "campaigns": list(u.campaigns),
        "name": u.name,
        "email": u.email,
        "disabled": u.disabled,
    }


@users.command("list")
@json_option
@pass_ctx
def list_cmd(ctx: Context, json_out: bool) -> None:
    """List the console users."""
    from ingest.users import list_users

    docs = [_doc(u) for u in list_users(ctx.existing_store)]
    if json_out or not docs:
        emit(docs, json_out, "no users (add one with `returnsd users add`)")
        return
    rows = [{**d, "campaigns": ",".join(d["campaigns"]) or "(all)",
             "disabled": "yes" if d["disabled"] else ""} for d in docs]  # fmt: skip
    cols = [("LOGIN", "login"), ("ROLE", "role"), ("CAMPAIGNS", "campaigns"), ("NAME", "name"),
            ("DISABLED", "disabled")]  # fmt: skip
    click.echo(table(rows, cols))


@users.command("disable")
@click.argument("login")
@pass_ctx
def disable(ctx: Context, login: str) -> None:
    """Disable a user and end their sessions."""
    from ingest.users import set_disabled

    if not set_disabled(ctx.store, login, True):
        fail(f"no user {login!r}", EXIT_USAGE)
    click.echo(f"user {login} disabled; their sessions are ended")


@users.command("enable")
@click.argument("login")
@pass_ctx
def enable(ctx: Context, login: str) -> None:
    """Enable a disabled user again."""
    from ingest.users import set_disabled

    if not set_disabled(ctx.store, login, False):
        fail(f"no user {login!r}", EXIT_USAGE)
    click.echo(f"user {login} enabled")


@users.command("passwd")
@click.argument("login")
@click.option("--stdin", "from_stdin", is_flag=True, help="read the password from stdin")
@pass_ctx
def passwd(ctx: Context, login: str, from_stdin: bool) -> None:
    """Set a user's password (their sessions are ended)."""
    from ingest.users import set_password

    if not set_password(ctx.store, login, _password(from_stdin)):
        fail(f"no user {login!r}", EXIT_USAGE)
    click.echo(f"password of {login} changed; their sessions are ended")


@users.command("revoke")
@click.argument("login")
@pass_ctx
def revoke(ctx: Context, login: str) -> None:
    """End every session of a user (they sign in again)."""
    from ingest.sessions import Sessions
    from ingest.users import get_user

    user = get_user(ctx.store, login)
    if user is None:
        fail(f"no user {login!r}", EXIT_USAGE)
    Sessions(ctx.store, timedelta(0), timedelta(0)).revoke_all(user.id)
    click.echo(f"sessions of {login} ended")
