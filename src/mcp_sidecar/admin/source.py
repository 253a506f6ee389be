"""Where the admin endpoint reads what it shows: one worker in this process
(``LocalSource``), or the supervisor's merged view of all its workers
(``supervise/view.py``).

Rules this module keeps:

* ``AdminSource`` is everything the admin endpoint (server.py) and its
  history read or do; both sources give the same documents, so the API,
  the dashboard, ``proxyctl top`` and the tests cannot tell them apart.
* Read-only, but for ``begin_drain`` and the tap's subscriptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

import trio
from prometheus_client.core import Metric

from .. import logs
from ..config.faults import FaultError, runtime_fault
from ..config.model import ProxyConfig
from ..forward import faultcontrol
from ..forward.proxy import Proxy
from ..forward.state import OPERATOR_ACTIONS, RouteControl
from ..forward.tap import TapHub
from .collector import RuntimeCollector
from .history import Sampler, proxy_samples
from .status import mcp_view, readiness, status

#: While a page of connections is built, a scheduler checkpoint this often.
ITEMS_PER_CHECKPOINT = 32


class AdminSource(Protocol):
    """What the admin endpoint reads (and the two things it may change)."""

    taps: TapHub

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def draining(self) -> bool: ...

    async def settle(self) -> None:
        """Bring what the next read shows up to date (the probes do without)."""
        ...

    def route_names(self) -> list[str]: ...

    def status(self) -> dict[str, Any]:
        """``/api/status``."""
        ...

    def readiness(self) -> list[str]:
        """Why not ready (``/readyz``); empty when ready."""
        ...

    def collect(self) -> Iterable[Metric]:
        """Every metric family (``/metrics``)."""
        ...

    def mcp(self, route: str | None) -> dict[str, Any]:
        """``/api/mcp``."""
        ...

    async def connections(self, route: str | None, offset: int, limit: int) -> tuple[list[bytes], int]:
        """A page of the open connections, each one encoded JSON, and how many are open."""
        ...

    async def connection(self, conn_id: int) -> dict[str, Any] | None: ...

    def sample(self, span_s: float) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """One history tick's values (history.py's ``Sampler``)."""
        ...

    def begin_drain(self) -> None: ...

    def control_route(self, name: str, action: str) -> str | None:
        """An operator's ``drain``, ``disable`` or ``enable`` of a route: None
        when done, else why not (no such route)."""
        ...

    def set_log_level(self, level: str) -> None: ...

    def faults(self) -> dict[str, Any]:
        """``/api/faults``: enabled, each fault active and what it injected."""
        ...

    def add_fault(self, table: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Inject a fault (its keys as parse_fault reads them): (HTTP status, answer)."""
        ...

    def remove_fault(self, route: str, name: str) -> str | None:
        """None when removed, else why not."""
        ...

    def clear_faults(self, route: str | None) -> int | str:
        """How many were removed, or why none could be."""
        ...


class LocalSource:
    """One worker, in this process (``--no-supervise``, and the tests'
    in-process proxies)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.taps = proxy.taps
        self._sampler = Sampler()
        proxy.metrics.registry.register(RuntimeCollector(proxy))

    @property
    def draining(self) -> bool:
        return self.proxy.draining

    async def settle(self) -> None:
        self.proxy.observe_queue.drain()

    def route_names(self) -> list[str]:
        return [rt.name for rt in self.proxy.routes]

    def status(self) -> dict[str, Any]:
        self.proxy.observe_queue.drain()  # (every view: up to the last byte forwarded)
        return status(self.proxy)

    def readiness(self) -> list[str]:
        self.proxy.observe_queue.drain()  # (every view: up to the last byte forwarded)
        return readiness(self.proxy)

    def collect(self) -> Iterable[Metric]:
        self.proxy.observe_queue.drain()  # (every view: up to the last byte forwarded)
        return self.proxy.metrics.registry.collect()

    def mcp(self, route: str | None) -> dict[str, Any]:
        self.proxy.observe_queue.drain()  # (every view: up to the last byte forwarded)
        return mcp_view(self.proxy, trio.current_time(), route)

    async def connections(self, route: str | None, offset: int, limit: int) -> tuple[list[bytes], int]:
        self.proxy.observe_queue.drain()
        conns = [
            c for rt in self.proxy.routes if route is None or rt.config.name == route for c in rt.connections.values()
        ]
        parts = []
        for i, conn in enumerate(conns[offset : offset + limit]):
            if i % ITEMS_PER_CHECKPOINT == ITEMS_PER_CHECKPOINT - 1:
                await trio.lowlevel.checkpoint()
            if conn.end is None:  # still open after the checkpoints
                parts.append(json.dumps(conn.as_json(trio.current_time()), separators=(",", ":")).encode())
        return parts, len(conns)

    async def connection(self, conn_id: int) -> dict[str, Any] | None:
        self.proxy.observe_queue.drain()
        found = self.proxy.connection(conn_id)
        return None if found is None else found[1].as_json(trio.current_time())

    def sample(self, span_s: float) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        self.proxy.observe_queue.drain()  # (every view: up to the last byte forwarded)
        return self._sampler.sample(trio.current_time(), span_s, proxy_samples(self.proxy))

    def begin_drain(self) -> None:
        self.proxy.begin_drain()

    def control_route(self, name: str, action: str) -> str | None:
        if not self.proxy.control_route(name, RouteControl(OPERATOR_ACTIONS[action])):
            return f"no route {name!r} (routes: {', '.join(self.route_names())})"
        return None

    def set_log_level(self, level: str) -> None:
        logs.set_level(level)

    def faults(self) -> dict[str, Any]:
        return faultcontrol.view(self.proxy.routes, self.config.faults_enabled)

    def add_fault(self, table: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.config.faults_enabled:
            return 409, {"error": str(faultcontrol.FaultsOff())}
        try:
            spec = runtime_fault(table, self._fault_names)
        except FaultError as exc:
            return 400, {"error": exc.said}
        try:
            faultcontrol.add(self.proxy.routes, spec)
        except faultcontrol.NoSuchFault as exc:
            return 404, {"error": str(exc)}
        except faultcontrol.FaultLimit as exc:
            return 409, {"error": str(exc)}
        return 201, {"fault": spec.as_json(), "message": f"fault {spec.name} on route {spec.route}: {spec.describe()}"}

    def _fault_names(self, route: str) -> set[str]:
        return {f["name"] for f in self.faults()["faults"] if f["route"] == route}

    def remove_fault(self, route: str, name: str) -> str | None:
        try:
            faultcontrol.remove(self.proxy.routes, route, name)
        except (faultcontrol.NoSuchFault, faultcontrol.FaultsOff) as exc:
            return str(exc)
        return None

    def clear_faults(self, route: str | None) -> int | str:
        try:
            return faultcontrol.clear(self.proxy.routes, route)
        except (faultcontrol.NoSuchFault, faultcontrol.FaultsOff) as exc:
            return str(exc)
