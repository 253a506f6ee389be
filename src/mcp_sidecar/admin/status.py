"""Health and status, as every view shows it, built here once: the worker's
(the admin API, the heartbeat to the supervisor, the dashboard) and the
supervisor's (``proxyctl status``).

Rules this module keeps:

* Read-only: it reads the ``Proxy`` and its ``RouteState``s, never changes
  them.
* ``readiness`` gives reasons in words (an empty list means ready), so a
  probe's 503 says what is wrong.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .. import __version__
from ..config.model import ProxyConfig
from ..config.profiles import exposure_warnings
from ..config.tls import certificate_warnings
from ..forward import faultcontrol
from ..forward.proxy import Proxy
from ..forward.state import RouteControl, RouteState
from ..health.breaker import BreakerState
from ..net.listeners import BoundListener
from ..observe.mcpstats import WINDOW_S


def readiness(proxy: Proxy) -> list[str]:
    """Why the worker is not ready; empty when it is."""
    reasons = []
    if proxy.draining:
        reasons.append("draining: shutting down")
    reasons += proxy.exhaustion.reasons(trio.current_time())
    for rt in proxy.routes:
        name = rt.config.name
        if not rt.listeners or any(item.sock.fileno() < 0 for item in rt.listeners):
            reasons.append(f"route {name}: not listening")
        if rt.unusable is not None:
            reasons.append(f"route {name}: {rt.unusable}")
        if rt.operator is not RouteControl.ENABLED and rt.config.settings.required:
            reasons.append(f"route {name}: {rt.operator} by an operator")
        health = rt.health
        if not rt.config.settings.required:
            continue
        if health.enabled and not health.healthy:
            if health.state is None:
                reasons.append(f"route {name}: upstream {rt.config.upstream_text} not checked yet")
            else:
                reasons.append(f"route {name}: upstream {rt.config.upstream_text} is down ({health.last_result})")
        if rt.breaker.state is BreakerState.OPEN:
            reasons.append(
                f"route {name}: circuit open ({rt.breaker.last_reason}), retry in "
                f"{rt.breaker.retry_after_s(trio.current_time())} s"
            )
    return reasons


@dataclass(frozen=True, slots=True)
class RouteStatus:
    """One route's status as every view shows it: the admin API, the
    heartbeat a worker sends its supervisor (pickled as it is), the
    supervisor's ``proxyctl status`` and the metrics collector.  Built in one
    place, ``of``; each view shows the part it needs."""

    name: str
    listen: tuple[str, ...]
    upstream: str
    required: bool
    upstream_healthy: bool
    upstream_state: str
    #: The route as an operator sees it: serving, degraded (circuit half-open),
    #: down (upstream down or circuit open), draining, not_listening; since
    #: when, and why when it is not serving.
    state: str
    since_unix: float
    reason: str | None
    health: dict[str, Any]
    circuit: dict[str, Any]
    #: Connections made to each upstream address, and attempts that failed, since start.
    upstream_connections: dict[str, int]
    upstream_failures: dict[str, int]
    connections_active: int
    connections_total: int
    #: The most open at once since start (every worker's), and the route's max_connections.
    connections_peak: int
    connections_limit: int
    connections_rejected: dict[str, int]
    connections_closed: dict[str, int]
    upstream_connect_failures: dict[str, int]
    #: The access gate's results by kind (missing and invalid were answered 401).
    gate_results: dict[str, int]
    gate: bool
    bytes_client_to_upstream: int
    bytes_upstream_to_client: int
    observer_seconds: float
    observer_shed: int
    observer_memory_exhausted: int
    #: The end of validity of the route's certificate (unix time), on a TLS route.
    tls_cert_expires_unix: float | None = None

    @classmethod
    def of(cls, rt: RouteState, now: float, started_unix: float = 0.0) -> RouteStatus:
        c2u, u2c = rt.bytes_forwarded()
        state, since, reason = _route_state(rt, now)
        return cls(
            name=rt.name,
            listen=tuple(str(item.address) for item in rt.listeners),
            upstream=rt.config.upstream_text,
            required=rt.config.settings.required,
            upstream_healthy=rt.health.healthy,
            upstream_state=rt.health.state_name,
            state=state,
            since_unix=since or started_unix,
            reason=reason,
            health=rt.health.as_json(),
            circuit=rt.breaker.as_json(now),
            upstream_connections=dict(rt.connector.connected_to),
            upstream_failures=dict(rt.connector.failed_to),
            connections_active=rt.active,
            connections_total=rt.total,
            connections_peak=rt.peak,
            connections_limit=rt.config.settings.max_connections,
            connections_rejected={str(k): v for k, v in rt.rejected.items()},
            connections_closed={str(k): v for k, v in rt.ended.items()},
            upstream_connect_failures=dict(rt.connector.failures),
            gate_results=dict(rt.gate_results),
            gate=rt.config.settings.gate.on,
            bytes_client_to_upstream=c2u,
            bytes_upstream_to_client=u2c,
            observer_seconds=round(rt.observation.observe_s, 6),
            observer_shed=rt.observation.shed,
            observer_memory_exhausted=rt.observation.memory_exhausted,
            tls_cert_expires_unix=rt.config.tls_material.cert_not_after_unix,
        )

    def as_json(self) -> dict[str, Any]:
        """The worker API's view (``/api/status``)."""
        return {
            "name": self.name,
            "listen": list(self.listen),
            "upstream": self.upstream,
            "state": self.state,
            "since_unix": self.since_unix,
            "reason": self.reason,
            "upstream_healthy": self.upstream_healthy,
            "health": self.health,
            "circuit": self.circuit,
            "upstream_connections": self.upstream_connections,
            "upstream_failures": self.upstream_failures,
            "required": self.required,
            "connections_active": self.connections_active,
            "connections_total": self.connections_total,
            "connections_peak": self.connections_peak,
            "connections_limit": self.connections_limit,
            "connections_rejected": self.connections_rejected,
            "connections_closed": self.connections_closed,
            "upstream_connect_failures": self.upstream_connect_failures,
            "gate": self.gate,
            "gate_results": self.gate_results,
            "bytes_client_to_upstream": self.bytes_client_to_upstream,
            "bytes_upstream_to_client": self.bytes_upstream_to_client,
            "observer_seconds": self.observer_seconds,
            "observer_shed": self.observer_shed,
            "observer_memory_exhausted": self.observer_memory_exhausted,
            "tls_cert_expires_unix": self.tls_cert_expires_unix,
        }


