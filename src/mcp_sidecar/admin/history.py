"""A short in-memory history of the worker's figures (``/api/history``,
the dashboard's charts).

Rules this module keeps:

* ``History`` is a bounded ring of columns (one value per tick per series,
  oldest first, at most ``length`` of each); a series that appears later
  (a method first called after start) is padded with ``None`` so every
  column lines up with ``t``.  It never reads a clock: ``record`` is given
  the time and the values.
* ``Sampler`` turns the routes' counters into one tick's values: rates are
  differences of totals over the interval (never per-connection walks but
  the bytes of open connections and a bounded TCP_INFO read), latency
  quantiles come from the same MCP windows ``/api/mcp`` shows
  (observe/mcpstats.py), restricted to the interval.
* Bounded: routes are configured, methods are bounded labels (at most
  ``MAX_METHOD_SERIES`` per route), ticks at most ``length``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..forward.proxy import Proxy
from ..net.tcpinfo import read_tcp_info
from ..observe.mcpstats import McpStats, latency_summary

#: Open connections whose kernel RTT a tick reads (the newest ones).
RTT_SAMPLE_CONNECTIONS = 64
MAX_METHOD_SERIES = 40
ROUTE_SERIES = (
    "connections",
    "bytes_in_per_s",
    "bytes_out_per_s",
    "mcp_rps",
    "mcp_errors_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "rtt_client_ms",
    "rtt_upstream_ms",
)
METHOD_SERIES = ("rps", "errors_per_s", "p50_ms", "p95_ms", "p99_ms")


class History:
    """Columns of values, one per tick, at most ``length`` ticks."""

    def __init__(self, interval_s: float, length: int) -> None:
        self.interval_s = interval_s
        self.length = length
        self.t: deque[float] = deque(maxlen=length)
        #: route -> series -> column
        self.routes: dict[str, dict[str, deque[Any]]] = {}
        #: route -> method -> series -> column
        self.methods: dict[str, dict[str, dict[str, deque[Any]]]] = {}

    def _column(self) -> deque[Any]:
        column: deque[Any] = deque([None] * (len(self.t) - 1), maxlen=self.length)
        return column

    def record(
        self, at: float, routes: dict[str, dict[str, Any]], methods: dict[str, dict[str, dict[str, Any]]]
    ) -> None:
        """One tick: ``routes[route][series]`` and ``methods[route][method][series]``."""
        self.t.append(at)
        for route, values in routes.items():
            table = self.routes.setdefault(route, {})
            for series in ROUTE_SERIES:
                column = table.get(series)
                if column is None:
                    column = table[series] = self._column()
                column.append(values.get(series))
        for route, by_method in methods.items():
            table_m = self.methods.setdefault(route, {})
            for method, values in by_method.items():
                series_table = table_m.get(method)
                if series_table is None:
                    if len(table_m) >= MAX_METHOD_SERIES:
                        continue
                    series_table = table_m[method] = {s: self._column() for s in METHOD_SERIES}
                for series in METHOD_SERIES:
                    series_table[series].append(values.get(series))
        # Series that got no value this tick (a route gone by reload, a method not called).
        for table in self.routes.values():
            for column in table.values():
                if len(column) < len(self.t):
                    column.append(None)
        for table_m in self.methods.values():
            for series_table in table_m.values():
                for column in series_table.values():
                    if len(column) < len(self.t):
                        column.append(None)

    def as_json(self, route: str | None = None) -> dict[str, Any]:
        names = [r for r in self.routes if route is None or r == route]
        return {
            "interval_s": self.interval_s,
            "length": self.length,
            "points": len(self.t),
            "t": list(self.t),
            "routes": {r: {s: list(c) for s, c in self.routes[r].items()} for r in names},
            "methods": {
                r: {m: {s: list(c) for s, c in t.items()} for m, t in self.methods.get(r, {}).items()} for r in names
            },
        }


@dataclass(frozen=True, slots=True)
class RouteSample:
    """What one route's tick is computed from: totals (turned into rates by
    ``Sampler``), the MCP windows, the kernel RTT of its newest connections."""

    name: str
    active: int
    bytes_in: int
    bytes_out: int
    stats: McpStats
    rtt: dict[str, float | None]


def proxy_samples(proxy: Proxy) -> list[RouteSample]:
    """One worker's routes, read now."""
    out = []
    for rt in proxy.routes:
        c2u, u2c = rt.bytes_forwarded()
        out.append(RouteSample(rt.name, rt.active, c2u, u2c, rt.observation.stats, kernel_rtt(rt.connections.values())))
    return out


class Sampler:
    """Turns route samples into one tick's values (the previous totals kept
    to turn them into rates)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int, int, int, int]] = {}

    def sample(
        self, now: float, span_s: float, samples: list[RouteSample]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        routes: dict[str, dict[str, Any]] = {}
        methods: dict[str, dict[str, Any]] = {}
        for route in samples:
            stats = route.stats
            requests = sum(s.requests for s in stats.methods.values())
            failed = sum(s.requests - s.outcomes.get("ok", 0) for s in stats.methods.values())
            last = self._last.get(route.name)
            self._last[route.name] = (now, route.bytes_in, route.bytes_out, requests, failed)
            values: dict[str, Any] = {"connections": route.active}
            if last is not None and now > last[0]:
                dt = now - last[0]
                values["bytes_in_per_s"] = round((route.bytes_in - last[1]) / dt, 1)
                values["bytes_out_per_s"] = round((route.bytes_out - last[2]) / dt, 1)
                values["mcp_rps"] = round((requests - last[3]) / dt, 3)
                values["mcp_errors_per_s"] = round((failed - last[4]) / dt, 3)
            latencies: list[float] = []
            for method_stats in stats.methods.values():
                latencies += method_stats.window(now, span_s)[2]
            values.update(latency_summary(latencies))
            values.update(route.rtt)
            routes[route.name] = values
            methods[route.name] = stats.interval(now, span_s)
        return routes, methods


def kernel_rtt(connections: Any) -> dict[str, float | None]:
    """The median kernel RTT of each leg over the newest open connections."""
    newest = list(connections)[-RTT_SAMPLE_CONNECTIONS:]
    out: dict[str, float | None] = {}
    for leg in ("client", "upstream"):
        rtts = []
        for conn in newest:
            sock = conn.csock if leg == "client" else conn.usock
            if sock is None or sock.fileno() < 0:
                continue
            info = read_tcp_info(sock)
            if info is not None and info.rtt_s > 0:
                rtts.append(info.rtt_s)
        rtts.sort()
        out[f"rtt_{leg}_ms"] = round(rtts[len(rtts) // 2] * 1000, 3) if rtts else None
    return out
