"""What every command shares: the lazily opened config and store, exit codes, output, filters."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ingest import config as config_mod
from ingest.config import Campaign, Settings
from ingest.errors import ConfigError, ReturnsdError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
F = TypeVar("F", bound=Callable[..., Any])


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
        """The migrated, synced store: for commands that write."""
        if self._store is None:
            from ingest.store import prepare

            self._store = self._open(prepare)
        return self._store

    @property
    def existing_store(self) -> Any:
        """The store of an existing, up-to-date database: read-only commands never create one."""
        if self._store is None:
            from ingest.store import open_existing

            self._store = self._open(open_existing)
        return self._store

    def _open(self, opener: Callable[[Settings], Any]) -> Any:
        try:
            return opener(self.settings)
        except ReturnsdError as exc:
            fail(str(exc), EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)

    def filter_campaign(self, campaign_id: str | None) -> str | None:
        """A `--campaign` filter: None, or a configured campaign's id (exit 2 if unknown)."""
        return self.campaign(campaign_id).id if campaign_id else None

    def campaign(self, campaign_id: str) -> Campaign:
        """A configured campaign (exit 2 naming the configured ones if unknown)."""
        found = self.settings.campaign(campaign_id)
        if found is None:
            known = ", ".join(c.id for c in self.settings.campaigns)
            fail(f"unknown campaign {campaign_id!r} (configured: {known})", EXIT_USAGE)
        return found


pass_ctx = click.make_pass_decorator(Context)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print an error to stderr and exit with `code`."""
    click.echo(f"returnsd: {message}", err=True)
    sys.exit(code)


def as_json(doc: Any) -> str:
    """`doc` as indented JSON (dates and decimals as text)."""
    return json.dumps(doc, indent=2, default=str)


def emit(doc: Any, json_out: bool, text: str | None = None) -> None:
    """Print JSON for machines, or the human text."""
    click.echo(as_json(doc) if json_out or text is None else text)


def json_option(f: F) -> F:
    """The `--json` flag every command that prints takes."""
    return click.option("--json", "json_out", is_flag=True, help="print JSON for machines")(f)


def limit_options(f: F) -> F:
    """`--limit N` (default 50) and `--all` for listing commands."""
    f = click.option("--all", "show_all", is_flag=True, help="list everything")(f)
    return click.option(
        "--limit", default=50, show_default=True, type=click.IntRange(min=1), help="rows to show"
    )(f)


def row_limit(limit: int, show_all: bool) -> int | None:
    """The row limit of `--limit N` / `--all` (None: no limit)."""
    return None if show_all else limit


def choice(values: Sequence[str]) -> click.Choice[str]:
    """A case-insensitive choice among `values` (the error lists them)."""
    return click.Choice(list(values), case_sensitive=False)


def table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as an aligned text table with a header: `columns` are (header, key) pairs."""
    cells = [[h for h, _ in columns]]
    cells += [["" if r.get(k) is None else str(r.get(k)) for _, k in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def listing(
    rows: list[dict[str, Any]],
    total: int,
    columns: Sequence[tuple[str, str]],
    json_out: bool,
    empty: str,
) -> None:
    """Print a listing: JSON rows, or a table with a 'N more' line when rows were left out."""
    if json_out:
        click.echo(as_json(rows))
        return
    if not rows:
        click.echo(empty)
        return
    click.echo(table(rows, columns))
    if total > len(rows):
        click.echo(f"… {total - len(rows):,} more (--limit N or --all to see them)")


def output_path(path: Path) -> Path:
    """An output file whose folder exists (exit 2 naming the folder otherwise)."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        fail(f"cannot write {path}: folder {folder} does not exist", EXIT_USAGE)
    return path