def _route_state(rt: RouteState, now: float) -> tuple[str, float | None, str | None]:
    """(state, since when (unix, None: since start), why) of one route."""
    health, breaker = rt.health, rt.breaker
    if not rt.listeners or any(item.sock.fileno() < 0 for item in rt.listeners):
        return "not_listening", None, "not listening"
    if rt.draining:
        return "draining", None, "draining: shutting down"
    if rt.operator is not RouteControl.ENABLED:
        return (
            str(rt.operator),
            rt.operator_since_unix,
            f"{rt.operator} by an operator (proxyctl route {rt.name} enable)",
        )
    if rt.unusable is not None:
        return "down", None, rt.unusable
    if health.enabled and health.state is False:
        return "down", health.since_unix, f"upstream {rt.config.upstream_text} is down ({health.last_result})"
    if breaker.state is BreakerState.OPEN:
        return (
            "down",
            breaker.opened_unix,
            (f"circuit open ({breaker.last_reason}), retry in {breaker.retry_after_s(now)} s"),
        )
    if breaker.state is BreakerState.HALF_OPEN:
        return "degraded", breaker.opened_unix, f"circuit half-open after {breaker.last_reason}"
    if health.enabled and health.state is None:
        return "serving", None, None
    return "serving", health.since_unix, None


def route_statuses(proxy: Proxy) -> tuple[RouteStatus, ...]:
    now = trio.current_time()
    return tuple(RouteStatus.of(rt, now, proxy.started_unix) for rt in proxy.routes)


def status(proxy: Proxy) -> dict[str, Any]:
    """The worker's ``/api/status``."""
    now = time.time()
    routes = [r.as_json() for r in route_statuses(proxy)]
    reasons = readiness(proxy)
    facts = proxy.supervisor_facts()
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(now - proxy.started_unix, 3),
        "started_unix": proxy.started_unix,
        "draining": proxy.draining,
        "ready": not reasons,
        "reasons": reasons,
        "warnings": exposure_warnings(proxy.config) + certificate_warnings(proxy.config),
        # Problems that do not stop forwarding (readiness is not affected).
        "problems": supervision_problems(facts),
        "faults": faultcontrol.view(proxy.routes, proxy.config.faults_enabled),
        "supervisor": facts,
        "observation_budget": proxy.observe_budget.as_json(time.perf_counter()),
        "observation_memory": proxy.observe_memory.as_json(),
        "local_exhaustion": proxy.exhaustion.as_json(trio.current_time()),
        "routes": routes,
    }


