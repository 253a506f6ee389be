"""The metric families read from the worker's live state at scrape time.

Rules this module keeps:

* A scrape reads counters the forwarding path keeps on each ``RouteState``
  (and the worker's budgets); it never walks the open connections except to
  sum their bytes and find the worst quality score (O(1) per connection).
* Families with a known label set (restart causes, local resources, connect
  failure reasons, rejection reasons, how connections end, gate results)
  list every label value from the start, at 0.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__, logs
from ..config.faults import FaultKind
from ..forward.mcpstreams import STREAM_KINDS
from ..forward.metrics import (
    CONNECT_FAILURE_REASONS,
    DIRECTIONS,
    EXHAUSTION_PLACES,
    GATE_RESULTS,
    LEGS,
    LOCAL_RESOURCES,
    REJECT_REASONS,
    WORKER_RESTART_CAUSES,
)
from ..forward.proxy import Proxy
from ..forward.state import End
from .status import RouteStatus


def _known_first(known: tuple[str, ...], seen: dict[str, int]) -> list[str]:
    """Every known label value (exported at 0 until counted), then any other seen."""
    return [*known, *sorted(k for k in seen if k not in known)]


class RuntimeCollector(Collector):
    """Counters and gauges read from the worker's live state at scrape time."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        proxy = self.proxy
        total = CounterMetricFamily("mcp_sidecar_connections", "Connections accepted and forwarded.", labels=["route"])
        active = GaugeMetricFamily("mcp_sidecar_connections_active", "Connections open now.", labels=["route"])
        rejected = CounterMetricFamily(
            "mcp_sidecar_connections_rejected",
            "Connections accepted and closed at once, by reason.",
            labels=["route", "reason"],
        )
        closed = CounterMetricFamily(
            "mcp_sidecar_connections_closed", "Connections ended, by how they ended.", labels=["route", "end"]
        )
        byte_count = CounterMetricFamily(
            "mcp_sidecar_bytes", "Bytes forwarded, by direction.", labels=["route", "direction"]
        )
        failures = CounterMetricFamily(
            "mcp_sidecar_upstream_connect_failures",
            "Failed upstream connect attempts (retries included), by reason.",
            labels=["route", "reason"],
        )
        retrans = CounterMetricFamily(
            "mcp_sidecar_tcp_retransmits", "TCP segments retransmitted (TCP_INFO), by leg.", labels=["route", "leg"]
        )
        healthy = GaugeMetricFamily(
            "mcp_sidecar_upstream_healthy", "1 if the route's upstream passes its checks, else 0.", labels=["route"]
        )
        listening = GaugeMetricFamily(
            "mcp_sidecar_listeners", "Listening sockets open for the route.", labels=["route"]
        )
        circuit = GaugeMetricFamily(
            "mcp_sidecar_circuit_open", "1 while the route's circuit breaker is open or half-open.", labels=["route"]
        )
        opened = CounterMetricFamily(
            "mcp_sidecar_circuit_opened", "Times the circuit breaker opened.", labels=["route"]
        )
        progress = CounterMetricFamily(
            "mcp_progress_notifications", "MCP notifications/progress seen.", labels=["route"]
        )
        streams = GaugeMetricFamily(
            "mcp_streams_open",
            "Long-lived MCP streams open, by kind (legacy-sse, get, listen, inspector-v2).",
            labels=["route", "kind"],
        )
        capped = CounterMetricFamily(
            "mcp_sidecar_targets_capped",
            "MCP requests whose target was labelled 'other' because the route's target_label_limit was reached.",
            labels=["route"],
        )
        worst = GaugeMetricFamily(
            "mcp_sidecar_connection_quality_worst",
            "The lowest 0-100 quality score among the route's open connections (100 if none).",
            labels=["route"],
        )
        mcp_active = GaugeMetricFamily(
            "mcp_active_connections", "Open connections that carried MCP messages.", labels=["route"]
        )
        connecting = GaugeMetricFamily(
            "mcp_sidecar_upstream_connecting",
            "Upstream connect attempts in flight (capped by max_connecting).",
            labels=["route"],
        )
        observe_s = CounterMetricFamily(
            "mcp_sidecar_observer_seconds",
            "Time spent observing the route's traffic in-line (one thread).",
            labels=["route"],
        )
        memory_exhausted = CounterMetricFamily(
            "mcp_sidecar_observer_memory_exhausted",
            "Connections whose observation stopped because the worker's inspection buffers were full "
            "(observe_memory); forwarding unaffected.",
            labels=["route"],
        )
        bugs = CounterMetricFamily(
            "mcp_sidecar_observer_bugs",
            "Observers stopped by a defect of the sidecar's own code (not the peer's bytes); "
            "forwarding unaffected. Should stay 0: report it.",
            labels=["route"],
        )
        injected = CounterMetricFamily(
            "mcp_sidecar_faults_injected",
            "Faults injected ([faults] enabled only), by kind: connections a TCP fault applied to, "
            "connections a down route refused, MCP requests a fault answered, held, dropped, cut or thinned.",
            labels=["route", "kind"],
        )
        gate = CounterMetricFamily(
            "mcp_sidecar_gate_requests",
            "Requests checked by a route's access gate, by result: admitted by cookie, bearer or header; "
            "url (the URL token exchanged for the cookie); refused as missing, invalid, malformed or too_large.",
            labels=["route", "result"],
        )
        too_large = CounterMetricFamily(
            "mcp_sidecar_observer_bodies_too_large",
            "JSON bodies larger than the observer reads (1 MiB): counted, not parsed; forwarding unaffected.",
            labels=["route"],
        )
        expiry = GaugeMetricFamily(
            "mcp_sidecar_tls_cert_expiry_timestamp_seconds",
            "When the certificate a TLS route presents stops being valid (its notAfter, unix time).",
            labels=["route"],
        )
        shed = CounterMetricFamily(
            "mcp_sidecar_observer_shed",
            "Connections forwarded unobserved because observation was over its CPU budget (observe_cpu_share).",
            labels=["route"],
        )
        now = trio.current_time()
        for rt in proxy.routes:
            name = rt.name
            st = RouteStatus.of(rt, now, proxy.started_unix)  # the figures every view shares
            total.add_metric([name], st.connections_total)
            observe_s.add_metric([name], rt.observation.observe_s)
            shed.add_metric([name], st.observer_shed)
            memory_exhausted.add_metric([name], st.observer_memory_exhausted)
            bugs.add_metric([name], rt.observation.bugs)
            too_large.add_metric([name], rt.observation.bodies_too_large)
            if st.tls_cert_expires_unix is not None:
                expiry.add_metric([name], st.tls_cert_expires_unix)
            if rt.config.settings.gate.mode != "off":
                for result in _known_first(GATE_RESULTS, rt.gate_results):
                    gate.add_metric([name, result], rt.gate_results.get(result, 0))
            active.add_metric([name], st.connections_active)
            for reason in _known_first(REJECT_REASONS, st.connections_rejected):
                rejected.add_metric([name, reason], st.connections_rejected.get(reason, 0))
            for end in _known_first(tuple(e.value for e in End), st.connections_closed):
                closed.add_metric([name, end], st.connections_closed.get(end, 0))
            byte_count.add_metric([name, DIRECTIONS[0]], st.bytes_client_to_upstream)
            byte_count.add_metric([name, DIRECTIONS[1]], st.bytes_upstream_to_client)
            for reason in _known_first(CONNECT_FAILURE_REASONS, st.upstream_connect_failures):
                failures.add_metric([name, reason], st.upstream_connect_failures.get(reason, 0))
            for leg in LEGS:
                retrans.add_metric([name, leg], rt.metrics.retransmits[leg])
            healthy.add_metric([name], 1 if st.upstream_healthy else 0)
            listening.add_metric([name], sum(1 for item in rt.listeners if item.sock.fileno() >= 0))
            circuit.add_metric([name], 0 if st.circuit["state"] in ("closed", "disabled") else 1)
            opened.add_metric([name], st.circuit["opened_total"])
            connecting.add_metric([name], rt.connector.connecting)
            mcp_active.add_metric([name], rt.observation.mcp_connections)
            worst.add_metric([name], rt.worst_quality())
            tracker = rt.observation.tracker
            progress.add_metric([name], tracker.progress)
            for kind in STREAM_KINDS:  # every kind from the start: a rate() misses no first stream
                streams.add_metric([name, kind], rt.observation.streams.open.get(kind, 0))
            capped.add_metric([name], rt.observation.targets.capped)
            if rt.faults is not None:  # ([faults] enabled: every kind from the start)
                for kind in FaultKind:
                    injected.add_metric([name, kind.value], rt.faults.injected.get(kind.value, 0))
        if proxy.config.faults_enabled:
            yield injected
        yield from (
            total,
            active,
            rejected,
            closed,
            byte_count,
            failures,
            retrans,
            healthy,
            listening,
            circuit,
            opened,
            connecting,
            mcp_active,
            worst,
            progress,
            streams,
            capped,
            observe_s,
            shed,
            memory_exhausted,
            bugs,
            too_large,
            gate,
            expiry,
        )
        exhausted = CounterMetricFamily(
            "mcp_sidecar_local_resource_exhausted",
            "Times this worker ran out of a local resource (descriptors, buffers, memory), by where it happened; "
            "never counted against an upstream.",
            labels=["resource", "where"],
        )
        for resource in LOCAL_RESOURCES:
            for where in EXHAUSTION_PLACES:
                exhausted.add_metric([resource, where], proxy.exhaustion.counts.get((resource, where), 0))
        yield exhausted
        suppressed = CounterMetricFamily(
            "mcp_sidecar_log_lines_suppressed",
            "Log lines not written because their event was over its rate limit.",
            labels=["event"],
        )
        for event, count in sorted(logs.limiter.suppressed_total.items()):
            suppressed.add_metric([event], count)
        yield suppressed
        memory = GaugeMetricFamily(
            "mcp_sidecar_observer_memory_bytes", "Bytes held by the worker's inspection buffers now (all routes)."
        )
        memory.add_metric([], proxy.observe_memory.used)
        yield memory
        memory_limit = GaugeMetricFamily(
            "mcp_sidecar_observer_memory_limit_bytes", "The worker's inspection buffer budget (observe_memory)."
        )
        memory_limit.add_metric([], proxy.observe_memory.limit)
        yield memory_limit

        draining = GaugeMetricFamily("mcp_sidecar_draining", "1 while the worker drains for shutdown.")
        draining.add_metric([], 1 if proxy.draining else 0)
        yield draining
        yield from supervision_families(proxy.supervisor_facts())


