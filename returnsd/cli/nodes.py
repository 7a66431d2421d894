"""`returnsd nodes`: the cluster's nodes, their heartbeats, what each holds and runs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

import click

from returnsd.cli.app import main
from returnsd.cli.common import Context, json_option, listing, pass_ctx

NODE_COLUMNS = (
    ("NODE", "id"),
    ("STATE", "state"),
    ("VERSION", "version"),
    ("STARTED", "started"),
    ("HEARTBEAT", "heartbeat"),
    ("HOLDING", "holding"),
    ("LAST JOB", "last_job"),
)


@main.command()
@json_option
@pass_ctx
def nodes(ctx: Context, json_out: bool) -> None:
    """List the cluster's nodes: alive or not, last heartbeat, files held, last job run."""
    from ingest.cluster import nodes as cluster_nodes

    lease = timedelta(seconds=ctx.settings.cluster.lease_seconds)
    views = cluster_nodes(ctx.existing_store, lease)
    rows: list[dict[str, Any]] = []
    for v in views:
        state = "alive" if v.alive else ("stopped" if v.stopped_at else "dead")
        row = {**asdict(v), "state": state}
        row["started"] = f"{v.started_at:%Y-%m-%d %H:%M:%S}"
        row["heartbeat"] = f"{v.heartbeat_at:%Y-%m-%d %H:%M:%S}"
        rows.append(row)
    empty = "no cluster nodes" + (
        "" if ctx.settings.cluster.enabled else " (cluster mode is off: `cluster: {enabled: true}`)"
    )
    if json_out:
        for row in rows:
            row.pop("started"), row.pop("heartbeat")
    listing(rows, len(rows), NODE_COLUMNS, json_out, empty)
    if not json_out and rows:
        click.echo(f"{sum(v.alive for v in views)} of {len(views)} alive (lease {lease})")
