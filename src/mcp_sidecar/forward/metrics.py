"""The instruments the forwarding worker writes: histograms and counters
observed per event (the other half of the catalogue, the families read from
live state at scrape time, is ``admin/collector.py``).

Documented one by one in docs/metrics.md; a test checks that every name
exported is documented there.

Rules this module keeps:

* Nothing here runs per chunk.  Counters the hot path needs are plain ints
  on the route's state; the admin's collector turns them into metric
  families at scrape time.  Histograms are observed per connection (close,
  upstream connect), per TCP_INFO sample or per observed event.
* Label values are bounded: route names come from the configuration,
  ``reason``/``end``/``leg``/``direction``/``cause`` from fixed sets.
* Each worker (``Metrics``) has its own ``CollectorRegistry`` (tests run many
  proxies in one process); the standard process, platform and GC collectors
  are in it.
"""

from __future__ import annotations

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector,
                               ProcessCollector)

#: Kernel RTT on loopback is tens of microseconds; across regions, hundreds of ms.
RTT_BUCKETS_S = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
CONNECT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0)
#: MCP connections range from one POST to hours-long SSE/WebSocket sessions.
DURATION_BUCKETS_S = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                      86400.0)

LEGS = ("client", "upstream")
DIRECTIONS = ("client_to_upstream", "upstream_to_client")
WORKER_RESTART_CAUSES = ("crash", "hang", "restart", "reload")
LOCAL_RESOURCES = ("descriptors", "buffers", "memory")
EXHAUSTION_PLACES = ("accept", "upstream_connect", "health_check")


class RouteMetrics:
    """Histogram children bound to one route's label (observe is then cheap)."""

    __slots__ = ("connection_duration", "upstream_connect", "rtt", "retransmits")

    def __init__(self, metrics: "Metrics", route: str) -> None:
        self.connection_duration = metrics.connection_duration.labels(route)
        self.upstream_connect = metrics.upstream_connect.labels(route)
        self.rtt = {leg: metrics.tcp_rtt.labels(route, leg) for leg in LEGS}
        #: Segments retransmitted, summed from TCP_INFO deltas, per leg.
        self.retransmits = {leg: 0 for leg in LEGS}


class Metrics:
    """The worker's registry and the instruments observed per event."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.connection_duration = Histogram(
            "mcp_sidecar_connection_duration_seconds",
            "Lifetime of forwarded connections, from accept to close.",
            ["route"], buckets=DURATION_BUCKETS_S, registry=self.registry,
        )
        self.upstream_connect = Histogram(
            "mcp_sidecar_upstream_connect_seconds",
            "Time to establish the upstream connection, retries included.",
            ["route"], buckets=CONNECT_BUCKETS_S, registry=self.registry,
        )
        self.tcp_rtt = Histogram(
            "mcp_sidecar_tcp_rtt_seconds",
            "Kernel smoothed RTT (TCP_INFO) sampled per connection, periodically and at close.",
            ["route", "leg"], buckets=RTT_BUCKETS_S, registry=self.registry,
        )

        # In-line observation (observation.py): per event, never per byte.
        self.observer_errors = Counter(
            "mcp_sidecar_observer_errors", "Observers that gave up on a connection (bytes kept flowing).",
            ["route", "protocol"], registry=self.registry)
        self.http_requests = Counter(
            "mcp_sidecar_http_requests", "HTTP/1.1 exchanges seen in-line, by method and status.",
            ["route", "method", "status"], registry=self.registry)
        self.http_response = Histogram(
            "mcp_sidecar_http_response_seconds", "Time from the request's first byte to the response headers.",
            ["route"], buckets=CONNECT_BUCKETS_S, registry=self.registry)
        self.sse_events = Counter(
            "mcp_sidecar_sse_events", "Server-sent events seen in responses (comments/keep-alives excluded).",
            ["route"], registry=self.registry)
        self.ws_frames = Counter(
            "mcp_sidecar_websocket_frames", "WebSocket frames seen after a 101, by direction and opcode.",
            ["route", "direction", "opcode"], registry=self.registry)
        self.ws_ping_rtt = Histogram(
            "mcp_sidecar_websocket_ping_rtt_seconds", "Ping to matching pong (by payload), either direction.",
            ["route"], buckets=RTT_BUCKETS_S, registry=self.registry)
        self.ws_bytes = Counter(
            "mcp_sidecar_websocket_payload_bytes", "WebSocket payload bytes seen after a 101, by direction and opcode.",
            ["route", "direction", "opcode"], registry=self.registry)
        self.mcp_first_byte = Histogram(
            "mcp_sidecar_mcp_first_byte_seconds",
            "MCP request (HTTP transports) to the first byte of its HTTP response (headers).",
            ["route", "method"], buckets=CONNECT_BUCKETS_S + (30.0, 60.0), registry=self.registry)
        self.ws_keepalive_rtt = Histogram(
            "mcp_sidecar_websocket_keepalive_rtt_seconds",
            "The proxy's own keepalive ping to its pong, per leg (ws_ping_interval).",
            ["route", "leg"], buckets=RTT_BUCKETS_S, registry=self.registry)
        self.mcp_requests = Counter(
            "mcp_requests", "MCP JSON-RPC requests by method and outcome (ok, error code, cancelled, timeout).",
            ["route", "method", "status"], registry=self.registry)
        self.mcp_duration = Histogram(
            "mcp_response_duration_seconds", "MCP request to its final response.",
            ["route", "method"], buckets=CONNECT_BUCKETS_S + (30.0, 60.0, 300.0), registry=self.registry)

    def for_route(self, route: str) -> RouteMetrics:
        return RouteMetrics(self, route)
