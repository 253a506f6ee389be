"""The process's OTLP metrics: ``mcp.server.operation.duration`` aggregated
(observe/otelhistograms.py) and exported every ``metrics_interval``.

Rules this module keeps:

* Off, nothing: no exporter exists unless ``[otel] metrics`` (or
  ``OTEL_METRICS_EXPORTER=otlp``) asks; Prometheus stays the default way to
  the figures.
* Recording a request costs one dictionary lookup and a bucket increment on
  the data path; encoding and sending happen in the export task.
* Cumulative: every period sends every point since the process started (a
  failed export loses nothing: the next one carries it all), retried as the
  spans are (otlppost.py); failures counted
  (``mcp_sidecar_otel_export_failures_total{signal="metrics"}``).
* Per process, each its own ``service.instance.id`` (the resource
  attribute that tells a collector the workers' cumulative series apart);
  a process that stops sends its figures once more, bounded by
  ``FLUSH_TIMEOUT_S``.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from .. import __version__
from ..config.otel import OtelConfig
from ..observe.events import McpOutcome
from ..observe.otelhistograms import BOUNDS_S, DESCRIPTION, NAME, UNIT, OperationDurations
from ..observe.otlpwire import export_metrics_request
from .otelexport import FLUSH_TIMEOUT_S, resource_attributes
from .otlppost import OtlpPoster


class MetricsExporter:
    """One process's MCP operation durations, for OTLP."""

    def __init__(self, config: OtelConfig, metrics: Any) -> None:
        self.config = config
        self.durations = OperationDurations(time.time_ns())
        self.resource = resource_attributes(config)
        self.count_failures = metrics.otel_failures.labels("metrics")
        self.exports = 0
        self.failures = 0

    def outcome(self, route: str, outcome: McpOutcome) -> None:
        self.durations.outcome(route, outcome)

    def body(self) -> bytes:
        """Every point as of now, serialized."""
        durations = self.durations
        return export_metrics_request(
            (NAME, DESCRIPTION, UNIT),
            list(durations.points.values()),
            BOUNDS_S,
            (durations.start_ns, time.time_ns()),
            self.resource,
            ("mcp-sidecar", __version__),
        )

    async def run(self) -> None:
        """Export every period until cancelled, then once more (bounded)."""
        poster = OtlpPoster(
            self.config.metrics_endpoint or "", self.config.metrics_headers, self.config.export_timeout_s
        )
        try:
            while True:
                await trio.sleep(self.config.metrics_interval_s)
                await self._export(poster)
        finally:
            if self.durations.fresh:
                with trio.CancelScope(shield=True) as last:
                    last.deadline = trio.current_time() + FLUSH_TIMEOUT_S
                    await self._export(poster, attempts=1)

    async def _export(self, poster: OtlpPoster, attempts: int | None = None) -> None:
        if not self.durations.points:
            return
        fresh, self.durations.fresh = self.durations.fresh, 0
        if await poster.send(self.body(), attempts):
            self.exports += 1
        else:
            self.durations.fresh += fresh
            self.failures += 1
            self.count_failures.inc()
