"""The HTTP channel's probes: `GET /healthz` (liveness, queue depth) and `GET /metrics`."""

from __future__ import annotations

import logging

from fastapi import Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from channels.base import ChannelContext
from channels.http_docs import Health
from ingest.errors import Transient
from ingest.metrics import CONTENT_TYPE as METRICS_TYPE
from ingest.metrics import render as render_metrics

# The probes' lines keep the logger name they had when they lived in channels.http_app.
log = logging.getLogger("returnsd.channels.http_app")
QUEUE_COUNT_CAP = 10_000


class HealthRoutes:
    """The health and metrics routes over the channel's context."""

    def __init__(self, ctx: ChannelContext) -> None:
        self.ctx = ctx

    async def health(self) -> Response:
        """Liveness (200 while the server runs): database state, queued files, running channels."""
        doc = await run_in_threadpool(self._health)
        return JSONResponse(doc.model_dump())

    def _health(self) -> Health:
        try:
            queued = len(self.ctx.results.recent(status="QUEUED", limit=QUEUE_COUNT_CAP))
            processing = len(self.ctx.results.recent(status="PROCESSING", limit=QUEUE_COUNT_CAP))
        except Transient as exc:  # the database is down: say so, do not fail the probe
            log.warning("healthz: database unreachable: %s", exc)
            return Health(status="degraded", database="unreachable", channels=self._channels())
        return Health(
            status="ok",
            database="ok",
            queued=queued,
            processing=processing,
            queue_capped=max(queued, processing) >= QUEUE_COUNT_CAP,
            channels=self._channels(),
        )

    def _channels(self) -> list[str]:
        return sorted(self.ctx.running())

    async def metrics(self) -> Response:
        """Prometheus text: files by channel and status, queue depth, claims, nodes alive."""
        try:
            store = self.ctx.results.store
            text = await run_in_threadpool(render_metrics, self.ctx.settings, store)
        except Transient as exc:
            log.warning("metrics: database unreachable: %s", exc)
            return PlainTextResponse("# database unreachable\n", status_code=503)
        return PlainTextResponse(text, media_type=METRICS_TYPE)
