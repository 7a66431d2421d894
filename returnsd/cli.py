"""The `returnsd` command line: run the daemon, ingest a file, inspect files and actions."""

from __future__ import annotations

import getpass
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from ingest import config as config_mod
from ingest.config import Campaign, Settings
from ingest.errors import ConfigError, FileRejected, ReturnsdError, UnknownCampaign

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Context:
    """Lazily loaded settings and store for one CLI invocation."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._store: Any = None

    @property
    def settings(self) -> Settings:
        """The validated configuration (exit 2 on a config error)."""
        if self._settings is None:
            try:
                self._settings = config_mod.load(self.config_path)
            except ConfigError as exc:
                fail(str(exc), EXIT_USAGE)
        return self._settings

    @property
    def store(self) -> Any:
        """The migrated, synced store."""
        if self._store is None:
            from ingest.store import prepare

            self._store = prepare(self.settings)
        return self._store

    def campaign(self, campaign_id: str) -> Campaign:
        """A configured campaign (exit 2 if unknown)."""
        found = self.settings.campaign(campaign_id)
        if found is None:
            known = ", ".join(c.id for c in self.settings.campaigns)
            fail(f"unknown campaign {campaign_id!r} (configured: {known})", EXIT_USAGE)
        return found


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print an error to stderr and exit with `code`."""
    click.echo(f"returnsd: {message}", err=True)
    sys.exit(code)


def emit(doc: Any, as_json: bool, text: str | None = None) -> None:
    """Print JSON or text."""
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        click.echo(text if text is not None else json.dumps(doc, indent=2, default=str))


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=Path("config.yaml"),
    show_default=True,
    envvar="RETURNSD_CONFIG",
)
@click.option("--log-level", default="WARNING", show_default=True)
@click.pass_context
def main(ctx: click.Context, config_path: Path, log_level: str) -> None:
    """returnsd: receive advertisers' returns files, apply them, report line by line."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ctx.obj = Context(config_path)


@main.command()
@pass_ctx
def run(ctx: Context) -> None:
    """Run the daemon: every enabled channel, the spool workers and the scheduler."""
    from returnsd.daemon import Daemon

    logging.getLogger().setLevel(ctx.settings.log_level.upper())
    daemon = Daemon(ctx.settings, ctx.store)
    try:
        daemon.run()
    except ReturnsdError as exc:
        fail(str(exc))


@main.command("check-config")
@pass_ctx
def check_config(ctx: Context) -> None:
    """Validate the configuration and report every problem at once."""
    s = ctx.settings
    click.echo(f"{ctx.config_path}: OK ({len(s.campaigns)} campaign(s))")


@main.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="read the password from stdin")
def hash_password_cmd(from_stdin: bool) -> None:
    """Print a scrypt hash for an FTP password, SMTP login or API token (config-safe)."""
    from ingest.passwords import hash_password

    secret = sys.stdin.readline().rstrip("\n") if from_stdin else getpass.getpass("password: ")
    if not secret:
        fail("empty password", EXIT_USAGE)
    click.echo(hash_password(secret))


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(ctx: Context) -> None:
    """Create or migrate the schema to the newest version and sync campaigns."""
    ctx.store  # noqa: B018 - prepare() migrates and syncs
    click.echo("database is up to date")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--campaign", "campaign_id", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--sender", default=None, help="who sent it (default: the local user)")
@click.option("--dry-run", is_flag=True, help="check the file: the same result, nothing applied")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="dry run: save the result")
@pass_ctx
def ingest(
    ctx: Context,
    file: Path,
    campaign_id: str,
    as_json: bool,
    sender: str | None,
    dry_run: bool,
    output: Path | None,
) -> None:
    """Run one file through the spool and the engine now; print the outcome."""
    from returnsd.cliops import dry_run_file, ingest_file

    ctx.campaign(campaign_id)
    if dry_run:
        try:
            checked = dry_run_file(ctx.settings, ctx.store, file, campaign_id)
        except FileRejected as exc:
            fail(str(exc))
        if output:
            output.write_bytes(checked.result_csv)
        c = checked.summary["counts"]
        text = (
            f"dry run (nothing applied): {c['applied']} would apply, {c['unchanged']} "
            f"unchanged, {c['errors']} errors"
        )
        emit(checked.summary, as_json, text)
        return
    try:
        outcome = ingest_file(
            ctx.settings,
            ctx.store,
            file,
            campaign_id,
            sender or getpass.getuser(),
            progress=not as_json,
        )
    except (FileRejected, UnknownCampaign) as exc:
        fail(str(exc))
    doc = outcome.summary()
    counts = doc.get("counts", {})
    text = (
        f"{doc['file_id']} {doc['status']}: {counts.get('applied', 0)} applied, "
        f"{counts.get('unchanged', 0)} unchanged, {counts.get('errors', 0)} errors"
    )
    if outcome.error_code:
        text += f"\n{outcome.error_code}: {outcome.error_message}"
    emit(doc, as_json, text)
    sys.exit(EXIT_OK if outcome.status == "COMPLETE" else EXIT_FAILED)


@main.group()
def files() -> None:
    """Received files and their results."""


@files.command("list")
@click.option("--campaign", "campaign_id")
@click.option("--status")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def files_list(
    ctx: Context, campaign_id: str | None, status: str | None, limit: int, as_json: bool
) -> None:
    """List the newest files."""
    from ingest.results import ResultStore

    rows = ResultStore(ctx.store).recent(campaign_id, status, limit)
    docs = [o.summary() for o in rows]
    text = "\n".join(
        f"{o.file_id}  {o.status:<10} {o.campaign:<12} {o.channel:<8} {o.name}" for o in rows
    )
    emit(docs, as_json, text or "no files")


@files.command("show")
@click.argument("file_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def files_show(ctx: Context, file_id: str, as_json: bool) -> None:
    """Show one file's record and summary."""
    from ingest.results import ResultStore

    outcome = ResultStore(ctx.store).outcome(file_id)
    if outcome is None:
        fail(f"no file {file_id}")
    emit(outcome.summary(), True)


