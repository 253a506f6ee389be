"""Predefined routes (``--profile``) and what exposing them risks.

Rules this module keeps:

* A profile is plain route tables, validated like a file's ``[[route]]``.
* A profile's browser-facing routes that listen beyond loopback are behind
  the access gate by default (``PROFILE_GATED``).
* A profile whose upstream hands out a credential to whoever loads its page
  (``PROFILE_RISKS``) never listens beyond loopback without the gate unless
  the operator says, loudly, that the network is trusted; then every status
  repeats the warning (``exposure_warnings``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import ConfigError
from .addresses import NONLOOPBACK, beyond_loopback, is_loopback_host
from .model import ProxyConfig, RouteConfig

PROFILES: dict[str, list[dict[str, Any]]] = {
    # The MCP Inspector v1 pair: web UI and its proxy server.  Listening on the
    # host's non-loopback addresses leaves the loopback ports to the Inspector.
    "inspector-v1": [
        {"name": "inspector-ui", "listen": f"{NONLOOPBACK}:6274", "upstream": "localhost:6274"},
        {"name": "inspector-proxy", "listen": f"{NONLOOPBACK}:6277", "upstream": "localhost:6277"},
    ],
    # Inspector v2: one origin for the UI and its /api (CLIENT_PORT), the
    # sandbox origin (MCP_SANDBOX_PORT) and the MCP Apps origin (MCP_APP_ORIGIN_PORT).
    "inspector-v2": [
        {"name": "inspector-ui", "listen": f"{NONLOOPBACK}:6274", "upstream": "localhost:6274"},
        {"name": "inspector-sandbox", "listen": f"{NONLOOPBACK}:6275", "upstream": "localhost:6275"},
        {"name": "inspector-apps", "listen": f"{NONLOOPBACK}:6278", "upstream": "localhost:6278"},
    ],
}
DEFAULT_PROFILE = "inspector-v1"
#: Profiles whose upstream hands out a credential to whoever loads its page:
#: they do not listen beyond loopback unless the operator says, loudly, that
#: the network is trusted (``dangerously_expose_unprotected``).  Inspector v2
#: writes its API token into the ``index.html`` it serves to anyone and
#: accepts API calls without an ``Origin``; the token starts processes on
#: the host.  (v1 never puts its token in the page, and its proxy checks the
#: token and ``Origin``.)
PROFILE_RISKS: dict[str, str] = {
    "inspector-v2": "Inspector v2 serves its API token in its page to anyone who loads it, "
    "and that token runs commands on this host",
}
#: What to do instead, per guarded profile.
PROFILE_ALTERNATIVES: dict[str, str] = {
    "inspector-v2": "keep the access gate (the default), or reach it through an SSH tunnel to loopback "
    "(ssh -L 6274:localhost:6274 -L 6275:localhost:6275 -L 6278:localhost:6278 THIS_HOST)",
}
EXPOSE_OPTION = "--dangerously-expose-unprotected"
#: The routes of each profile that get the gate when they listen beyond loopback.
PROFILE_GATED: dict[str, tuple[str, ...]] = {
    "inspector-v1": ("inspector-ui",),
    # The cookie is sent to the sandbox and apps origins too: same host, same site.
    "inspector-v2": ("inspector-ui", "inspector-sandbox", "inspector-apps"),
}
#: Profile routes whose upstream checks a credential of its own.
PROFILE_SELF_PROTECTED: dict[str, dict[str, str]] = {
    "inspector-v1": {
        "inspector-proxy": "the Inspector's own session token (MCP_PROXY_AUTH_TOKEN; readable on the path without TLS)"
    },
}


def refuse_exposure(profile: str, routes: list[RouteConfig]) -> None:
    """A guarded profile listening beyond loopback without the access gate
    (the configuration turned it off): refuse, naming the risk."""
    risk = PROFILE_RISKS.get(profile)
    if risk is None:
        return
    names = {table["name"] for table in PROFILES[profile]}
    exposed = [
        str(a)
        for r in routes
        if r.name in names and r.settings.gate.mode == "off"
        for a in r.listen
        if beyond_loopback(a.host)
    ]
    if exposed:
        raise ConfigError(
            f"--profile {profile}",
            "",
            f"refusing to listen beyond loopback without the access gate ({', '.join(exposed)}): {risk}; "
            f"{PROFILE_ALTERNATIVES[profile]}, or pass {EXPOSE_OPTION} on a trusted network",
        )


def exposure_warnings(config: ProxyConfig) -> list[str]:
    """What is exposed beyond loopback with nothing controlling who gets in:
    a guarded profile the operator let out, and any route in front of a
    loopback-only upstream without the gate, client certificates or an
    allow-list.  Server-only TLS encrypts the way; it lets anyone in, so it
    is no access control."""
    warnings = []
    risk = PROFILE_RISKS.get(config.profile or "")
    guarded: set[str] = set()
    if risk is not None and config.dangerously_expose_unprotected:
        guarded = {table["name"] for table in PROFILES[config.profile or ""]}
        warnings += [
            f"route {r.name} listens beyond loopback without protection ({EXPOSE_OPTION}): {risk}"
            for r in config.routes
            if r.name in guarded and _exposed(r) and not access_controls(r, config.profile)
        ]
    for route in config.routes:
        if route.name in guarded or not _exposed(route) or access_controls(route, config.profile):
            continue
        if all(is_loopback_host(u.host) for u in route.upstreams):
            exposed = ", ".join(str(a) for a in route.listen if beyond_loopback(a.host))
            tls_only = "; its TLS encrypts the way but lets anyone in" if route.settings.tls.cert is not None else ""
            warnings.append(
                f"route {route.name} listens on {exposed}, beyond loopback, in front of "
                f"{route.upstream_text} (loopback only), and nothing controls who connects{tls_only}: "
                'set gate = "token", tls_client_ca (client certificates) or allow'
            )
    return warnings


def _exposed(route: RouteConfig) -> bool:
    return any(beyond_loopback(a.host) for a in route.listen)


def access_controls(route: RouteConfig, profile: str | None = None) -> list[str]:
    """What decides who may use a route (server-only TLS does not)."""
    return _protections(route, profile, encryption=False)


def protections(route: RouteConfig, profile: str | None = None) -> list[str]:
    """What protects a route, encryption included (for the banner)."""
    return _protections(route, profile, encryption=True)


def _protections(route: RouteConfig, profile: str | None, *, encryption: bool) -> list[str]:
    s = route.settings
    out = []
    own = PROFILE_SELF_PROTECTED.get(profile or "", {}).get(route.name)
    if own is not None:
        out.append(own)
    if s.protected_by:
        out.append(s.protected_by)
    if s.tls.cert is not None and s.tls.client_ca:
        out.append("TLS with client certificates" if encryption else "client certificates")
    elif s.tls.cert is not None and encryption:
        out.append("TLS")
    if s.gate.mode == "token":
        out.append("the access gate (token)")
    if s.allow:
        out.append("allow " + ", ".join(s.allow))
    return out


def exposure_notices(config: ProxyConfig) -> list[str]:
    """What protects each route that listens beyond loopback (a route with
    encryption only is warned about instead: ``exposure_warnings``)."""
    return [
        f"route {r.name} is protected by {', '.join(protections(r, config.profile))}"
        for r in config.routes
        if _exposed(r) and access_controls(r, config.profile)
    ]


def gate_by_default(profile: str, routes: list[RouteConfig], explicit: bool) -> list[RouteConfig]:
    """An Inspector profile listening beyond loopback puts its browser page
    behind the gate, unless the configuration chose a gate setting itself.
    (Inspector v1's proxy port is left to the Inspector's own session token:
    its page calls it cross-origin, without cookies.)"""
    gated = PROFILE_GATED.get(profile, ())
    if explicit or not gated:
        return routes
    return [
        replace(r, settings=replace(r.settings, gate=replace(r.settings.gate, mode="token")))
        if r.name in gated and _exposed(r) and r.settings.gate.mode == "off"
        else r
        for r in routes
    ]
