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
* The instruments are this module's own ``Histogram`` and ``Counter``: a
  bisect and two additions per observation, folded into Prometheus families
  only at scrape time (no ``_created`` series).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: Kernel RTT on loopback is tens of microseconds; across regions, hundreds of ms.
RTT_BUCKETS_S = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
CONNECT_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: MCP connections range from one POST to hours-long SSE/WebSocket sessions.
DURATION_BUCKETS_S = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)

# No ``*_created`` series: every counter here starts with the worker, whose
# start time is process_start_time_seconds already.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (prometheus-client leaves it unannotated)

LEGS = ("client", "upstream")
DIRECTIONS = ("client_to_upstream", "upstream_to_client")
WORKER_RESTART_CAUSES = ("crash", "hang", "restart", "reload")
LOCAL_RESOURCES = ("descriptors", "buffers", "memory")
EXHAUSTION_PLACES = ("accept", "upstream_connect", "health_check")
#: Known label values, exported at 0 from the start (a rate() or an alert on a
#: series that appears only with its first event misses that event).
CONNECT_FAILURE_REASONS = ("refused", "timeout", "unreachable", "dns", "error")
REJECT_REASONS = (
    "max_connections",
    "descriptors",
    "upstream_down",
    "operator",
    "circuit_open",
    "not_allowed",
    "route_unusable",
    "fault",
)
GATE_RESULTS = ("cookie", "bearer", "header", "url", "missing", "invalid", "malformed", "too_large")


class _HistogramChild:
    """One label set's buckets (not cumulative: folded at scrape) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Histogram:
    """A labelled histogram whose ``observe`` is a bisect and two additions.

    prometheus_client's takes a lock and walks the buckets in Python on every
    observation; the worker observes per event on one thread, so the work is
    done here as cheaply as it can be and folded into the exposition format
    only when scraped.  Same call shape: ``labels(*values).observe(v)``.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], buckets: tuple[float, ...], registry: Instruments
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = tuple(b for b in buckets if b != math.inf)
        self.children: dict[tuple[str, ...], _HistogramChild] = {}
        registry.add(self)

    def labels(self, *values: str) -> _HistogramChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _HistogramChild(self.bounds)
        return child

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            cumulative, total = [], 0
            for bound, count in zip((*self.bounds, math.inf), child.counts, strict=True):
                total += count
                cumulative.append((_bound(bound), total))
            family.add_metric(list(values), cumulative, child.sum)
        return family


class Counter:
    """A labelled counter, ``labels(*values).inc(n)``; see ``Histogram``."""

    def __init__(self, name: str, documentation: str, labelnames: list[str], registry: Instruments) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], _CounterChild] = {}
        registry.add(self)

    def labels(self, *values: str) -> _CounterChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _CounterChild()
        return child

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self.children.items():
            family.add_metric(list(values), child.value)
        return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


class Instruments(Collector):
    """The worker's instruments, exported at scrape time."""

    def __init__(self) -> None:
        self.instruments: list[Histogram | Counter] = []

    def add(self, instrument: Histogram | Counter) -> None:
        self.instruments.append(instrument)

    def collect(self) -> Iterator[Metric]:
        for instrument in self.instruments:
            yield instrument.family()


class RouteMetrics:
    """Histogram children bound to one route's label (observe is then cheap)."""

    __slots__ = ("connection_duration", "retransmits", "rtt", "upstream_connect")

    def __init__(self, metrics: Metrics, route: str) -> None:
        self.connection_duration = metrics.connection_duration.labels(route)
        self.upstream_connect = metrics.upstream_connect.labels(route)
        self.rtt = {leg: metrics.tcp_rtt.labels(route, leg) for leg in LEGS}
        #: Segments retransmitted, summed from TCP_INFO deltas, per leg.
        self.retransmits = dict.fromkeys(LEGS, 0)