@files.command("reprocess")
@click.argument("file_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def files_reprocess(ctx: Context, file_id: str, as_json: bool) -> None:
    """Process a FAILED or DUPLICATE file again now (recorded in the file's record)."""
    from returnsd.cliops import reprocess_file

    try:
        outcome = reprocess_file(ctx.settings, ctx.store, file_id, f"cli:{getpass.getuser()}")
    except ValueError as exc:
        fail(str(exc))
    if outcome is None:
        fail(f"no file {file_id}")
    doc = outcome.summary()
    counts = doc.get("counts", {})
    text = f"{file_id} {doc['status']}: {counts.get('applied', 0)} applied, " + (
        f"{counts.get('unchanged', 0)} unchanged, {counts.get('errors', 0)} errors"
    )
    emit(doc, as_json, text)
    sys.exit(EXIT_OK if outcome.status == "COMPLETE" else EXIT_FAILED)


@files.command("result")
@click.argument("file_id")
@click.option("-o", "--output", type=click.Path(path_type=Path))
@pass_ctx
def files_result(ctx: Context, file_id: str, output: Path | None) -> None:
    """Print (or save) a file's result CSV."""
    from ingest.results import ResultStore

    outcome = ResultStore(ctx.store).outcome(file_id)
    if outcome is None:
        fail(f"no file {file_id}")
    data = outcome.result_csv()
    if data is None:
        fail(f"file {file_id} has no result CSV (status {outcome.status})")
    if output:
        output.write_bytes(data)
    else:
        sys.stdout.buffer.write(data)


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
    if report.errors:
        sys.exit(EXIT_FAILED)


@actions.command("list")
@click.option("--campaign", "campaign_id")
@click.option("--state")
@click.option("--order", "order_id")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def actions_list(
    ctx: Context,
    campaign_id: str | None,
    state: str | None,
    order_id: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List actions."""
    from returnsd.cliops import list_actions

    rows = list_actions(ctx.store, campaign_id, state, order_id, limit)
    text = "\n".join(
        f"{r['ActionId']:<24} {r['State']:<9} {r['Amount']:>12} {r['Payout']:>10}  {r['OrderId']}"
        for r in rows
    )
    emit(rows, as_json, text or "no actions")


@actions.command("show")
@click.argument("action_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def actions_show(ctx: Context, action_id: str, as_json: bool) -> None:
    """Show an action with its items and its history."""
    from returnsd.cliops import show_action

    doc = show_action(ctx.store, action_id)
    if doc is None:
        fail(f"no action {action_id}")
    emit(doc, True)


def _single(ctx: Context, action_id: str, operation: str, as_json: bool, **kw: Any) -> None:
    from ingest.operations import Change, Operation, Role, apply_change
    from returnsd.cliops import campaign_of

    campaign_id = campaign_of(ctx.store, action_id)
    if campaign_id is None:
        fail(f"no action {action_id}")
    change = Change(action_id, Operation(operation), **kw)
    outcome = apply_change(
        ctx.store,
        ctx.settings,
        ctx.campaign(campaign_id).id,
        change,
        actor=f"cli:{getpass.getuser()}",
        channel="cli",
        role=Role.OPERATOR,
    )
    doc = outcome.as_dict()
    text = f"{action_id}: {doc['status']}"
    text += (
        f" {doc['error_code']}: {doc['message']}" if doc["error_code"] else f" ({doc['message']})"
    )
    emit(doc, as_json, text)
    sys.exit(EXIT_FAILED if doc["status"] == "ERROR" else EXIT_OK)


CPC_HELP = "change a CPC action anyway (operators only; recorded as an override)"


@actions.command("approve")
@click.argument("action_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def actions_approve(ctx: Context, action_id: str, as_json: bool) -> None:
    """Approve one action early (reason APPROVED)."""
    _single(ctx, action_id, "approve", as_json)


@actions.command("reverse")
@click.argument("action_id")
@click.option("--reason", default="OTHER", show_default=True)
@click.option("--cpc-override", is_flag=True, help=CPC_HELP)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def actions_reverse(
    ctx: Context, action_id: str, reason: str, cpc_override: bool, as_json: bool
) -> None:
    """Reverse one action."""
    _single(ctx, action_id, "reverse", as_json, reason=reason, override_cpc=cpc_override)


@actions.command("modify")
@click.argument("action_id")
@click.option("--amount", help="the new total sale amount, e.g. 80.00")
@click.option("--customer-status")
@click.option("--reason", default="ORDER_UPDATE", show_default=True)
@click.option("--cpc-override", is_flag=True, help=CPC_HELP)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def actions_modify(
    ctx: Context,
    action_id: str,
    amount: str | None,
    customer_status: str | None,
    reason: str,
    cpc_override: bool,
    as_json: bool,
) -> None:
    """Modify one action's amount and/or customer status."""
    if amount is None and customer_status is None:
        fail("give --amount and/or --customer-status", EXIT_USAGE)
    _single(
        ctx,
        action_id,
        "modify",
        as_json,
        amount=amount,
        reason=reason,
        customer_status=customer_status,
        override_cpc=cpc_override,
    )


@actions.command("restore")
@click.argument("action_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def actions_restore(ctx: Context, action_id: str, as_json: bool) -> None:
    """Put a modified or reversed action back to its original values (RESET)."""
    _single(ctx, action_id, "reset", as_json)


@actions.command("export")
@click.option("--campaign", "campaign_id")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True
)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
@pass_ctx
def actions_export(ctx: Context, campaign_id: str | None, fmt: str, output: Path) -> None:
    """Export actions as CSV or XLSX (one row per action)."""
    from returnsd.cliops import export_actions

    if campaign_id:
        ctx.campaign(campaign_id)
    n = export_actions(ctx.store, campaign_id, fmt, output)
    click.echo(f"exported {n} actions to {output}")


@main.command()
@click.option("--at", "at", help="lock as of this ISO 8601 time (default: now)")
@pass_ctx
def lock(ctx: Context, at: str | None) -> None:
    """Lock every action whose lock date has passed."""
    from ingest.actions import lock_due

    moment = datetime.now(UTC)
    if at:
        try:
            moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--at {at!r} is not an ISO 8601 time", EXIT_USAGE)
        if moment.tzinfo is None:
            fail("--at needs a time zone, e.g. 2026-12-01T00:00:00+00:00", EXIT_USAGE)
    n = lock_due(ctx.store, moment)
    click.echo(f"locked {n} actions")


@main.command()
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def pull(ctx: Context, campaign_id: str, as_json: bool) -> None:
    """Run a campaign's scheduled pull now and print what it fetched."""
    from returnsd.daemon import run_pull

    campaign = ctx.campaign(campaign_id)
    if campaign.pull is None:
        fail(f"campaign {campaign_id} has no pull configured", EXIT_USAGE)
    report = run_pull(ctx.settings, ctx.store, campaign_id)
    emit(report.as_dict(), as_json, str(report))
    sys.exit(EXIT_OK if not report.errors else EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
