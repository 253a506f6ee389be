"""Who may ask the admin endpoint what (sans-io: request headers in, a
refusal or None out).

Rules this module keeps:

* Every request must name this endpoint in its ``Host``: an IP literal,
  ``localhost``, or a name in ``[admin] hosts`` -- a page whose name was
  re-pointed at 127.0.0.1 (DNS rebinding) names its own host and is
  refused (``421``), so it cannot read the API.  A request without ``Host``
  (HTTP/1.0) passes: no browser sends one.
* Requests that change state, and the tap (it shows message contents), need
  ``Authorization: Bearer <admin token>`` (configured, or generated at start
  and kept for proxyctl in the state directory), compared in constant time,
  and are refused when a browser says they come from another origin
  (``Origin`` not this endpoint, ``Sec-Fetch-Site`` ``cross-site`` or
  ``same-site``): a cross-site ``POST`` cannot drain the worker.
  ``[admin] open_on_loopback = true`` waives the token (never the origin
  check) while the endpoint is on loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import urllib.parse
from typing import NamedTuple

from ..config.model import AdminConfig


class Refusal(NamedTuple):
    status: int
    error: str
    headers: tuple[tuple[str, str], ...] = ()


MISDIRECTED = Refusal(
    421,
    "this admin endpoint answers requests for its IP addresses, localhost and the "
    "names in [admin] hosts only (a page on another name, DNS rebinding, gets nothing)",
)
NO_TOKEN_CONFIGURED = Refusal(
    403,
    "state-changing requests and the tap need admin.token (or MCP_SIDECAR_ADMIN_TOKEN; "
    "proxyctl run generates one), or [admin] open_on_loopback = true on loopback",
)
BAD_TOKEN = Refusal(401, "a valid bearer token is required", (("www-authenticate", "Bearer"),))
OTHER_ORIGIN = Refusal(403, "a request from another origin may not change state or read the tap")


class AdminAccess:
    """The checks for one admin endpoint, bound to ``host:port``."""

    def __init__(self, config: AdminConfig, host: str, port: int) -> None:
        self.token = config.token
        #: The token is waived: asked for, and the endpoint is on loopback.
        self.open = config.open_on_loopback and ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        #: Names a request's Host may carry besides IP literals.
        self.host_names = frozenset({"localhost", *config.hosts})
        self.port = port

    def misdirected(self, host: str | None) -> Refusal | None:
        """A ``Host`` naming something else than this endpoint: 421."""
        if host is None:
            return None
        name = host.strip().lower()
        if name.startswith("["):
            name = name[1 : name.find("]")] if "]" in name else name
        elif name.count(":") == 1:
            name = name.rsplit(":", 1)[0]
        name = name.rstrip(".")
        try:
            ipaddress.ip_address(name.split("%", 1)[0])
            return None
        except ValueError:
            pass
        return None if name in self.host_names else MISDIRECTED

    def cross_origin(self, headers: dict[str, str]) -> Refusal | None:
        """A browser's request from another origin: 403 (no CSRF)."""
        fetch_site = headers.get("sec-fetch-site", "").strip().lower()
        if fetch_site in ("cross-site", "same-site"):
            return Refusal(403, f"a {fetch_site} request may not change state or read the tap")
        origin = headers.get("origin")
        if origin is None:
            return None
        parsed = urllib.parse.urlsplit(origin.strip())
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError:
            return OTHER_ORIGIN
        if (
            parsed.scheme in ("http", "https")
            and parsed.hostname is not None
            and self.misdirected(parsed.hostname) is None
            and port == self.port
        ):
            return None
        return OTHER_ORIGIN

    def unauthorized(self, authorization: str | None) -> Refusal | None:
        """No valid bearer token where one is needed: 401 (or 403 if none is configured)."""
        if self.open:
            return None
        if self.token is None:
            return NO_TOKEN_CONFIGURED
        scheme, _, offered = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), self.token.encode()):
            return None
        return BAD_TOKEN
