"""Commands about actions: import, list, show, export, and change one action by hand."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import click

from ingest.domain import STATES
from ingest.errors import FileRejected
from returnsd.cli.app import main
from returnsd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    choice,
    emit,
    fail,
    json_option,
    limit_options,
    listing,
    output_path,
    pass_ctx,
    row_limit,
)

ACTION_COLUMNS = (
    ("ACTION", "ActionId"),
    ("CAMPAIGN", "CampaignId"),
    ("TRACKER", "ActionTrackerId"),
    ("ORDER", "OrderId"),
    ("STATE", "State"),
    ("AMOUNT", "Amount"),
    ("PAYOUT", "Payout"),
    ("LOCKS", "LockDate"),
)


@main.group()
def actions() -> None:
    """The actions ledger."""


@actions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--items", "items", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--if-empty", is_flag=True, help="skip when the ledger already holds actions")
@pass_ctx
def actions_import(ctx: Context, file: Path, items: Path | None, if_empty: bool) -> None:
    """Load actions (and their items) from CSV or XLSX."""
    from ingest.actions import count_actions, import_actions

    if if_empty and count_actions(ctx.store):
        click.echo("ledger already holds actions; import skipped")
        return
    try:
        report = import_actions(ctx.store, ctx.settings, file, items)
    except FileRejected as exc:
        fail(str(exc))
    click.echo(f"imported {report.imported} actions, {report.items} items")
    for line, why in report.errors[:50]:
        click.echo(f"  line {line}: {why}" if line else f"  {why}", err=True)
    if len(report.errors) > 50:
        click.echo(f"  … {len(report.errors) - 50} more errors", err=True)
    if report.errors:
        sys.exit(EXIT_FAILED)


@actions.command("list")
@click.option("--campaign", "campaign_id")
@click.option("--state", type=choice(STATES))
@click.option("--order", "order_id")
@limit_options
@json_option
@pass_ctx
def actions_list(
    ctx: Context,
    campaign_id: str | None,
    state: str | None,
    order_id: str | None,
    limit: int,
    show_all: bool,
    json_out: bool,
) -> None:
    """List actions in id order."""
    from returnsd.cliops import count_listed, list_actions

    campaign_id, state = ctx.filter_campaign(campaign_id), state.upper() if state else None
    store = ctx.existing_store
    rows = list_actions(store, campaign_id, state, order_id, row_limit(limit, show_all))
    total = count_listed(store, campaign_id, state, order_id)
    listing(rows, total, ACTION_COLUMNS, json_out, "no actions")


def _action_text(doc: dict[str, Any]) -> str:
    skip = {"Items", "History"}
    lines = [f"{k}: {v}" for k, v in doc.items() if k not in skip and v not in (None, "")]
    if doc.get("Items"):
        lines.append("Items:")
        lines += [
            f"  {i['Sku']}  qty {i['Quantity']}  {i['Amount']}  {i['Category'] or ''}".rstrip()
            for i in doc["Items"]
        ]
    lines.append(f"History ({len(doc.get('History', []))} changes):")
    for h in doc.get("History", []):
        where = f"{h['channel']}" + (
            f" file {h['file_id']} line {h['line']}" if h["file_id"] else ""
        )
        lines.append(
            f"  {h['at'][:19]}  {h['operation']:<8} {h['reason'] or '':<14} "
            f"{h['old_state']}→{h['new_state']}  {h['old_amount']}→{h['new_amount']}  "
            f"by {h['actor']} via {where}"
        )
    return "\n".join(lines)


@actions.command("show")
@click.argument("action_id")
@json_option
@pass_ctx
def actions_show(ctx: Context, action_id: str, json_out: bool) -> None:
    """Show an action with its items and its history."""
    from returnsd.cliops import show_action

    doc = show_action(ctx.existing_store, action_id)
    if doc is None:
        fail(f"no action {action_id}")
    emit(doc, json_out, _action_text(doc))


CPC_HELP = "change a CPC action anyway (operators only; recorded as an override)"


def _single(ctx: Context, action_id: str, operation: str, json_out: bool, **kw: Any) -> None:
    from ingest.operations import Change, Operation, Role, apply_change
    from returnsd.cliops import campaign_of

    campaign_id = campaign_of(ctx.store, action_id)
    if campaign_id is None:
        fail(f"no action {action_id}")
    outcome = apply_change(
        ctx.store,
        ctx.settings,
        ctx.campaign(campaign_id).id,
        Change(action_id, Operation(operation), **kw),
        actor=f"cli:{getpass.getuser()}",
        channel="cli",
        role=Role.OPERATOR,
    )
    doc = outcome.as_dict()
    text = f"{action_id}: {doc['status']}"
    text += (
        f" {doc['error_code']}: {doc['message']}" if doc["error_code"] else f" ({doc['message']})"
    )
    emit(doc, json_out, text)
    sys.exit(EXIT_FAILED if doc["status"] == "ERROR" else EXIT_OK)


@actions.command("approve")
@click.argument("action_id")
@json_option
@pass_ctx
def actions_approve(ctx: Context, action_id: str, json_out: bool) -> None:
    """Approve one action early (reason APPROVED)."""
    _single(ctx, action_id, "approve", json_out)


@actions.command("reverse")
@click.argument("action_id")
@click.option("--reason", default="OTHER", show_default=True)
@click.option("--cpc-override", is_flag=True, help=CPC_HELP)
@json_option
@pass_ctx
def actions_reverse(
    ctx: Context, action_id: str, reason: str, cpc_override: bool, json_out: bool
) -> None:
    """Reverse one action with a reversal reason (or a custom reverse code)."""
    _single(ctx, action_id, "reverse", json_out, reason=reason, override_cpc=cpc_override)


@actions.command("modify")
@click.argument("action_id")
@click.option("--amount", help="the new total sale amount, e.g. 80.00")
@click.option("--customer-status")
@click.option("--reason", default="ORDER_UPDATE", show_default=True)
@click.option("--cpc-override", is_flag=True, help=CPC_HELP)
@json_option
@pass_ctx
def actions_modify(
    ctx: Context,
    action_id: str,
    amount: str | None,
    customer_status: str | None,
    reason: str,
    cpc_override: bool,
    json_out: bool,
) -> None:
    """Modify one action's amount and/or customer status."""
    if amount is None and customer_status is None:
        fail("give --amount and/or --customer-status", EXIT_USAGE)
    _single(
        ctx,
        action_id,
        "modify",
        json_out,
        amount=amount,
        reason=reason,
        customer_status=customer_status,
        override_cpc=cpc_override,
    )


@actions.command("restore")
@click.argument("action_id")
@json_option
@pass_ctx
def actions_restore(ctx: Context, action_id: str, json_out: bool) -> None:
    """Put a modified or reversed action back to its original values (RESET)."""
    _single(ctx, action_id, "reset", json_out)


@actions.command("export")
@click.option("--campaign", "campaign_id")
@click.option("--format", "fmt", type=choice(["csv", "xlsx"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
def actions_export(ctx: Context, campaign_id: str | None, fmt: str, output: Path) -> None:
    """Export actions as CSV or XLSX (one row per action)."""
    from returnsd.cliops import export_actions

    if campaign_id:
        ctx.campaign(campaign_id)
    n = export_actions(ctx.existing_store, campaign_id, fmt.lower(), output_path(output))
    click.echo(f"exported {n} actions to {output}")
