"""Predefined routes (``--profile``) and what exposing them risks.

Rules this module keeps:

* A profile is plain route tables, validated like a file's ``[[route]]``.
* A profile whose upstream hands out a credential to whoever loads its page
  (``PROFILE_RISKS``) does not listen beyond loopback unless the operator
  says, loudly, that the network is trusted; then every status repeats the
  warning (``exposure_warnings``).
"""

from __future__ import annotations

from typing import Any

from .addresses import NONLOOPBACK, beyond_loopback
from .model import ProxyConfig, RouteConfig
from ..errors import ConfigError

PROFILES: dict[str, list[dict[str, Any]]] = {
    # The MCP Inspector v1 pair: web UI and its proxy server.  Listening on the
    # host's non-loopback addresses leaves the loopback ports to the Inspector.
    "inspector-v1": [
        {"name": "inspector-ui", "listen": f"{NONLOOPBACK}:6274", "upstream": "localhost:6274"},
        {"name": "inspector-proxy", "listen": f"{NONLOOPBACK}:6277", "upstream": "localhost:6277"},
    ],
    # Inspector v2: one web port (UI and /api) and a sandbox origin.
    "inspector-v2": [
        {"name": "inspector-ui", "listen": f"{NONLOOPBACK}:6274", "upstream": "localhost:6274"},
        {"name": "inspector-sandbox", "listen": f"{NONLOOPBACK}:6275", "upstream": "localhost:6275"},
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
    "inspector-v2": "reach it through an SSH tunnel to loopback "
                    "(ssh -L 6274:localhost:6274 -L 6275:localhost:6275 THIS_HOST)",
}
EXPOSE_OPTION = "--dangerously-expose-unprotected"


def refuse_exposure(profile: str, routes: list[RouteConfig]) -> None:
    """A guarded profile listening beyond loopback: refuse, naming the risk."""
    risk = PROFILE_RISKS.get(profile)
    if risk is None:
        return
    names = {table["name"] for table in PROFILES[profile]}
    exposed = [str(a) for r in routes if r.name in names for a in r.listen if beyond_loopback(a.host)]
    if exposed:
        raise ConfigError(
            f"--profile {profile}", "",
            f"refusing to listen beyond loopback ({', '.join(exposed)}): {risk}; "
            f"{PROFILE_ALTERNATIVES[profile]}, or pass {EXPOSE_OPTION} on a trusted network")


def exposure_warnings(config: ProxyConfig) -> list[str]:
    """What a guarded profile exposes unprotected (the operator allowed it)."""
    risk = PROFILE_RISKS.get(config.profile or "")
    if risk is None or not config.dangerously_expose_unprotected:
        return []
    names = {table["name"] for table in PROFILES[config.profile or ""]}
    return [f"route {r.name} listens beyond loopback without protection ({EXPOSE_OPTION}): {risk}"
            for r in config.routes if r.name in names and any(beyond_loopback(a.host) for a in r.listen)]


