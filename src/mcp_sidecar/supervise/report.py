"""What a supervised worker reports with each heartbeat (and when asked): the
figures the supervisor merges into one view of all its workers.

Rules this module keeps:

* A report is plain data (it is pickled over the worker's channel): metric
  families as tuples, route statuses, the MCP activity since the previous
  report (forward/statsrelay.py), local facts.
* The MCP deltas are taken once: each report carries what happened since
  the previous one, and the supervisor applies each report once.
* Building it reads the worker's state; it changes nothing but the relays
  it empties.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import trio
from prometheus_client.core import Metric

from ..admin.history import kernel_rtt
from ..admin.status import readiness, route_statuses
from ..forward import faultcontrol
from ..forward.proxy import Proxy
from .messages import McpDelta, WorkerSnapshot

#: Families the supervisor exports itself (its own facts): a worker's copy is not merged.
SUPERVISOR_FAMILIES = frozenset(
    {
        "mcp_sidecar_worker_restarts",
        "mcp_sidecar_state_writable",
        "mcp_sidecar_state_write_failures",
        "mcp_sidecar_build_info",
    }
)


def plain_families(families: Iterable[Metric]) -> tuple[tuple[Any, ...], ...]:
    """Metric families as plain tuples: (name, type, documentation, samples),
    each sample (name, sorted label pairs, value)."""
    out = []
    for family in families:
        if family.name in SUPERVISOR_FAMILIES:
            continue
        samples = tuple((s.name, tuple(sorted(s.labels.items())), float(s.value)) for s in family.samples)
        out.append((family.name, family.type, family.documentation, samples))
    return tuple(out)


def worker_report(proxy: Proxy) -> WorkerSnapshot:
    """This worker's report (its heartbeat's payload)."""
    proxy.observe_queue.drain()  # (everything forwarded until now is in it: at_unix says so)
    deltas = []
    rtt: dict[str, dict[str, float | None]] = {}
    for rt in proxy.routes:
        observation = rt.observation
        relay = observation.relay
        outcomes, sessions, clients, ended, remote = relay.take() if relay is not None else ((), (), (), (), ())
        deltas.append(
            McpDelta(
                rt.name,
                outcomes,
                sessions,
                clients,
                ended,
                remote,
                observation.tracker.in_flight(),
                observation.request_log.as_json() if observation.request_log is not None else None,
                {
                    "progress_notifications": observation.tracker.progress,
                    "streams": observation.streams.as_json(),
                    "conformance": dict(observation.conformance),
                    "slow_client_answers": observation.slow_answers,
                    "sse_bursts": observation.sse_bursts,
                    "targets_capped": observation.targets.capped,
                    "target_limit": observation.targets.limit,
                    "mcp_connections": observation.mcp_connections,
                },
            )
        )
        rtt[rt.name] = kernel_rtt(rt.connections.values())
    now = trio.current_time()
    return WorkerSnapshot(
        os.getpid(),
        proxy.draining,
        route_statuses(proxy),
        plain_families(proxy.metrics.registry.collect()),
        tuple(readiness(proxy)),
        tuple(deltas),
        {
            "pid": os.getpid(),
            "observation_budget": proxy.observe_budget.as_json(time.perf_counter()),
            "observation_memory": proxy.observe_memory.as_json(),
            "local_exhaustion": proxy.exhaustion.as_json(now),
            "faults": faultcontrol.view(proxy.routes, proxy.config.faults_enabled),
        },
        rtt,
        time.time(),
    )