class Metrics:
    """The worker's registry and the instruments observed per event."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        instruments = Instruments()
        self.registry.register(instruments)
        self.connection_duration = Histogram(
            "mcp_sidecar_connection_duration_seconds",
            "Lifetime of forwarded connections, from accept to close.",
            ["route"],
            buckets=DURATION_BUCKETS_S,
            registry=instruments,
        )
        self.upstream_connect = Histogram(
            "mcp_sidecar_upstream_connect_seconds",
            "Time to establish the upstream connection, retries included.",
            ["route"],
            buckets=CONNECT_BUCKETS_S,
            registry=instruments,
        )
        self.tcp_rtt = Histogram(
            "mcp_sidecar_tcp_rtt_seconds",
            "Kernel smoothed RTT (TCP_INFO) sampled per connection, periodically and at close.",
            ["route", "leg"],
            buckets=RTT_BUCKETS_S,
            registry=instruments,
        )

        # In-line observation (observation.py): per event, never per byte.
        self.observer_errors = Counter(
            "mcp_sidecar_observer_errors",
            "Observers that gave up on a connection (bytes kept flowing).",
            ["route", "protocol"],
            registry=instruments,
        )
        self.http_requests = Counter(
            "mcp_sidecar_http_requests",
            "HTTP/1.1 exchanges seen in-line, by method and status.",
            ["route", "method", "status"],
            registry=instruments,
        )
        self.http_response = Histogram(
            "mcp_sidecar_http_response_seconds",
            "Time from the request's first byte to the response headers.",
            ["route"],
            buckets=CONNECT_BUCKETS_S,
            registry=instruments,
        )
        self.sse_events = Counter(
            "mcp_sidecar_sse_events",
            "Server-sent events seen in responses (comments/keep-alives excluded).",
            ["route"],
            registry=instruments,
        )
        self.ws_frames = Counter(
            "mcp_sidecar_websocket_frames",
            "WebSocket frames seen after a 101, by direction and opcode.",
            ["route", "direction", "opcode"],
            registry=instruments,
        )
        self.ws_ping_rtt = Histogram(
            "mcp_sidecar_websocket_ping_rtt_seconds",
            "Ping to matching pong (by payload), either direction.",
            ["route"],
            buckets=RTT_BUCKETS_S,
            registry=instruments,
        )
        self.ws_bytes = Counter(
            "mcp_sidecar_websocket_payload_bytes",
            "WebSocket payload bytes seen after a 101, by direction and opcode.",
            ["route", "direction", "opcode"],
            registry=instruments,
        )
        self.mcp_first_byte = Histogram(
            "mcp_first_byte_seconds",
            "MCP request (HTTP transports) to the first byte of its HTTP response (headers).",
            ["route", "method"],
            buckets=(*CONNECT_BUCKETS_S, 30.0, 60.0),
            registry=instruments,
        )
        self.ws_keepalive_rtt = Histogram(
            "mcp_sidecar_websocket_keepalive_rtt_seconds",
            "The proxy's own keepalive ping to its pong, per leg (ws_ping_interval).",
            ["route", "leg"],
            buckets=RTT_BUCKETS_S,
            registry=instruments,
        )
        self.mcp_requests = Counter(
            "mcp_requests",
            "MCP JSON-RPC requests by method, outcome (ok, error code, tool_error, cancelled, timeout), "
            "transport (http, legacy-sse, websocket, inspector-v2), protocol version and target (the tool, "
            "prompt or resource; '' for other methods, 'other' past the route's cap).",
            ["route", "method", "status", "transport", "protocol_version", "target"],
            registry=instruments,
        )
        self.mcp_duration = Histogram(
            "mcp_response_duration_seconds",
            "MCP request to its final response.",
            ["route", "method", "transport", "protocol_version", "target"],
            buckets=(*CONNECT_BUCKETS_S, 30.0, 60.0, 300.0),
            registry=instruments,
        )
        self.mcp_part = Histogram(
            "mcp_sidecar_mcp_latency_part_seconds",
            "Who was slow: each MCP request's latency split into part network (both legs' RTT), server "
            "(forwarded upstream to the answer's first byte, less the upstream RTT), transfer (first to last "
            "byte) and client (the proxy waiting for the client to take the answer, and what it had yet to take).",
            ["route", "method", "target", "part"],
            buckets=(*CONNECT_BUCKETS_S, 30.0, 60.0, 300.0),
            registry=instruments,
        )
        self.mcp_slow_client = Counter(
            "mcp_sidecar_mcp_slow_client_answers",
            "MCP answers whose client part was 100 ms or more: the client fell behind.",
            ["route"],
            registry=instruments,
        )
        self.sse_bursts = Counter(
            "mcp_sidecar_sse_bursts",
            "Upstream event streams' bursts: 3 or more events arriving together (within 5 ms) after a silence "
            "of 50 ms or more -- something on the upstream side held them back (a buffering intermediary).",
            ["route"],
            registry=instruments,
        )
        self.otel_exported = Counter(
            "mcp_sidecar_otel_spans_exported",
            "OpenTelemetry spans a collector accepted ([otel]).",
            [],
            registry=instruments,
        )
        self.otel_dropped = Counter(
            "mcp_sidecar_otel_spans_dropped",
            "OpenTelemetry spans dropped: the queue was full ([otel] queue_spans), or the collector did not take "
            "them after the retries.",
            [],
            registry=instruments,
        )
        self.otel_failures = Counter(
            "mcp_sidecar_otel_export_failures",
            "OTLP export requests that failed after their retries, by signal (traces: their spans are counted "
            "as dropped; metrics: sent again whole at the next period).",
            ["signal"],
            registry=instruments,
        )
        self.mcp_conformance = Counter(
            "mcp_conformance",
            "MCP requests and answers that break their protocol revision's transport rules, by kind "
            "(forwarded unchanged).",
            ["route", "kind"],
            registry=instruments,
        )
        self.mcp_stream_duration = Histogram(
            "mcp_stream_duration_seconds",
            "Long-lived MCP streams (legacy-sse, get, listen, inspector-v2) from open to end, by how they ended "
            "(server_closed, client_closed, reset, drained, timeout, other).",
            ["route", "kind", "end"],
            buckets=DURATION_BUCKETS_S,
            registry=instruments,
        )
        self.sse_keepalives = Counter(
            "mcp_sidecar_sse_keepalives",
            "SSE comment lines the proxy inserted into silent event streams (sse_keepalive).",
            ["route"],
            registry=instruments,
        )
        self.http_duration = Histogram(
            "mcp_sidecar_http_duration_seconds",
            "HTTP exchanges from the request's first byte to the response's last (complete) or to the "
            "connection's end (aborted: an event stream the client closed, a request never answered).",
            ["route", "outcome"],
            buckets=DURATION_BUCKETS_S,
            registry=instruments,
        )

    def for_route(self, route: str) -> RouteMetrics:
        return RouteMetrics(self, route)
