"""The origins a browser uses for a route, and a gated route's URLs.

Rules this module keeps:

* A route's origins are its bound addresses; a wildcard (``0.0.0.0``,
  ``::``) stands for this host's non-loopback addresses of its family.
* ``gate_urls`` carry the gate's token: they are for the operator who asks
  (``proxyctl url``, through the uid-checked control socket, or the banner
  on a terminal), never for a collected log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..config.addresses import HostPort, bracket
from ..config.model import RouteConfig
from .gate import TOKEN_PARAM
from .netinfo import nonloopback_addresses


class Listening(Protocol):
    """Where a route listens: a bound listener, or what a running proxy reports."""

    @property
    def route(self) -> RouteConfig: ...

    @property
    def address(self) -> HostPort: ...


def route_origins(route: RouteConfig, listeners: Sequence[Listening]) -> list[str]:
    """The origins a browser would use for a route."""
    scheme = "https" if route.settings.tls.cert else "http"
    hosts: list[tuple[str, int]] = []
    for listener in listeners:
        if listener.route.name != route.name:
            continue
        host, port = listener.address.host, listener.address.port
        if host in ("0.0.0.0", "::"):
            hosts += [(h, port) for h in nonloopback_addresses() if (":" in h) == (host == "::")]
        else:
            hosts.append((host, port))
    return [f"{scheme}://{bracket(h)}:{p}" for h, p in dict.fromkeys(hosts)]


def gate_urls(route: RouteConfig, listeners: Sequence[Listening], path: str = "/") -> list[str]:
    """The URLs that let a browser through a gated route (empty if it is not gated)."""
    token = route.settings.gate.token
    if route.settings.gate.mode != "token" or token is None:
        return []
    separator = "&" if "?" in path else "?"
    return [f"{origin}{path}{separator}{TOKEN_PARAM}={token}" for origin in route_origins(route, listeners)]
