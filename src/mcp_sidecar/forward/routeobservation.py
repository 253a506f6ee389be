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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config.defaults import DEFAULT_MCP_TARGET_LIMIT
from ..logs import log
from ..observe.budget import UNBOUNDED, MemoryBudget, ObservationBudget
from ..observe.events import McpOutcome
from ..observe.jsonrpc import Envelope
from ..observe.mcp import McpTracker
from ..observe.mcpmeta import TargetLabels
from ..observe.mcpstats import McpStats
from ..observe.requestlog import RequestLogPolicy, request_line
from ..observe.slowness import PARTS
from ..observe.tap import DEFAULT_MAX_BYTES
from .drainwatch import DrainWatch
from .mcpstreams import RouteStreams
from .metrics import Metrics
from .observequeue import ObservationQueue
from .otelexport import Tracer
from .otelsinks import OtelSinks
from .statsrelay import StatsRelay

logger = logging.getLogger(__name__)

#: Sessions (and connections) whose negotiated version is remembered.
MAX_SESSION_VERSIONS = 10_000


#: A message whose line is built when taken: its route, origin, message, the
#: facts ``line_body`` shows (McpRecords' ``shown``), its monotonic time, the
#: body bound, its shown names (None: worked out when built) and its
#: exchange's session when it was seen.
Waiting = tuple[
    "RouteObservation",
    str,
    Envelope,
    dict[str, Any],
    float,
    int,
    "tuple[str | None, str | None] | None",
    str | None,
]


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
    #: The worker's large answers on their way to slow clients (drainwatch.py);
    #: None when built alone: reported at once, with the kernel's estimate.
    drains: DrainWatch | None = None
    #: Seconds spent observing this route's chunks; connections shed over the budget.
    observe_s: float = 0.0
    shed: int = 0
    #: Observers that gave up because the inspection buffers were full.
    memory_exhausted: int = 0
    #: Observers stopped by a defect of ours (not the peer's bytes).
    bugs: int = 0
    #: JSON bodies past the observer's bound: counted, not parsed.
    bodies_too_large: int = 0
    #: Answers the client was slow to take; upstream event streams' bursts (observe/slowness.py).
    slow_answers: int = 0
    sse_bursts: int = 0
    #: Open connections that carried MCP (kept here as they change, so that a
    #: scrape never walks the connections).
    mcp_connections: int = 0
    #: Long-lived MCP streams: open now by kind, ended by kind and end (mcpstreams.py).
    streams: RouteStreams = field(default_factory=RouteStreams)
    #: The tool, prompt and resource labels, capped (observe/mcpmeta.py);
    #: resource URIs are labels only when the route opts in.
    targets: TargetLabels = field(default_factory=lambda: TargetLabels(DEFAULT_MCP_TARGET_LIMIT))
    target_resources: bool = False
    #: Requests and answers that broke their revision's rules, by kind (mcpmeta.Conformance).
    conformance: dict[str, int] = field(default_factory=dict)
    #: The protocol version each session (or connection) negotiated, bounded.
    session_versions: OrderedDict[str, str] = field(default_factory=OrderedDict)
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    #: (side, opcode) -> (frames counter, bytes counter): one lookup per chunk.
    ws_children: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    #: Per method and transport, sessions (observe/mcpstats.py): what /api/mcp shows.
    stats: McpStats = field(default_factory=McpStats)
    #: Where the connections write those figures: ``stats``, or under a
    #: supervisor that merges several workers, a relay to it (statsrelay.py).
    relay: StatsRelay | None = None
    #: The messages of transports that span connections go to the supervisor
    #: for correlation (several workers: the two connections may be in two).
    correlate_remotely: bool = False
    #: The request log's sampling and rate cap; None while it is off.
    request_log: RequestLogPolicy | None = None
    #: The worker's OpenTelemetry spans (otelexport.py); None while [otel] is off.
    tracer: Tracer | None = None
    #: The worker's OpenTelemetry exporters (otelsinks.py), fed every outcome; None while [otel] is off.
    otel: OtelSinks | None = None
    #: The tap's subscribers that want this route (forward/tap.py); empty: nobody taps.
    taps: tuple[Any, ...] = ()
    tap_max_bytes: int = DEFAULT_MAX_BYTES
    #: The bound records are cut at now: ``tap_max_bytes``, or more while a
    #: subscriber (a recording) asks for more (forward/tap.py sets it).
    tap_bound: int = DEFAULT_MAX_BYTES
    #: The recordings that want this route (forward/tap.py's LineSubscriber); empty: none.
    recorders: tuple[Any, ...] = ()
    #: Every one of ``recorders`` records all of this route (no method or
    #: target asked): a message's line goes to each without a test.
    record_all: bool = False
    #: The bound a recording's bodies are cut at (the largest its recordings asked for).
    record_bound: int = DEFAULT_MAX_BYTES
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
        stats, policy, metrics, otel = self.sink, self.request_log, self.metrics, self.otel
        for outcome in outcomes:
            if otel is not None:
                otel.outcome(self.route, outcome)
            method, transport, version, target = (
                outcome.method,
                outcome.transport,
                outcome.protocol_version,
                outcome.target,
            )
            self.child(metrics.mcp_requests, method, outcome.status, transport, version, target).inc()
            if outcome.duration_s is not None and outcome.status != "cancelled":
                self.child(metrics.mcp_duration, method, transport, version, target).observe(outcome.duration_s)
            parts = outcome.parts
            if parts is not None:
                self.observe_parts(method, target, parts)
            stats.outcome(outcome, now)
            if policy is not None and policy.admit(now):
                log(logger, logging.INFO, "mcp.request", unlimited=True, **request_line(self.route, outcome))

    def observe_parts(self, method: str, target: str, parts: tuple[float, float, float, float]) -> None:
        """Who was slow on one request: a histogram per part (children cached per method and target)."""
        key = ("parts", method, target)
        children = self._children.get(key)
        if children is None:
            metric = self.metrics.mcp_part
            children = self._children[key] = tuple(metric.labels(self.route, method, target, part) for part in PARTS)
        for child, seconds in zip(children, parts, strict=True):
            child.observe(seconds)

    def slow_answer(self) -> None:
        """An answer the client was slow to take (mcprecords.py)."""
        self.slow_answers += 1
        self.child(self.metrics.mcp_slow_client).inc()

    def sse_burst(self) -> None:
        """An upstream event stream let several events through at once (observation.py)."""
        self.sse_bursts += 1
        self.child(self.metrics.sse_bursts).inc()

    def session_version(self, key: str) -> str | None:
        return self.session_versions.get(key)

    def negotiated(self, key: str, version: str) -> None:
        """A session (or connection) settled its protocol version (initialize)."""
        versions = self.session_versions
        versions[key] = version
        versions.move_to_end(key)
        while len(versions) > MAX_SESSION_VERSIONS:
            versions.popitem(last=False)

    def nonconforming(self, kind: str) -> None:
        self.conformance[kind] = self.conformance.get(kind, 0) + 1
        self.child(self.metrics.mcp_conformance, kind).inc()

    def mcp_stream_opened(self, kind: str) -> None:
        self.streams.opened(kind)

    def mcp_stream_ended(self, kind: str, end: str, lifetime_s: float) -> None:
        self.streams.closed(kind, end)
        self.child(self.metrics.mcp_stream_duration, kind, end).observe(lifetime_s)

    @property
    def sink(self) -> McpStats | StatsRelay:
        """Where outcomes, sessions and clients go: the relay if there is one."""
        return self.relay if self.relay is not None else self.stats
