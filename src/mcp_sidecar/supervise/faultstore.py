"""The operators' faults, kept by the supervisor for every worker.

Rules this module keeps:

* Runtime faults live here, with their expiry as a wall-clock time, so a
  worker started later (a crash's replacement, a reload's new worker) gets
  the same set (``message``); a fault past its ttl is dropped here too.
* A configured fault an operator removed (or cleared) is *suppressed*
  until the next reload, which starts again from the configuration.
* Refusals are words (None: done), as the control socket and the API say them.
"""

from __future__ import annotations

from typing import Any

from ..config.faults import MAX_FAULTS_PER_ROUTE, FaultSpec
from ..config.model import ProxyConfig
from ..forward.faultcontrol import FaultsOff
from .messages import RuntimeFaults


class FaultStore:
    def __init__(self) -> None:
        #: (route, name) -> (spec, expiry as unix time or None)
        self.runtime: dict[tuple[str, str], tuple[FaultSpec, float | None]] = {}
        #: Configured faults taken out by an operator: (route, name).
        self.suppressed: set[tuple[str, str]] = set()

    def _expire(self, wall: float) -> None:
        for key, (_, expires) in list(self.runtime.items()):
            if expires is not None and expires <= wall:
                del self.runtime[key]

    def add(self, config: ProxyConfig, spec: FaultSpec, wall: float) -> str | None:
        if not config.faults_enabled:
            return str(FaultsOff())
        route = next((r for r in config.routes if r.name == spec.route), None)
        if route is None:
            return f"no route {spec.route!r} (routes: {', '.join(r.name for r in config.routes)})"
        self._expire(wall)
        names = {n for (r, n) in self.runtime if r == spec.route} | {
            f.name for f in route.faults if (route.name, f.name) not in self.suppressed
        }
        if spec.name not in names and len(names) >= MAX_FAULTS_PER_ROUTE:
            return f"route {spec.route} has {MAX_FAULTS_PER_ROUTE} faults already"
        self.runtime[(spec.route, spec.name)] = (spec, None if spec.ttl_s is None else wall + spec.ttl_s)
        if any(f.name == spec.name for f in route.faults):
            self.suppressed.add((spec.route, spec.name))  # (replaced by the operator's)
        return None

    def names(self, config: ProxyConfig, route: str) -> set[str]:
        """The fault names taken on ``route``: its runtime faults' and its configured ones'."""
        taken = {n for (r, n) in self.runtime if r == route}
        for r in config.routes:
            if r.name == route:
                taken |= {f.name for f in r.faults}
        return taken

    def remove(self, config: ProxyConfig, route: str, name: str, wall: float) -> str | None:
        if not config.faults_enabled:
            return str(FaultsOff())
        self._expire(wall)
        if self.runtime.pop((route, name), None) is not None:
            return None
        configured = next((r for r in config.routes if r.name == route), None)
        configured_here = configured is not None and any(f.name == name for f in configured.faults)
        if configured_here and (route, name) not in self.suppressed:
            self.suppressed.add((route, name))
            return None
        return f"no fault {name!r} on route {route!r}"

    def clear(self, config: ProxyConfig, route: str | None) -> int | str:
        if not config.faults_enabled:
            return str(FaultsOff())
        if route is not None and all(r.name != route for r in config.routes):
            return f"no route {route!r} (routes: {', '.join(r.name for r in config.routes)})"
        n = 0
        for key in [k for k in self.runtime if route is None or k[0] == route]:
            del self.runtime[key]
            n += 1
        for r in config.routes:
            if route is None or r.name == route:
                for f in r.faults:
                    if (r.name, f.name) not in self.suppressed:
                        self.suppressed.add((r.name, f.name))
                        n += 1
        return n

    def reloaded(self, config: ProxyConfig) -> None:
        """A reload: configured faults start again from the file; runtime ones of gone routes go."""
        self.suppressed.clear()
        names = {r.name for r in config.routes}
        self.runtime = {k: v for k, v in self.runtime.items() if k[0] in names}
        if not config.faults_enabled:
            self.runtime.clear()

    def message(self, wall: float) -> RuntimeFaults:
        self._expire(wall)
        return RuntimeFaults(tuple(self.runtime.values()), tuple(sorted(self.suppressed)))

    @property
    def empty(self) -> bool:
        return not self.runtime and not self.suppressed


def merge_views(enabled: bool, views: list[dict[str, Any]]) -> dict[str, Any]:
    """``/api/faults`` over the workers: each fault once, its injections summed."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    injected: dict[str, dict[str, int]] = {}
    for view in views:
        for fault in view.get("faults", ()):
            key = (fault["route"], fault["name"])
            have = merged.get(key)
            if have is None:
                merged[key] = dict(fault)
            else:
                have["injected"] += fault["injected"]
                if fault.get("remaining") is not None and have.get("remaining") is not None:
                    have["remaining"] = min(have["remaining"], fault["remaining"])
        for route, kinds in view.get("injected", {}).items():
            table = injected.setdefault(route, {})
            for kind, n in kinds.items():
                table[kind] = table.get(kind, 0) + n
    return {"enabled": enabled, "faults": list(merged.values()), "injected": injected}
