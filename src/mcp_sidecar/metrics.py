"""The metrics catalogue: every metric the sidecar exports, in one place.

Documented one by one in docs/metrics.md; a test checks that every name
exported here is documented there.

Rules this module keeps:

* Nothing here runs per chunk.  Counters the hot path needs are plain ints
  on the route's runtime state; ``RuntimeCollector`` turns them into metric
  families at scrape time.  Histograms are observed per connection (close,
  upstream connect) or per TCP_INFO sample.
* Label values are bounded: route names come from the configuration,
  ``reason``/``end``/``leg``/``direction``/``cause`` from fixed sets.
* Each ``Proxy`` has its own ``CollectorRegistry`` (tests run many proxies in
  one process); the standard process, platform and GC collectors are in it.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Iterator

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector,
                               ProcessCollector)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__, logs

if TYPE_CHECKING:
    from .proxy import Proxy

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

    def attach(self, proxy: "Proxy") -> None:
        self.registry.register(RuntimeCollector(proxy))


class RuntimeCollector(Collector):
    """Counters and gauges read from the proxy's live state at scrape time."""

    def __init__(self, proxy: "Proxy") -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        proxy = self.proxy
        total = CounterMetricFamily("mcp_sidecar_connections", "Connections accepted and forwarded.",
                                    labels=["route"])
        active = GaugeMetricFamily("mcp_sidecar_connections_active", "Connections open now.", labels=["route"])
        rejected = CounterMetricFamily("mcp_sidecar_connections_rejected",
                                       "Connections accepted and closed at once, by reason.",
                                       labels=["route", "reason"])
        closed = CounterMetricFamily("mcp_sidecar_connections_closed", "Connections ended, by how they ended.",
                                     labels=["route", "end"])
        byte_count = CounterMetricFamily("mcp_sidecar_bytes", "Bytes forwarded, by direction.",
                                         labels=["route", "direction"])
        failures = CounterMetricFamily("mcp_sidecar_upstream_connect_failures",
                                       "Failed upstream connect attempts (retries included), by reason.",
                                       labels=["route", "reason"])
        retrans = CounterMetricFamily("mcp_sidecar_tcp_retransmits",
                                      "TCP segments retransmitted (TCP_INFO), by leg.", labels=["route", "leg"])
        healthy = GaugeMetricFamily("mcp_sidecar_upstream_healthy",
                                    "1 if the route's upstream passes its checks, else 0.", labels=["route"])
        listening = GaugeMetricFamily("mcp_sidecar_listeners", "Listening sockets open for the route.",
                                      labels=["route"])
        circuit = GaugeMetricFamily("mcp_sidecar_circuit_open",
                                    "1 while the route's circuit breaker is open or half-open.", labels=["route"])
        opened = CounterMetricFamily("mcp_sidecar_circuit_opened", "Times the circuit breaker opened.",
                                     labels=["route"])
        progress = CounterMetricFamily("mcp_sidecar_mcp_progress_notifications",
                                       "MCP notifications/progress seen.", labels=["route"])
        streams = GaugeMetricFamily("mcp_sidecar_mcp_streams_open",
                                    "Long-lived MCP streams open (GET event streams, subscriptions/listen).",
                                    labels=["route"])
        worst = GaugeMetricFamily("mcp_sidecar_connection_quality_worst",
                                  "The lowest 0-100 quality score among the route's open connections (100 if none).",
                                  labels=["route"])
        mcp_active = GaugeMetricFamily("mcp_active_connections", "Open connections that carried MCP messages.",
                                       labels=["route"])
        connecting = GaugeMetricFamily("mcp_sidecar_upstream_connecting",
                                       "Upstream connect attempts in flight (capped by max_connecting).",
                                       labels=["route"])
        observe_s = CounterMetricFamily("mcp_sidecar_observer_seconds",
                                        "Time spent observing the route's traffic in-line (one thread).",
                                        labels=["route"])
        memory_exhausted = CounterMetricFamily(
            "mcp_sidecar_observer_memory_exhausted",
            "Connections whose observation stopped because the worker's inspection buffers were full "
            "(observe_memory); forwarding unaffected.", labels=["route"])
        shed = CounterMetricFamily("mcp_sidecar_observer_shed",
                                   "Connections forwarded unobserved because observation was over its CPU "
                                   "budget (observe_cpu_share).", labels=["route"])
        for rt in proxy.routes:
            name = rt.config.name
            total.add_metric([name], rt.total)
            observe_s.add_metric([name], rt.observation.observe_s)
            shed.add_metric([name], rt.observation.shed)
            memory_exhausted.add_metric([name], rt.observation.memory_exhausted)
            active.add_metric([name], rt.active)
            for reason, count in sorted(rt.rejected.items()):
                rejected.add_metric([name, reason], count)
            for end, count in sorted(rt.ended.items()):
                closed.add_metric([name, end], count)
            c2u, u2c = rt.bytes_forwarded()
            byte_count.add_metric([name, DIRECTIONS[0]], c2u)
            byte_count.add_metric([name, DIRECTIONS[1]], u2c)
            for reason, count in sorted(rt.connector.failures.items()):
                failures.add_metric([name, reason], count)
            for leg in LEGS:
                retrans.add_metric([name, leg], rt.metrics.retransmits[leg])
            healthy.add_metric([name], 1 if rt.health.healthy else 0)
            listening.add_metric([name], sum(1 for l in rt.listeners if l.sock.fileno() >= 0))
            circuit.add_metric([name], 0 if rt.breaker.state == "closed" else 1)
            opened.add_metric([name], rt.breaker.opened_total)
            connecting.add_metric([name], rt.connector.connecting)
            mcp_active.add_metric([name], rt.observation.mcp_connections)
            worst.add_metric([name], rt.worst_quality())
            tracker = rt.observation.tracker
            progress.add_metric([name], tracker.progress)
            streams.add_metric([name], tracker.streams_open + rt.observation.open_streams)
        yield from (total, active, rejected, closed, byte_count, failures, retrans, healthy, listening, circuit,
                    opened, connecting, mcp_active, worst, progress, streams, observe_s, shed, memory_exhausted)
        exhausted = CounterMetricFamily(
            "mcp_sidecar_local_resource_exhausted",
            "Times this worker ran out of a local resource (descriptors, buffers, memory), by where it happened; "
            "never counted against an upstream.", labels=["resource", "where"])
        for resource in LOCAL_RESOURCES:
            for where in EXHAUSTION_PLACES:
                exhausted.add_metric([resource, where], proxy.exhaustion.counts.get((resource, where), 0))
        yield exhausted
        suppressed = CounterMetricFamily("mcp_sidecar_log_lines_suppressed",
                                         "Log lines not written because their event was over its rate limit.",
                                         labels=["event"])
        for event, count in sorted(logs.limiter.suppressed_total.items()):
            suppressed.add_metric([event], count)
        yield suppressed
        memory = GaugeMetricFamily("mcp_sidecar_observer_memory_bytes",
                                   "Bytes held by the worker's inspection buffers now (all routes).")
        memory.add_metric([], proxy.observe_memory.used)
        yield memory
        memory_limit = GaugeMetricFamily("mcp_sidecar_observer_memory_limit_bytes",
                                         "The worker's inspection buffer budget (observe_memory).")
        memory_limit.add_metric([], proxy.observe_memory.limit)
        yield memory_limit

        draining = GaugeMetricFamily("mcp_sidecar_draining", "1 while the worker drains for shutdown.")
        draining.add_metric([], 1 if proxy.draining else 0)
        yield draining
        restarts = CounterMetricFamily("mcp_sidecar_worker_restarts",
                                       "Worker processes replaced by the supervisor, by cause.", labels=["cause"])
        facts = proxy.supervisor_facts() or {}
        counts = facts.get("restarts", {})
        for cause in WORKER_RESTART_CAUSES:
            restarts.add_metric([cause], counts.get(cause, 0))
        yield restarts
        info = GaugeMetricFamily("mcp_sidecar_build_info", "Version information; the value is always 1.",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