# --- the supervisor's view (proxyctl status): the routes as its workers report them ----------


def supervised_routes(
    config: ProxyConfig,
    listeners: list[BoundListener],
    live: Sequence[RouteStatus],
    reporting: Sequence[Sequence[RouteStatus]],
    retired_totals: dict[str, int],
) -> list[dict[str, Any]]:
    """Each configured route as ``proxyctl status`` shows it: its settings
    (what ``proxyctl check`` needs), the active worker's view of its
    upstream (``live``), and its connections summed over every worker that
    serves or drains (``reporting``) and the ones that exited."""
    by_name = {r.name: r for r in live}
    active: dict[str, int] = {}
    total = dict(retired_totals)
    for routes in reporting:
        for r in routes:
            active[r.name] = active.get(r.name, 0) + r.connections_active
            total[r.name] = total.get(r.name, 0) + r.connections_total
    out = []
    for route in config.routes:
        seen = by_name.get(route.name)
        upstream_tls = route.upstream_tls
        out.append(
            {
                "name": route.name,
                "listen": [str(listener.address) for listener in listeners if listener.route.name == route.name],
                "upstream": route.upstream_text,
                "upstreams": [str(u) for u in route.upstreams],
                "health_check": route.health.check,
                "health_path": route.health.path,
                "tls": route.tls.enabled,
                "tls_cert_expires_unix": route.tls_material.cert_not_after_unix,
                "gate": route.gate.on,
                "upstream_tls": {"ca": upstream_tls.ca, "name": upstream_tls.name, "verify": upstream_tls.verify}
                if upstream_tls.enabled
                else None,
                "upstream_healthy": seen.upstream_healthy if seen else None,
                "circuit": seen.circuit["state"] if seen else "closed",
                "upstream_state": seen.upstream_state if seen else "unknown",
                "connections_active": active.get(route.name, 0),
                "connections_total": total.get(route.name, 0),
            }
        )
    return out


def supervisor_problems(
    config: ProxyConfig, routes: list[dict[str, Any]], *, stopping: bool, serving: bool, consecutive_failures: int
) -> list[str]:
    """What ``proxyctl status`` lists as problems (not healthy: exit 1)."""
    problems = []
    if stopping:
        problems.append("stopping: draining open connections")
    elif not serving:
        problems.append("no worker is serving")
    if consecutive_failures >= config.supervisor.alert_threshold:
        problems.append(f"crash loop: {consecutive_failures} consecutive worker failures")
    problems += [
        f"route {r['name']}: upstream {r['upstream']} is down" for r in routes if r["upstream_state"] == "down"
    ]
    return problems


def supervision_problems(facts: dict[str, Any] | None) -> list[str]:
    """What the supervisor's facts say is wrong without affecting forwarding."""
    state = (facts or {}).get("state_dir") or {}
    if state.get("writable", True):
        return []
    return [
        f"the supervisor's state directory does not take writes ({state.get('error')}): counters and events "
        "are kept in memory and saved when it does again"
    ]


def mcp_view(proxy: Proxy, now: float, route: str | None = None) -> dict[str, Any]:
    """The worker's ``/api/mcp``: per route, per method and per transport
    over the sliding window, and the sessions open (ids hashed)."""
    routes = []
    for rt in proxy.routes:
        if route is not None and rt.name != route:
            continue
        observation = rt.observation
        in_flight = observation.tracker.in_flight()
        view: dict[str, Any] = {"route": rt.name}
        view.update(observation.stats.as_json(now, in_flight))
        view.update(
            {
                "in_flight": sum(in_flight.values()),
                "progress_notifications": observation.tracker.progress,
                "streams_open": observation.streams.total_open,
                "streams": observation.streams.as_json(),
                "conformance": dict(sorted(observation.conformance.items())),
                "slow_client_answers": observation.slow_answers,
                "sse_bursts": observation.sse_bursts,
                "targets_capped": observation.targets.capped,
                "target_limit": observation.targets.limit,
                "mcp_connections": observation.mcp_connections,
                "request_log": observation.request_log.as_json() if observation.request_log is not None else None,
            }
        )
        routes.append(view)
    taps = proxy.taps
    return {
        "window_s": WINDOW_S,
        "routes": routes,
        "tap": {"subscribers": len(taps.subscribers), "dropped": taps.dropped},
    }
