"""``mcp.server.operation.duration``: the OpenTelemetry MCP conventions'
histogram of request durations, aggregated for OTLP (sans-io).

Rules this module keeps:

* One data point per distinct attribute set, cumulative from the
  process's start (OTLP's cumulative temporality: a collector or backend
  computes rates; a restarted process starts again, its start time says so).
* Attributes are the conventions' for this metric (``mcp.method.name``,
  ``error.type`` iff the request failed, ``rpc.response.status_code`` for a
  JSON-RPC error, ``gen_ai.operation.name``, ``gen_ai.tool.name``,
  ``gen_ai.prompt.name``, ``mcp.resource.uri`` where the route labels
  resources, ``mcp.protocol.version``, ``network.transport``,
  ``network.protocol.name``) and the route: never a session or request id.
  Every value is one of the bounded labels the Prometheus metrics use, so
  the series are bounded the same way; past ``MAX_SERIES`` anyway, a request
  goes to the overflow point (``otel.metric.overflow = true``, as the
  OpenTelemetry SDKs do at their cardinality limit).
* Bucket bounds are the conventions' advice for MCP durations (seconds).
* No clock: times are passed in.
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from .events import McpOutcome
from .otelspans import labels_of, static_attributes

NAME = "mcp.server.operation.duration"
DESCRIPTION = "MCP request duration as observed by the sidecar, from the request forwarded to its answer."
UNIT = "s"
#: The conventions' advised explicit bucket boundaries for MCP operation durations (seconds).
BOUNDS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Distinct attribute sets kept; past it, the overflow point.
MAX_SERIES = 2000
OVERFLOW: tuple[tuple[str, Any], ...] = (("otel.metric.overflow", True),)
_KEPT = frozenset(
    {
        "mcp.method.name",
        "error.type",
        "rpc.response.status_code",
        "gen_ai.operation.name",
        "gen_ai.tool.name",
        "gen_ai.prompt.name",
        "mcp.resource.uri",
        "mcp.protocol.version",
        "network.transport",
        "network.protocol.name",
        "mcp_sidecar.route",
    }
)


@functools.lru_cache(maxsize=4096)
def _key(
    route: str, method: str, target: str, transport: str, version: str, upstream: str | None, status: str
) -> tuple[tuple[str, Any], ...]:
    """A request's attribute set (its labels' span attributes that the metric keeps), sorted."""
    static, _, _ = static_attributes(route, method, target, transport, version, upstream, status)
    return tuple(sorted((k, v) for k, v in static.items() if k in _KEPT))


@dataclass(slots=True)
class HistogramPoint:
    """One attribute set's figures so far."""

    attributes: tuple[tuple[str, Any], ...]
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_S) + 1))
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def record(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS_S, seconds)] += 1  # (upper bounds inclusive, as OTLP's)
        self.count += 1
        self.total += seconds
        self.low = min(self.low, seconds)
        self.high = max(self.high, seconds)


class OperationDurations:
    """Every attribute set's point, since ``start_ns`` (Unix nanoseconds)."""

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.points: dict[tuple[tuple[str, Any], ...], HistogramPoint] = {}
        #: Requests recorded since the last export that went through (a stopping
        #: process sends its figures once more only if there are some).
        self.fresh = 0

    def outcome(self, route: str, outcome: McpOutcome) -> None:
        """A request's outcome (cancelled and unanswered ones have no duration to record)."""
        seconds = outcome.duration_s
        if seconds is None or outcome.status == "cancelled":
            return
        key = _key(*labels_of(route, outcome))
        point = self.points.get(key)
        if point is None:
            if len(self.points) >= MAX_SERIES:
                key = OVERFLOW
                point = self.points.get(key)
            if point is None:
                point = self.points[key] = HistogramPoint(key)
        point.record(seconds)
        self.fresh += 1
