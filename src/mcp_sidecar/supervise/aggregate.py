"""One view of several workers: their metric families and route figures
merged, and what exited workers had counted kept.

Rules this module keeps:

* Counters and histograms add up: the serving and draining workers' latest
  reports, plus the last report of every worker that exited (``retire``),
  so a Prometheus counter never goes down across a crash, a restart or a
  reload (what a crashed worker counted after its last report, at most a
  heartbeat's worth, is lost).
* Gauges add up too (connections open, streams, memory), but for the
  families that say the same thing in every worker (``MAX``/``MIN``:
  listening sockets, a circuit open, the worst quality, a start time).
* Route figures (``RouteStatus``) add up the same way; the upstream's health
  is the supervisor's (it runs the checks).
* Plain data in, plain data out: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import Metric

from ..admin.status import RouteStatus

#: Gauges every worker reports the same of (or the view wants the extreme of).
MAX_GAUGES = frozenset(
    {
        "mcp_sidecar_listeners",
        "mcp_sidecar_circuit_open",
        "mcp_sidecar_draining",
        "mcp_sidecar_tls_cert_expiry_timestamp_seconds",
        "mcp_sidecar_upstream_healthy",
        "process_max_fds",
        "python_info",
        "mcp_sidecar_build_info",
    }
)
MIN_GAUGES = frozenset({"mcp_sidecar_connection_quality_worst", "process_start_time_seconds"})
#: (family, sample, labels) -> value
Series = dict[tuple[str, str, tuple[tuple[str, str], ...]], float]


def _summed(family_type: str) -> bool:
    return family_type in ("counter", "histogram", "summary")


class Retired:
    """What the workers that exited had counted: their counters' last values."""

    def __init__(self) -> None:
        self.series: Series = {}
        #: family name -> (type, documentation), for families only exited workers had.
        self.families: dict[str, tuple[str, str]] = {}

    def add(self, families: Iterable[tuple[Any, ...]]) -> None:
        for name, family_type, documentation, samples in families:
            if not _summed(family_type):
                continue
            self.families.setdefault(name, (family_type, documentation))
            for sample, labels, value in samples:
                key = (name, sample, labels)
                self.series[key] = self.series.get(key, 0.0) + value


def merge_families(reports: Sequence[Iterable[tuple[Any, ...]]], retired: Retired) -> list[Metric]:
    """One family per name: the reports' samples merged by the rules above."""
    kinds: dict[str, tuple[str, str]] = dict(retired.families)
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in reports:
        for name, family_type, documentation, samples in families:
            kinds.setdefault(name, (family_type, documentation))
            table = values.setdefault(name, {})
            for sample, labels, value in samples:
                key = (sample, labels)
                if key not in table:
                    table[key] = value
                elif name in MAX_GAUGES:
                    table[key] = max(table[key], value)
                elif name in MIN_GAUGES:
                    table[key] = min(table[key], value)
                else:
                    table[key] = table[key] + value
    for (name, sample, labels), value in retired.series.items():
        table = values.setdefault(name, {})
        table[(sample, labels)] = table.get((sample, labels), 0.0) + value
    out = []
    for name, (family_type, documentation) in kinds.items():
        metric = Metric(name, documentation, family_type)
        for (sample, labels), value in sorted(values.get(name, {}).items(), key=_order):
            metric.add_sample(sample, dict(labels), value)
        out.append(metric)
    return out


def _order(item: tuple[tuple[str, tuple[tuple[str, str], ...]], float]) -> tuple[Any, ...]:
    """Samples in a stable order, a histogram's buckets by their bound."""
    (sample, labels), _ = item
    le = dict(labels).get("le")
    bound = float("inf") if le == "+Inf" else float(le) if le is not None else 0.0
    return (sample.endswith("_count"), sample.endswith("_sum"), tuple(k for k in labels if k[0] != "le"), bound)


