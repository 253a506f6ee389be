"""The worker's faults: installed from the configuration, changed at run
time (the admin API, ``proxyctl fault``, the supervisor's messages).

Rules this module keeps:

* With ``[faults] enabled = false`` no route has a fault book and every
  change is refused (``FaultsOff``): a production sidecar cannot be made to
  inject a fault, not even through the API.
* Configured faults are the configuration's: a reload replaces them.
  Runtime faults are the operator's: in a supervised tree the supervisor
  keeps them (with their expiry as a wall-clock time) and gives every
  worker, the ones started later too, the whole set (``apply_runtime``);
  ``count`` is then counted per worker.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from ..config.faults import FaultSpec
from ..faults.book import FaultBook, FaultLimit, FaultSource
from ..faults.legacy import LegacyStreams
from .state import RouteState


class FaultsOff(ValueError):
    """Fault injection is off in this configuration."""

    def __init__(self) -> None:
        super().__init__("fault injection is off: set [faults] enabled = true in the configuration and reload")


class NoSuchFault(LookupError):
    pass


def install(routes: list[RouteState], enabled: bool) -> None:
    """A fault book per route (when enabled), with its configured faults."""
    if not enabled:
        return
    try:
        now = trio.current_time()
    except RuntimeError:  # (built before trio runs: the ttl counts from trio's start)
        now = 0.0
    for rt in routes:
        rt.faults = FaultBook(rt.name)
        rt.legacy_streams = LegacyStreams()
        for spec in rt.config.faults:
            rt.faults.add(spec, now, FaultSource.CONFIG)


def _book(routes: list[RouteState], route: str) -> FaultBook:
    rt = next((r for r in routes if r.name == route), None)
    if rt is None:
        raise NoSuchFault(f"no route {route!r} (routes: {', '.join(r.name for r in routes)})")
    if rt.faults is None:
        raise FaultsOff()
    return rt.faults


def add(routes: list[RouteState], spec: FaultSpec) -> None:
    """Add (or replace, by name) a runtime fault; FaultsOff, NoSuchFault, FaultLimit."""
    _book(routes, spec.route).add(spec, trio.current_time(), FaultSource.RUNTIME)


def remove(routes: list[RouteState], route: str, name: str) -> None:
    if not _book(routes, route).remove(name):
        raise NoSuchFault(f"no fault {name!r} on route {route!r}")


def clear(routes: list[RouteState], route: str | None) -> int:
    """Remove every fault (of one route, or all): how many there were."""
    if route is not None:
        return _book(routes, route).clear()
    if any(rt.faults is None for rt in routes):
        raise FaultsOff()
    return sum(rt.faults.clear() for rt in routes if rt.faults is not None)


def apply_runtime(
    routes: list[RouteState],
    faults: tuple[tuple[FaultSpec, float | None], ...],
    suppressed: tuple[tuple[str, str], ...] = (),
) -> None:
    """The supervisor's whole desired state: the worker's runtime faults
    become exactly ``faults`` (spec, expiry as unix time), its configured
    ones all but those an operator took out (``suppressed``)."""
    now, wall = trio.current_time(), time.time()
    out = set(suppressed)
    for rt in routes:
        book = rt.faults
        if book is None:
            continue
        wanted = {spec.name: (spec, expires) for spec, expires in faults if spec.route == rt.name}
        for fault in book.active(now):
            name = fault.spec.name
            if (fault.source is FaultSource.RUNTIME and name not in wanted) or (
                fault.source is FaultSource.CONFIG and (rt.name, name) in out and name not in wanted
            ):
                book.remove(name)
        have = {f.spec.name: f for f in book.active(now)}
        for spec in rt.config.faults:  # (a configured fault no longer taken out is back)
            absent = spec.name not in have and spec.name not in wanted and spec.name not in book.spent
            if absent and (rt.name, spec.name) not in out:
                try:
                    have[spec.name] = book.add(spec, now, FaultSource.CONFIG)
                except FaultLimit:
                    continue
        for name, (spec, expires) in wanted.items():
            current = have.get(name)
            if current is not None and current.spec == spec and current.source is FaultSource.RUNTIME:
                continue  # (kept with its count and injections)
            if expires is not None and expires <= wall:
                continue
            try:
                fault = book.add(spec, now, FaultSource.RUNTIME)
            except FaultLimit:
                continue
            if expires is not None:
                fault.expires_at = now + (expires - wall)


def view(routes: list[RouteState], enabled: bool) -> dict[str, Any]:
    """``/api/faults`` (and ``faults`` in ``/api/status``)."""
    now = trio.current_time()
    active = [f for rt in routes if rt.faults is not None for f in rt.faults.as_json(now)]
    injected: dict[str, dict[str, int]] = {
        rt.name: dict(rt.faults.injected) for rt in routes if rt.faults is not None and rt.faults.injected
    }
    return {"enabled": enabled, "faults": active, "injected": injected}


__all__ = ["FaultLimit", "FaultsOff", "NoSuchFault", "add", "apply_runtime", "clear", "install", "remove", "view"]
