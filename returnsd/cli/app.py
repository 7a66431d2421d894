"""The `returnsd` command group; the command modules attach their commands to it."""

from __future__ import annotations

from pathlib import Path

import click

from returnsd.cli.common import Context
from returnsd.logs import configure


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
    configure(log_level)
    ctx.obj = Context(config_path)
