"""The admin endpoint's source under a supervisor: every worker in one view
(admin/source.py's ``AdminSource``), served by the supervisor itself.

Rules this module keeps:

* It reads what the workers reported (their heartbeats, fresh when a view
  asks: ``settle``), what exited workers had counted (aggregate.py), the
  supervisor's own MCP books (central.py) and upstream checks (checks.py):
  the view survives any worker's exit, a restart and a reload.
* The probes answer from what is known (no worker is asked): ``/healthz``
  as long as the supervisor runs, ``/readyz`` from the latest reports.
* Connections are asked of the workers (each lists its own; the view adds
  its id); the tap subscribes here and the workers relay what it wants.
* ``begin_drain`` stops the whole service gracefully (as SIGTERM does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, Protocol

import trio
from prometheus_client.core import Metric

from .. import __version__
from ..admin.collector import supervision_families
from ..admin.history import RouteSample, Sampler
from ..admin.status import supervision_problems
from ..config.faults import FaultError, FaultSpec, runtime_fault
from ..config.model import ProxyConfig
from ..config.profiles import exposure_warnings
from ..config.tls import certificate_warnings
from ..forward.faultcontrol import FaultsOff
from ..forward.tap import LineSubscriber, TapHub, TapSubscriber
from ..observe.mcpstats import WINDOW_S
from .aggregate import Retired, RetiredRoutes, add_up, merge_families, merge_routes
from .central import CentralMcp
from .checks import SupervisorChecks
from .faultstore import FaultStore
from .messages import TapOn
from .report import plain_families
from .workers import Role, Worker

#: The MCP figures of a route that count up (kept from exited workers).
_CUMULATIVE_EXTRAS = ("progress_notifications", "conformance", "slow_client_answers", "sse_bursts")


class Supervised(Protocol):
    """What the view reads of its supervisor (supervisor.py)."""

    config: ProxyConfig
    workers: list[Worker]
    stopping: bool

    def facts(self) -> dict[str, Any] | None: ...

    def request_stop(self) -> None: ...

    async def refresh_reports(self) -> None: ...

    async def ask(self, worker: Worker, kind: str, args: dict[str, Any]) -> Any: ...

    def tell(self, worker: Worker, message: Any) -> None: ...

    def control_route(self, name: str, action: str) -> str | None: ...

    def set_log_level(self, level: str) -> None: ...

    fault_store: FaultStore

    def faults_view(self) -> dict[str, Any]: ...

    def fault_add(self, spec: FaultSpec) -> str | None: ...

    def fault_remove(self, route: str, name: str) -> str | None: ...

    def fault_clear(self, route: str | None) -> int | str: ...


class SupervisedView:
    """Every worker's figures in one ``AdminSource``."""

    def __init__(self, supervisor: Supervised, central: CentralMcp, checks: SupervisorChecks) -> None:
        self.supervisor = supervisor
        self.central = central
        self.checks = checks
        self.retired = Retired()
        self.retired_routes = RetiredRoutes()
        #: route -> the cumulative MCP figures of exited workers.
        self.retired_extras: dict[str, dict[str, Any]] = {}
        self.taps = TapHub([], on_change=self._taps_changed)
        self._sampler = Sampler()

    # --- what the supervisor tells it ------------------------------------------------------

    def retire(self, worker: Worker) -> None:
        """A worker that served exited: what it counted stays in the view."""
        snapshot = worker.snapshot
        if snapshot is None or not snapshot.families:
            return
        self.retired.add(snapshot.families)
        self.retired_routes.add(snapshot.routes)
        for delta in snapshot.mcp:
            kept = self.retired_extras.setdefault(delta.route, {})
            add_up(kept, {k: v for k, v in delta.extras.items() if k in _CUMULATIVE_EXTRAS})
            streams = delta.extras.get("streams") or {}
            add_up(kept, {"streams": {"ended": streams.get("ended", {})}})

    def tap_message(self) -> TapOn:
        """What a worker must relay now (sent to each one that starts serving)."""
        return TapOn(tuple(s.filter for s in self.taps.subscribers))

    def _taps_changed(self, subscribers: list[TapSubscriber | LineSubscriber]) -> None:
        message = self.tap_message()
        for worker in self._reporting():
            self.supervisor.tell(worker, message)

    # --- AdminSource ---------------------------------------------------------------------------

    @property
    def config(self) -> ProxyConfig:
        return self.supervisor.config

    @property
    def draining(self) -> bool:
        return self.supervisor.stopping

    async def settle(self) -> None:
        await self.supervisor.refresh_reports()

    def route_names(self) -> list[str]:
        return [route.name for route in self.config.routes]

    def _reporting(self) -> list[Worker]:
        """The workers that serve or drain and have reported doing so."""
        return [
            w
            for w in self.supervisor.workers
            if w.role in (Role.ACTIVE, Role.DRAINING) and w.snapshot is not None and w.snapshot.families
        ]

    def _routes(self) -> list[dict[str, Any]]:
        health = {name: h.as_json() for name, h in self.checks.routes.items()}
        reports = [w.snapshot.routes for w in self._reporting() if w.snapshot is not None]
        merged = {r["name"]: r for r in merge_routes(reports, self.retired_routes, health)}
        return [merged[name] for name in self.route_names() if name in merged]

    def status(self) -> dict[str, Any]:
        now = time.time()
        reporting = self._reporting()
        facts = self.supervisor.facts()
        reasons = self.readiness()
        first = reporting[0].snapshot.local if reporting and reporting[0].snapshot is not None else {}
        tnow = trio.current_time()
        workers = []
        for w in sorted(self.supervisor.workers, key=lambda w: w.id):
            if w.role in (Role.ACTIVE, Role.DRAINING, Role.STANDBY):
                item = w.as_json(tnow)
                if w.snapshot is not None and w.snapshot.local:
                    item.update({k: v for k, v in w.snapshot.local.items() if k != "pid"})
                workers.append(item)
        uptime = (facts or {}).get("supervisor_uptime_s", 0.0)
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": uptime,
            "started_unix": round(now - uptime, 3),
            "draining": self.draining,
            "ready": not reasons,
            "reasons": reasons,
            "warnings": exposure_warnings(self.config) + certificate_warnings(self.config),
            "problems": supervision_problems(facts),
            "faults": self.faults(),
            "supervisor": facts,
            "observation_budget": first.get("observation_budget"),
            "observation_memory": first.get("observation_memory"),
            "local_exhaustion": first.get("local_exhaustion"),
            "workers": workers,
            "routes": self._routes(),
        }

    def faults(self) -> dict[str, Any]:
        return self.supervisor.faults_view()

    def add_fault(self, table: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.config.faults_enabled:
            return 409, {"error": str(FaultsOff())}
        try:
            spec = runtime_fault(table, lambda route: self.supervisor.fault_store.names(self.config, route))
        except FaultError as exc:
            return 400, {"error": exc.said}
        refused = self.supervisor.fault_add(spec)
        if refused is not None:
            return (404 if refused.startswith("no route") else 409), {"error": refused}
        return 201, {"fault": spec.as_json(), "message": f"fault {spec.name} on route {spec.route}: {spec.describe()}"}

    def remove_fault(self, route: str, name: str) -> str | None:
        return self.supervisor.fault_remove(route, name)

    def clear_faults(self, route: str | None) -> int | str:
        return self.supervisor.fault_clear(route)

    def readiness(self) -> list[str]:
        reasons: list[str] = []
        if self.supervisor.stopping:
            reasons.append("draining: shutting down")
        serving = [w for w in self._reporting() if w.role is Role.ACTIVE]
        if not serving and not self.supervisor.stopping:
            reasons.append("no worker is serving")
        for worker in serving:
            assert worker.snapshot is not None
            reasons += [r for r in worker.snapshot.readiness if r not in reasons]
        return reasons

    def collect(self) -> Iterator[Metric]:
        reports = [w.snapshot.families for w in self._reporting() if w.snapshot is not None]
        reports.append(plain_families(self.central.metrics.registry.collect()))
        yield from merge_families(reports, self.retired)
        yield from supervision_families(self.supervisor.facts())

    def mcp(self, route: str | None) -> dict[str, Any]:
        now = time.time()
        extras: dict[str, dict[str, Any]] = {}
        limits: dict[str, Any] = {}
        for worker in self._reporting():
            assert worker.snapshot is not None
            for delta in worker.snapshot.mcp:
                add_up(extras.setdefault(delta.route, {}), delta.extras)
                limits.setdefault(delta.route, delta.extras.get("target_limit"))  # (the same in each)
        routes = []
        for name, books in self.central.routes.items():
            if route is not None and name != route:
                continue
            pending = books.pending()
            mine = extras.get(name, {})
            add_up(mine, self.retired_extras.get(name, {}))
            streams = mine.get("streams") or {"open": {}, "ended": {}}
            request_log: dict[str, Any] | None = None
            for counts in books.request_logs.values():
                request_log = add_up(request_log if request_log is not None else {}, counts)
            view: dict[str, Any] = {"route": name}
            view.update(books.stats.as_json(now, pending))
            view.update(
                {
                    "in_flight": sum(pending.values()),
                    "progress_notifications": mine.get("progress_notifications", 0) + books.tracker.progress,
                    "streams_open": sum(streams.get("open", {}).values()),
                    "streams": streams,
                    "conformance": dict(sorted((mine.get("conformance") or {}).items())),
                    "slow_client_answers": mine.get("slow_client_answers", 0),
                    "sse_bursts": mine.get("sse_bursts", 0),
                    "targets_capped": mine.get("targets_capped", 0),
                    "target_limit": limits.get(name),
                    "mcp_connections": mine.get("mcp_connections", 0),
                    "request_log": request_log,
                }
            )
            routes.append(view)
        return {
            "window_s": WINDOW_S,
            "routes": routes,
            "tap": {"subscribers": len(self.taps.subscribers), "dropped": self.taps.dropped},
        }

    async def connections(self, route: str | None, offset: int, limit: int) -> tuple[list[bytes], int]:
        parts: list[bytes] = []
        total = 0
        for worker in sorted(self._reporting(), key=lambda w: w.id):
            answer = await self.supervisor.ask(
                worker, "connections", {"route": route, "offset": 0, "limit": offset + limit}
            )
            if answer is None:
                continue
            items, count = answer
            total += count
            parts += [b'{"worker":%d,' % worker.id + item[1:] for item in items]
        return parts[offset : offset + limit], total

    async def connection(self, conn_id: int) -> dict[str, Any] | None:
        for worker in self._reporting():
            found = await self.supervisor.ask(worker, "connection", {"id": conn_id})
            if found is not None:
                return {"worker": worker.id, **found}
        return None

    def sample(self, span_s: float) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        rtt: dict[str, dict[str, float | None]] = {}
        for worker in self._reporting():
            assert worker.snapshot is not None
            for name, legs in worker.snapshot.rtt.items():
                if name not in rtt or all(v is None for v in rtt[name].values()):
                    rtt[name] = legs
        samples = []
        for route in self._routes():
            books = self.central.routes.get(route["name"])
            if books is None:
                continue
            samples.append(
                RouteSample(
                    route["name"],
                    route["connections_active"],
                    route["bytes_client_to_upstream"],
                    route["bytes_upstream_to_client"],
                    books.stats,
                    rtt.get(route["name"], {"rtt_client_ms": None, "rtt_upstream_ms": None}),
                )
            )
        return self._sampler.sample(time.time(), span_s, samples)

    def begin_drain(self) -> None:
        self.supervisor.request_stop()

    def control_route(self, name: str, action: str) -> str | None:
        return self.supervisor.control_route(name, action)

    def set_log_level(self, level: str) -> None:
        self.supervisor.set_log_level(level)
