"""What ``proxyctl run`` prints once every listener is bound.

One line per route (name, bound addresses, upstream), then, for the
Inspector profiles, the URL to open and the Inspector settings needed for
the UI to work through the sidecar: the Inspector v1 serves only browsers
whose ``Origin`` is in ``ALLOWED_ORIGINS`` (default ``http://localhost:6274``)
and its UI looks for the proxy server on its own hostname plus
``MCP_PROXY_PORT``, which must be the exposed proxy port.
"""

from __future__ import annotations

import socket

from ..config.addresses import bracket
from ..config.model import ProxyConfig
from ..config.profiles import exposure_warnings
from ..net.listeners import BoundListener


def admin_lines(admin: socket.socket | None) -> list[str]:
    if admin is None:
        return []
    host, port = admin.getsockname()[:2]
    base = f"http://{bracket(host)}:{port}"
    return [f"admin {base}/  (/healthz /readyz /metrics /api/status /api/connections)"]


def route_lines(config: ProxyConfig, listeners: list[BoundListener]) -> list[str]:
    width = max(len(route.name) for route in config.routes)
    lines = []
    for route in config.routes:
        bound = ", ".join(str(l.address) for l in listeners if l.route.name == route.name)
        lines.append(f"route {route.name:<{width}}  {bound} -> {route.upstream_text}")
    return lines


def warning_lines(config: ProxyConfig) -> list[str]:
    """What is exposed without protection because the operator said so."""
    return [f"WARNING: {warning}" for warning in exposure_warnings(config)]


def inspector_lines(config: ProxyConfig, listeners: list[BoundListener]) -> list[str]:
    def bound(name: str) -> list[BoundListener]:
        return [l for l in listeners if l.route.name == name]

    profile = config.profile
    ui = next((r for r in config.routes if r.name == "inspector-ui"), None)
    if profile not in ("inspector-v1", "inspector-v2") or ui is None:
        return []
    ui_origins = [f"http://{bracket(l.address.host)}:{l.address.port}" for l in bound("inspector-ui")]
    if profile == "inspector-v2":
        lines = ["Inspector v2 through the sidecar:"]
        lines += [f"  open:  {origin}/" for origin in ui_origins]
        ports = sorted({l.address.port for l in bound("inspector-sandbox")})
        if ports:
            lines.append(f"  the sandbox port {', '.join(map(str, ports))} is forwarded as well")
        return lines
    proxy_listeners = bound("inspector-proxy")
    proxy_port = proxy_listeners[0].address.port if proxy_listeners else 6277
    allowed = ",".join([f"http://localhost:{ui.upstream.port}", *ui_origins])
    lines = [
        "Inspector v1 through the sidecar:",
        f"  start it with:  ALLOWED_ORIGINS={allowed} npx @modelcontextprotocol/inspector",
        "                  (add http://NAME:PORT for any other host name you browse to)",
    ]
    for origin in ui_origins:
        lines.append(
            f"  then open:      {origin}/?MCP_PROXY_PORT={proxy_port}"
            "&MCP_PROXY_AUTH_TOKEN=<the token the Inspector printed>"
        )
    return lines