def supervision_families(facts: dict[str, Any] | None) -> Iterator[Metric]:
    """The supervisor's own figures (restarts, state writes) and the build's."""
    restarts = CounterMetricFamily(
        "mcp_sidecar_worker_restarts", "Worker processes replaced by the supervisor, by cause.", labels=["cause"]
    )
    facts = facts or {}
    counts = facts.get("restarts", {})
    for cause in WORKER_RESTART_CAUSES:
        restarts.add_metric([cause], counts.get(cause, 0))
    yield restarts
    state = facts.get("state_dir") or {}
    writable = GaugeMetricFamily(
        "mcp_sidecar_state_writable",
        "1 while the supervisor's state directory takes writes (counters, events), "
        "0 while it does not (full, read-only, I/O errors); forwarding is unaffected.",
    )
    writable.add_metric([], 1 if state.get("writable", True) else 0)
    yield writable
    write_failures = CounterMetricFamily(
        "mcp_sidecar_state_write_failures", "Writes of the supervisor's state directory that failed (retried)."
    )
    write_failures.add_metric([], state.get("write_failures", 0))
    yield write_failures
    info = GaugeMetricFamily(
        "mcp_sidecar_build_info", "Version information; the value is always 1.", labels=["version", "python"]
    )
    info.add_metric([__version__, platform.python_version()], 1)
    yield info
