"""Commands about received files: ingest one now, list, show, and fetch results."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

import click

from ingest.errors import FileRejected, UnknownCampaign
from ingest.files import FileStatus
from returnsd.cli.app import main
from returnsd.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
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

FILE_STATUSES = tuple(s.value for s in FileStatus)
FILE_COLUMNS = (
    ("FILE", "file_id"),
    ("RECEIVED", "received"),
    ("STATUS", "status"),
    ("CAMPAIGN", "campaign"),
    ("CHANNEL", "channel"),
    ("SENDER", "sender"),
    ("NAME", "name"),
    ("LINES", "lines"),
    ("APPLIED", "applied"),
    ("ERRORS", "errors"),
)


def file_row(doc: dict[str, Any]) -> dict[str, Any]:
    """A file summary flattened to the columns of `files list`."""
    counts = doc.get("counts") or {}
    received = (doc.get("received_at") or "")[:19].replace("T", " ")
    return {
        **{k: doc.get(k) for k in ("file_id", "status", "campaign", "channel", "sender", "name")},
        "received": received,
        "lines": counts.get("lines", counts.get("rows")),
        "applied": counts.get("applied"),
        "errors": counts.get("errors"),
    }


def outcome_text(doc: dict[str, Any], error_code: str | None, message: str | None) -> str:
    """One file's outcome in a line (and the file-level error under it)."""
    counts = doc.get("counts", {})
    text = (
        f"{doc['file_id']} {doc['status']}: {counts.get('applied', 0)} applied, "
        f"{counts.get('unchanged', 0)} unchanged, {counts.get('errors', 0)} errors"
    )
    return text + (f"\n{error_code}: {message}" if error_code else "")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--campaign", "campaign_id", required=True)
@click.option("--sender", default=None, help="who sent it (default: the local user)")
@click.option("--dry-run", is_flag=True, help="check the file: the same result, nothing applied")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="save the result CSV"
)
@json_option
@pass_ctx
def ingest(
    ctx: Context,
    file: Path,
    campaign_id: str,
    json_out: bool,
    sender: str | None,
    dry_run: bool,
    output: Path | None,
) -> None:
    """Run one file through the spool and the engine now (or only check it); print the outcome."""
    from returnsd.cliops import ingest_file

    ctx.campaign(campaign_id)
    if output:
        output_path(output)
    if dry_run:
        _dry_run(ctx, file, campaign_id, json_out, output)
        return
    try:
        outcome = ingest_file(
            ctx.settings,
            ctx.store,
            file,
            campaign_id,
            sender or getpass.getuser(),
            progress=not json_out,
        )
    except (FileRejected, UnknownCampaign) as exc:
        fail(str(exc))
    doc = outcome.summary()
    if output and outcome.result_csv() is not None:
        output.write_bytes(outcome.result_csv() or b"")
    emit(doc, json_out, outcome_text(doc, outcome.error_code, outcome.error_message))
    sys.exit(EXIT_OK if outcome.status == FileStatus.COMPLETE else EXIT_FAILED)


def _dry_run(
    ctx: Context, file: Path, campaign_id: str, json_out: bool, output: Path | None
) -> None:
    from returnsd.cliops import dry_run_file

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
    emit(checked.summary, json_out, text)


@main.group()
def files() -> None:
    """Received files and their results."""


@files.command("list")
@click.option("--campaign", "campaign_id")
@click.option("--status", type=choice(FILE_STATUSES))
@limit_options
@json_option
@pass_ctx
def files_list(
    ctx: Context,
    campaign_id: str | None,
    status: str | None,
    limit: int,
    show_all: bool,
    json_out: bool,
) -> None:
    """List the newest files first."""
    from ingest.results import ResultStore

    campaign_id, status = ctx.filter_campaign(campaign_id), status.upper() if status else None
    results = ResultStore(ctx.existing_store)
    rows = results.recent(campaign_id, status, row_limit(limit, show_all))
    docs = [o.summary() for o in rows]
    total = results.count(campaign_id, status)
    shown = docs if json_out else [file_row(d) for d in docs]
    listing(shown, total, FILE_COLUMNS, json_out, "no files")


def _outcome(ctx: Context, file_id: str) -> Any:
    from ingest.results import ResultStore

    outcome = ResultStore(ctx.existing_store).outcome(file_id)
    if outcome is None:
        fail(f"no file {file_id}")
    return outcome


@files.command("show")
@click.argument("file_id")
@json_option
@pass_ctx
def files_show(ctx: Context, file_id: str, json_out: bool) -> None:
    """Show one file's record and summary."""
    outcome = _outcome(ctx, file_id)
    doc = outcome.summary()
    lines = [f"{k}: {v}" for k, v in file_row(doc).items() if v is not None]
    if outcome.error_code:
        lines.append(f"error: {outcome.error_code}: {outcome.error_message}")
    for code, n in sorted((doc.get("error_codes") or {}).items()):
        lines.append(f"  {code}: {n}")
    emit(doc, json_out, "\n".join(lines))


@files.command("reprocess")
@click.argument("file_id")
@json_option
@pass_ctx
def files_reprocess(ctx: Context, file_id: str, json_out: bool) -> None:
    """Process a FAILED or DUPLICATE file again now (recorded in the file's record)."""
    from returnsd.cliops import reprocess_file

    try:
        outcome = reprocess_file(ctx.settings, ctx.store, file_id, f"cli:{getpass.getuser()}")
    except ValueError as exc:
        fail(str(exc))
    if outcome is None:
        fail(f"no file {file_id}")
    doc = outcome.summary()
    emit(doc, json_out, outcome_text(doc, outcome.error_code, outcome.error_message))
    sys.exit(EXIT_OK if outcome.status == FileStatus.COMPLETE else EXIT_FAILED)


@files.command("result")
@click.argument("file_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def files_result(ctx: Context, file_id: str, output: Path | None) -> None:
    """Print (or save) a file's result CSV."""
    outcome = _outcome(ctx, file_id)
    data = outcome.result_csv()
    if data is None:
        fail(f"file {file_id} has no result CSV (status {outcome.status})")
    if output:
        output_path(output).write_bytes(data)
        click.echo(f"wrote {output}")
    else:
        sys.stdout.buffer.write(data)