def add_up(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """``more`` added into ``into``: numbers summed, mappings merged key by
    key, anything else kept from ``into`` (or taken if absent)."""
    for key, value in more.items():
        have = into.get(key)
        if isinstance(value, dict):
            into[key] = add_up(dict(have) if isinstance(have, dict) else {}, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(have, (int, float)):
            into[key] = have + value
        elif key not in into:
            into[key] = value
    return into


# --- route figures -------------------------------------------------------------------------


_SUMMED_DICTS = (
    "connections_rejected",
    "connections_closed",
    "upstream_connect_failures",
    "upstream_connections",
    "upstream_failures",
    "gate_results",
)
_SUMMED_TOTALS = ("connections_total", "bytes_client_to_upstream", "bytes_upstream_to_client", "observer_shed")


class RetiredRoutes:
    """What exited workers counted per route (their last report)."""

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, Any]] = {}

    def add(self, routes: Iterable[RouteStatus]) -> None:
        for route in routes:
            kept = self.totals.setdefault(route.name, {})
            for name in _SUMMED_TOTALS:
                kept[name] = kept.get(name, 0) + getattr(route, name)
            kept["observer_seconds"] = kept.get("observer_seconds", 0.0) + route.observer_seconds
            kept["connections_peak"] = max(kept.get("connections_peak", 0), route.connections_peak)
            kept["observer_memory_exhausted"] = (
                kept.get("observer_memory_exhausted", 0) + route.observer_memory_exhausted
            )
            for name in _SUMMED_DICTS:
                table = kept.setdefault(name, {})
                for key, n in getattr(route, name).items():
                    table[key] = table.get(key, 0) + n


_SEVERITY = {"closed": 0, "disabled": 0, "half_open": 1, "open": 2}
_STATE_SEVERITY = {"serving": 0, "degraded": 1, "draining": 2, "disabled": 3, "down": 3, "not_listening": 4}


def merge_routes(
    reports: Sequence[Sequence[RouteStatus]], retired: RetiredRoutes, health: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each route's ``/api/status`` document, summed over the workers; its
    health the supervisor's; its state and circuit the worst a worker has."""
    by_name: dict[str, list[RouteStatus]] = {}
    for routes in reports:
        for route in routes:
            by_name.setdefault(route.name, []).append(route)
    out = []
    for name, routes in by_name.items():
        first = routes[0].as_json()
        kept = retired.totals.get(name, {})
        merged = dict(first)
        merged["connections_active"] = sum(r.connections_active for r in routes)
        # Each worker's peak counts every worker's connections (the shared counts): the highest is the route's.
        merged["connections_peak"] = max([r.connections_peak for r in routes] + [kept.get("connections_peak", 0)])
        for field in _SUMMED_TOTALS:
            merged[field] = sum(getattr(r, field) for r in routes) + kept.get(field, 0)
        merged["observer_seconds"] = round(
            sum(r.observer_seconds for r in routes) + kept.get("observer_seconds", 0.0), 6
        )
        merged["observer_memory_exhausted"] = sum(r.observer_memory_exhausted for r in routes) + kept.get(
            "observer_memory_exhausted", 0
        )
        for field in _SUMMED_DICTS:
            table: dict[str, int] = dict(kept.get(field, {}))
            for r in routes:
                for key, n in getattr(r, field).items():
                    table[key] = table.get(key, 0) + n
            merged[field] = table
        worst = max(routes, key=lambda r: _STATE_SEVERITY.get(r.state, 0))
        merged["state"], merged["since_unix"], merged["reason"] = worst.state, worst.since_unix, worst.reason
        circuit = max(routes, key=lambda r: _SEVERITY.get(str(r.circuit.get("state")), 0)).circuit
        merged["circuit"] = {**circuit, "opened_total": sum(int(r.circuit.get("opened_total", 0)) for r in routes)}
        if name in health:
            merged["health"] = health[name]
            merged["upstream_healthy"] = health[name]["healthy"]
        out.append(merged)
    return out
