"""What a route's connections observe together: MCP correlation (requests on
one connection, answers on another), the figures of /api/mcp, the request
log, the tap's subscribers, and the metric children looked up once.

Rules this module keeps:

* One per route per worker, shared by the route's connections
  (observation.py); the gauges it keeps change as connections change, so
  a scrape never walks the connections.
* ``child`` caches ``metric.labels(route, *labels)``: an exchange or a frame
  costs a dictionary lookup, not a label resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..logs import log
from ..observe.budget import UNBOUNDED, MemoryBudget, ObservationBudget
from ..observe.events import McpOutcome
from ..observe.mcp import McpTracker
from ..observe.mcpstats import McpStats
from ..observe.requestlog import RequestLogPolicy, request_line
from ..observe.tap import DEFAULT_MAX_BYTES
from .metrics import Metrics
from .observequeue import ObservationQueue

logger = logging.getLogger(__name__)


@dataclass
class RouteObservation:
    """Route-level state shared by its connections: MCP correlation, metrics."""

    route: str
    metrics: Metrics
    tracker: McpTracker
    #: Shared by the worker's routes (proxy.py); unlimited when built alone (tests).
    budget: ObservationBudget = field(default_factory=lambda: ObservationBudget(1.0, 0.0))
    #: The worker's inspection buffers (budget.py); unbounded when built alone.
    memory: MemoryBudget = UNBOUNDED
    #: The worker's batch of chunks to observe (observequeue.py); None when
    #: built alone: each chunk is observed as it is fed.
    queue: ObservationQueue | None = None
    #: Seconds spent observing this route's chunks; connections shed over the budget.
    observe_s: float = 0.0
    shed: int = 0
    #: Observers that gave up because the inspection buffers were full.
    memory_exhausted: int = 0
    #: Observers stopped by a defect of ours (not the peer's bytes).
    bugs: int = 0
    #: JSON bodies past the observer's bound: counted, not parsed.
    bodies_too_large: int = 0
    #: Open connections that carried MCP; GET event streams open now (kept
    #: here as they change, so that a scrape never walks the connections).
    mcp_connections: int = 0
    open_streams: int = 0
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    #: (side, opcode) -> (frames counter, bytes counter): one lookup per chunk.
    ws_children: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    #: Per method and transport, sessions (observe/mcpstats.py): what /api/mcp shows.
    stats: McpStats = field(default_factory=McpStats)
    #: The request log's sampling and rate cap; None while it is off.
    request_log: RequestLogPolicy | None = None
    #: The tap's subscribers that want this route (forward/tap.py); empty: nobody taps.
    taps: tuple[Any, ...] = ()
    tap_max_bytes: int = DEFAULT_MAX_BYTES
    #: Called with a connection's id once it turns out to be long-lived
    #: (state.py counts its reconnect then); one per route, not per connection.
    stream_opened: Callable[[int], None] | None = None

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(route, *labels)``, cached (labels() takes a lock and
        builds a key on every call; this runs per frame and per exchange)."""
        key = (id(metric), *labels)
        try:
            return self._children[key]
        except KeyError:
            child = self._children[key] = metric.labels(self.route, *labels)
            return child

    def ws_counters(self, side: str, opcode: str) -> tuple[Any, Any]:
        """The frame and byte counters of one direction and opcode (cached)."""
        direction = "client_to_upstream" if side == "client" else "upstream_to_client"
        pair = self.ws_children[(side, opcode)] = (
            self.child(self.metrics.ws_frames, direction, opcode),
            self.child(self.metrics.ws_bytes, direction, opcode),
        )
        return pair

    def outcomes(self, outcomes: list[McpOutcome], now: float) -> None:
        """What came of requests: metrics, the operator's figures, the request log."""
        stats, policy = self.stats, self.request_log
        for outcome in outcomes:
            self.child(self.metrics.mcp_requests, outcome.method, outcome.status, outcome.transport).inc()
            if outcome.duration_s is not None and outcome.status != "cancelled":
                self.child(self.metrics.mcp_duration, outcome.method, outcome.transport).observe(outcome.duration_s)
            stats.outcome(outcome, now)
            if policy is not None and policy.admit(now):
                log(logger, logging.INFO, "mcp.request", unlimited=True, **request_line(self.route, outcome))
