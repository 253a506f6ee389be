"""A process's OpenTelemetry exporters together: the spans (otelexport.py)
and the OTLP metrics (otelmetrics.py), made from ``[otel]`` and fed each
request's outcome -- by a worker's routes, and by the supervisor for the
requests it correlates across workers.

Rules this module keeps:

* Off, nothing: with neither signal on, ``otel_sinks`` gives None and the
  routes test only that.
* One task exports both (``run``); cancelling it stops both, each sending
  what it holds once more (bounded).
"""

from __future__ import annotations

from typing import Any

import trio

from ..config.otel import OtelConfig
from ..observe.events import McpOutcome
from .otelexport import Tracer
from .otelmetrics import MetricsExporter


class OtelSinks:
    """The spans and the metrics of one process (each None while off)."""

    def __init__(self, config: OtelConfig, metrics: Any) -> None:
        self.config = config
        self.tracer = Tracer(config, metrics) if config.enabled else None
        self.metrics = MetricsExporter(config, metrics) if config.metrics_enabled else None

    def outcome(self, route: str, outcome: McpOutcome, end_unix: float | None = None) -> None:
        """A request's outcome: its span (ended now, or at ``end_unix``) and its duration."""
        if self.tracer is not None:
            self.tracer.outcome(route, outcome, end_unix)
        if self.metrics is not None:
            self.metrics.outcome(route, outcome)

    async def run(self) -> None:
        """Export until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.tracer is not None:
                nursery.start_soon(self.tracer.run)
            if self.metrics is not None:
                nursery.start_soon(self.metrics.run)


def otel_sinks(config: OtelConfig, metrics: Any) -> OtelSinks | None:
    """The exporters ``[otel]`` asks for, or None when it asks for none."""
    return OtelSinks(config, metrics) if config.enabled or config.metrics_enabled else None
