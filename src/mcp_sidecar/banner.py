"""What ``proxyctl run`` prints once every listener is bound.

One line per route (name, bound addresses, upstream), then, for the
Inspector profiles, the URL to open and the Inspector settings needed for
the UI to work through the sidecar: the Inspector v1 serves only browsers
whose ``Origin`` is in ``ALLOWED_ORIGINS`` (default ``http://localhost:6274``)
and its UI looks for the proxy server on its own hostname plus
``MCP_PROXY_PORT``, which must be the exposed proxy port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .addresses import bracket
from .proxy import Proxy

if TYPE_CHECKING:
    from .admin import AdminServer


def admin_lines(admin: "AdminServer | None") -> list[str]:
    if admin is None:
        return []
    host, port = admin.address
    base = f"http://{bracket(host)}:{port}"
    return [f"admin {base}/  (/healthz /readyz /metrics /api/status /api/connections)"]


def route_lines(proxy: Proxy) -> list[str]:
    width = max(len(rt.config.name) for rt in proxy.routes)
    lines = []
    for rt in proxy.routes:
        bound = ", ".join(str(l.address) for l in rt.listeners)
        lines.append(f"route {rt.config.name:<{width}}  {bound} -> {rt.config.upstream}")
    return lines


def _route(proxy: Proxy, name: str):
    return next((rt for rt in proxy.routes if rt.config.name == name), None)


def inspector_lines(proxy: Proxy) -> list[str]:
    profile = proxy.config.profile
    ui = _route(proxy, "inspector-ui")
    if profile not in ("inspector-v1", "inspector-v2") or ui is None:
        return []
    ui_origins = [f"http://{bracket(l.address.host)}:{l.address.port}" for l in ui.listeners]
    if profile == "inspector-v2":
        sandbox = _route(proxy, "inspector-sandbox")
        lines = ["Inspector v2 through the sidecar:"]
        lines += [f"  open:  {origin}/" for origin in ui_origins]
        if sandbox is not None:
            ports = sorted({l.address.port for l in sandbox.listeners})
            lines.append(f"  the sandbox port {', '.join(map(str, ports))} is forwarded as well")
        return lines
    proxy_route = _route(proxy, "inspector-proxy")
    proxy_port = proxy_route.listeners[0].address.port if proxy_route and proxy_route.listeners else 6277
    allowed = ",".join([f"http://localhost:{ui.config.upstream.port}", *ui_origins])
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
