"""Operator commands: run the daemon, check the config, migrate, lock, pull, hash secrets."""

from __future__ import annotations

import getpass
import sys
from datetime import UTC, datetime

import click

from ingest.errors import ReturnsdError
from returnsd.cli.app import main
from returnsd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Context,
    emit,
    fail,
    json_option,
    pass_ctx,
)
from returnsd.logs import configure


@main.command()
@pass_ctx
def run(ctx: Context) -> None:
    """Run the daemon: every enabled channel, the spool workers and the scheduler."""
    from returnsd.daemon import Daemon

    configure(ctx.settings.log_level, ctx.settings.third_party_log_level)
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
    from ingest.store import Store

    store = Store.open(ctx.settings)
    try:
        before, after = store.upgrade()
        store.sync_campaigns(ctx.settings)
    except ReturnsdError as exc:
        fail(str(exc))
    if before is None:
        click.echo(f"created the returnsd schema (revision {after})")
    elif before != after:
        click.echo(f"migrated the schema from revision {before} to {after}")
    else:
        click.echo(f"schema already at the newest revision ({after})")
    click.echo(f"campaigns synced from {ctx.config_path}: {len(ctx.settings.campaigns)}")


def _moment(at: str | None) -> datetime:
    if not at:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--at {at!r} is not an ISO 8601 time, e.g. 2026-12-01T00:00:00+00:00", EXIT_USAGE)
    if moment.tzinfo is None:
        fail("--at needs a time zone, e.g. 2026-12-01T00:00:00+00:00", EXIT_USAGE)
    return moment


@main.command()
@click.option("--at", "at", help="lock as of this ISO 8601 time with a zone (default: now)")
@click.option("--dry-run", is_flag=True, help="only count what would lock")
@click.option("--yes", is_flag=True, help="confirm a lock as of a time in the future")
@json_option
@pass_ctx
def lock(ctx: Context, at: str | None, dry_run: bool, yes: bool, json_out: bool) -> None:
    """Lock every PENDING or APPROVED action whose lock date has passed."""
    from ingest.actions import count_due, lock_due

    moment = _moment(at)
    due = count_due(ctx.store, moment)
    future = moment > datetime.now(UTC)
    if dry_run or (future and not yes):
        doc = {"at": moment.isoformat(), "would_lock": due, "applied": False}
        text = f"would lock {due} actions as of {moment.isoformat()}"
        if not dry_run:
            text += " — that time is in the future: check with --dry-run, confirm with --yes"
        emit(doc, json_out, text)
        sys.exit(EXIT_OK if dry_run else EXIT_USAGE)
    n = lock_due(ctx.store, moment)
    emit({"at": moment.isoformat(), "locked": n, "applied": True}, json_out, f"locked {n} actions")


@main.command()
@click.argument("campaign_id")
@json_option
@pass_ctx
def pull(ctx: Context, campaign_id: str, json_out: bool) -> None:
    """Run a campaign's scheduled pull now and print what it fetched."""
    from returnsd.daemon import run_pull

    campaign = ctx.campaign(campaign_id)
    if campaign.pull is None:
        fail(f"campaign {campaign_id} has no pull configured", EXIT_USAGE)
    report = run_pull(ctx.settings, ctx.store, campaign_id)
    emit(report.as_dict(), json_out, str(report))
    sys.exit(EXIT_OK if not report.errors else EXIT_FAILED)
