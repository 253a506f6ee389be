"""The admin endpoint's routes, declared once.

The router (server.py), the index page (``GET /``) and the endpoint list in
docs/cli.md all come from ``ENDPOINTS`` (a test holds the docs to it).

Rules this module keeps:

* A ``GET`` route answers ``HEAD`` too; any other method gets ``405`` with
  ``Allow``; an unknown path ``404`` with the list of paths.
* ``guarded`` routes (the tap, which shows message contents, and anything
  that changes state) need the admin token and are refused from another
  origin (server.py says how).
* A path ending in ``/{id}`` takes one path parameter.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route: method, path, what it answers, the ``AdminServer`` method
    that answers it, and whether it is guarded."""

    method: str
    path: str
    #: Its query parameters, as the docs show them (``?route=NAME``).
    query: str
    summary: str
    handler: str
    guarded: bool = False

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/healthz", "", "liveness: 200 while the event loop answers", "_healthz"),
    Endpoint("GET", "/readyz", "", "readiness: 200, or 503 with the reasons as JSON", "_readyz"),
    Endpoint("GET", "/metrics", "", "Prometheus text, or OpenMetrics if asked for", "_metrics"),
    Endpoint("GET", "/api/status", "", "version, pid, uptime, supervisor facts, routes", "_status"),
    Endpoint(
        "GET",
        "/api/connections",
        "?limit=N&offset=M&route=NAME",
        "every open connection (kernel TCP_INFO included), a page at a time",
        "_connections",
    ),
    Endpoint("GET", "/api/connections/{id}", "", "one open connection", "_connection"),
    Endpoint("GET", "/api/mcp", "?route=NAME", "per route and method: rates, errors, latency, sessions", "_mcp"),
    Endpoint("GET", "/api/history", "?route=NAME", "the last minutes of figures, one point per interval", "_history"),
    Endpoint("GET", "/api/config", "", "the effective configuration (secrets named, not shown)", "_config"),
    Endpoint(
        "GET",
        "/api/tap",
        "?route=R&method=M&target=T&max_bytes=B&limit=N&duration=S",
        "a live stream of MCP messages, one JSON line each (proxyctl tap, proxyctl record)",
        "_tap",
        guarded=True,
    ),
    Endpoint("GET", "/dashboard", "", "the operator's page (its assets under /dashboard/)", "_asset"),
    Endpoint("GET", "/", "", "this list", "_index"),
    Endpoint("POST", "/api/drain", "", "stop accepting and drain", "_drain", guarded=True),
    Endpoint(
        "POST",
        "/api/routes/{id}",
        "?action=drain|disable|enable",
        "take one route out (drain: open connections finish; disable: closed) or back in",
        "_route_control",
        guarded=True,
    ),
    Endpoint(
        "POST",
        "/api/log-level",
        "?level=debug|info|warning|error",
        "the running tree's log level",
        "_log_level",
        guarded=True,
    ),
    Endpoint("GET", "/api/faults", "", "the faults injected now, and how often each was", "_faults"),
    Endpoint(
        "POST", "/api/faults", "", "inject a fault (a JSON object: route, kind, settings)", "_fault_add", guarded=True
    ),
    Endpoint("DELETE", "/api/faults", "?route=NAME", "remove every fault (of one route)", "_fault_clear", guarded=True),
    Endpoint("DELETE", "/api/faults/{id}", "?route=NAME", "remove one fault, by name", "_fault_remove", guarded=True),
)


def _by_path(endpoints: tuple[Endpoint, ...]) -> dict[str, tuple[Endpoint, ...]]:
    out: dict[str, tuple[Endpoint, ...]] = {}
    for e in endpoints:
        out[e.path] = (*out.get(e.path, ()), e)
    return out


_BY_PATH = _by_path(tuple(e for e in ENDPOINTS if not e.path.endswith("/{id}")))
_WITH_PARAMETER = tuple(
    (path[: -len("{id}")], endpoints)
    for path, endpoints in _by_path(tuple(e for e in ENDPOINTS if e.path.endswith("/{id}"))).items()
)


def route(path: str, assets: Container[str]) -> tuple[tuple[Endpoint, ...], str | None]:
    """The endpoints for ``path`` (one per method) and its path parameter,
    if any; the dashboard's files (``assets``) are answered by the
    dashboard's route."""
    endpoints = _BY_PATH.get(path)
    if endpoints is not None:
        return endpoints, None
    if path in assets:
        return _BY_PATH["/dashboard"], None
    for prefix, endpoints in _WITH_PARAMETER:
        if path.startswith(prefix) and "/" not in path[len(prefix) :]:
            return endpoints, path[len(prefix) :]
    return (), None


def index() -> list[str]:
    """The index page's list: ``METHOD /path``, GET ones by their path alone."""
    return [e.path if e.method == "GET" else e.label for e in ENDPOINTS if e.path != "/"]
