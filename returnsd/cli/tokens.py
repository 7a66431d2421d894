"""`returnsd tokens add/list/revoke`: AccountSIDs and AuthTokens of the impact-compatible API."""

from __future__ import annotations

import click

from ingest.api_accounts import Accounts
from ingest.errors import ReturnsdError
from returnsd.cli.app import main
from returnsd.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Context,
    emit,
    fail,
    json_option,
    listing,
    pass_ctx,
)


def _accounts(ctx: Context) -> Accounts:
    accounts = Accounts(ctx.store)
    accounts.sync_config(ctx.settings)
    return accounts


@main.group()
def tokens() -> None:
    """AccountSIDs and AuthTokens of the impact-compatible API (/Advertisers/{AccountSID}/…)."""


@tokens.command("add")
@click.option("--sid", help="the account's AccountSID (a new account when it does not exist)")
@click.option("--campaign", "campaigns", multiple=True, help="campaign the token may change "
              "(repeat; a new account gets these; default: all of the account's)")  # fmt: skip
@click.option("--label", help="a note to recognise the token by")
@json_option
@pass_ctx
def add(
    ctx: Context, sid: str | None, campaigns: tuple[str, ...], label: str | None, json_out: bool
) -> None:
    """Make a token (and the account if it is new); the token is printed this once only."""
    from ingest.api_accounts import new_sid

    for cid in campaigns:
        ctx.campaign(cid)
    accounts = _accounts(ctx)
    sid = sid or new_sid()
    try:
        if accounts.account_campaigns(sid) is None:
            if not campaigns:
                fail("a new account needs --campaign (one or more)", EXIT_USAGE)
            accounts.ensure_account(sid, list(campaigns))
            token_id, token = accounts.add_token(sid, None, label)
        else:
            token_id, token = accounts.add_token(sid, list(campaigns) or None, label)
    except ReturnsdError as exc:
        fail(str(exc), EXIT_USAGE)
    doc = {"sid": sid, "token_id": token_id, "token": token, "campaigns": list(campaigns)}
    emit(doc, json_out, f"AccountSID {sid}\nAuthToken  {token}\ntoken id   {token_id}\n"
                        "The token is shown only now: store it safely.")  # fmt: skip


@tokens.command("list")
@click.option("--sid", help="only this account's tokens")
@json_option
@pass_ctx
def list_tokens(ctx: Context, sid: str | None, json_out: bool) -> None:
    """Every token: id, account, campaigns, label, made, revoked (never the token itself)."""
    accounts = _accounts(ctx)
    rows = [
        {"token_id": i.id, "sid": i.sid,
         "campaigns": ",".join(i.campaigns) if i.campaigns else "(all of the account's)",
         "label": i.label, "created_at": i.created_at.isoformat(timespec="seconds"),
         "revoked_at": i.revoked_at.isoformat(timespec="seconds") if i.revoked_at else None}
        for i in accounts.tokens(sid)
    ]  # fmt: skip
    columns = [
        ("TOKEN", "token_id"), ("ACCOUNT SID", "sid"), ("CAMPAIGNS", "campaigns"),
        ("LABEL", "label"), ("CREATED", "created_at"), ("REVOKED", "revoked_at"),
    ]  # fmt: skip
    listing(rows, len(rows), columns, json_out, "no tokens")


@tokens.command("revoke")
@click.argument("token_id")
@json_option
@pass_ctx
def revoke(ctx: Context, token_id: str, json_out: bool) -> None:
    """Revoke a token (it stops working within 30 seconds on every node)."""
    accounts = _accounts(ctx)
    if not accounts.revoke(token_id):
        fail(f"no live token {token_id!r} (see `returnsd tokens list`)", EXIT_FAILED)
    emit({"token_id": token_id, "revoked": True}, json_out, f"revoked {token_id}")
