"""The worker's health and status, as every view shows it (the admin API,
the heartbeat to the supervisor, the dashboard).

Rules this module keeps:

* Read-only: it reads the ``Proxy`` and its ``RouteState``s, never changes
  them.
* ``readiness`` gives reasons in words (an empty list means ready), so a
  probe's 503 says what is wrong.
"""

from __future__ import annotations

import os
import time
from typing import Any

import trio

from .. import __version__
from ..config.profiles import exposure_warnings
from ..forward.proxy import Proxy


def readiness(proxy: Proxy) -> list[str]:
    """Why the worker is not ready; empty when it is."""
    reasons = []
    if proxy.draining:
        reasons.append("draining: shutting down")
    reasons += proxy.exhaustion.reasons(trio.current_time())
    for rt in proxy.routes:
        name = rt.config.name
        if not rt.listeners or any(l.sock.fileno() < 0 for l in rt.listeners):
            reasons.append(f"route {name}: not listening")
        health = rt.health
        if not rt.config.settings.required:
            continue
        if health.enabled and not health.healthy:
            if health.state is None:
                reasons.append(f"route {name}: upstream {rt.config.upstream_text} not checked yet")
            else:
                reasons.append(f"route {name}: upstream {rt.config.upstream_text} is down ({health.last_result})")
        if rt.breaker.state == "open":
            reasons.append(f"route {name}: circuit open ({rt.breaker.last_reason}), retry in "
                           f"{rt.breaker.retry_after_s(trio.current_time())} s")
    return reasons


def status(proxy: Proxy) -> dict[str, Any]:
    now = time.time()
    routes = []
    for rt in proxy.routes:
        c2u, u2c = rt.bytes_forwarded()
        routes.append({
            "name": rt.config.name,
            "listen": [str(l.address) for l in rt.listeners],
            "upstream": rt.config.upstream_text,
            "upstream_healthy": rt.health.healthy,
            "health": rt.health.as_json(),
            "circuit": rt.breaker.as_json(trio.current_time()),
            "upstream_connections": dict(rt.connector.connected_to),
            "required": rt.config.settings.required,
            "connections_active": rt.active,
            "connections_total": rt.total,
            "connections_rejected": dict(rt.rejected),
            "connections_closed": dict(rt.ended),
            "upstream_connect_failures": dict(rt.connector.failures),
            "bytes_client_to_upstream": c2u,
            "bytes_upstream_to_client": u2c,
            "observer_seconds": round(rt.observation.observe_s, 6),
            "observer_shed": rt.observation.shed,
            "observer_memory_exhausted": rt.observation.memory_exhausted,
        })
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(now - proxy.started_unix, 3),
        "started_unix": proxy.started_unix,
        "draining": proxy.draining,
        "ready": not readiness(proxy),
        "warnings": exposure_warnings(proxy.config),
        "supervisor": proxy.supervisor_facts(),
        "observation_budget": proxy.observe_budget.as_json(time.perf_counter()),
        "observation_memory": proxy.observe_memory.as_json(),
        "local_exhaustion": proxy.exhaustion.as_json(trio.current_time()),
        "routes": routes,
    }


