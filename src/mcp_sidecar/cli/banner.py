"""What ``proxyctl run`` prints once every listener is bound.

One line per route (name, bound addresses, upstream), then, for the
Inspector profiles, the URL to open and the Inspector settings needed for
the UI to work through the sidecar: the Inspector v1 serves only browsers
whose ``Origin`` is in ``ALLOWED_ORIGINS`` (default ``http://localhost:6274``)
and its UI looks for the proxy server on its own hostname plus
``MCP_PROXY_PORT``, which must be the exposed proxy port.

Rules this module keeps:

* A gate's token is printed only when ``show_tokens`` (standard output is a
  terminal): the banner otherwise lands in the journal or ``kubectl logs``.
  It then says how to get the URL: ``proxyctl url ROUTE``.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config.addresses import bracket
from ..config.model import ProxyConfig, RouteConfig
from ..config.profiles import exposure_notices, exposure_warnings
from ..config.tls import certificate_warnings
from ..net.gate import TOKEN_PARAM
from ..net.listeners import BoundListener
from ..net.origins import Listening, gate_urls, route_origins


def self_command() -> str:
    """How to run proxyctl as this process was run: ``proxyctl`` when that is on
    PATH, else the path it was started by (``.venv/bin/proxyctl``), so the
    commands a banner prints work as printed."""
    on_path = shutil.which("proxyctl")
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if on_path and (started is None or started.name != "proxyctl" or Path(on_path).resolve() == started.resolve()):
        return "proxyctl"
    if started is not None and started.name == "proxyctl":
        return str(started.resolve())
    return f"{sys.executable} -m mcp_sidecar"


def admin_lines(admin: socket.socket | None, *, explicit: bool = False) -> list[str]:
    """The admin endpoint's lines; ``explicit``: the commands name the endpoint
    (an instance the other commands cannot find by its state directory)."""
    if admin is None:
        return []
    host, port = admin.getsockname()[:2]
    base = f"http://{bracket(host)}:{port}"
    me = self_command()
    where = f" --admin {bracket(host)}:{port}" if explicit else ""
    return [
        f"admin {base}/  (/healthz /readyz /metrics /api/status /api/mcp /api/connections)",
        f"dashboard {base}/dashboard   live: {me} top{where}   MCP messages: {me} tap{where}",
    ]


def route_lines(config: ProxyConfig, listeners: list[BoundListener]) -> list[str]:
    width = max(len(route.name) for route in config.routes)
    lines = []
    for route in config.routes:
        bound = ", ".join(str(item.address) for item in listeners if item.route.name == route.name)
        lines.append(f"route {route.name:<{width}}  {bound} -> {route.upstream_text}")
    return lines


def gate_lines(config: ProxyConfig, listeners: list[BoundListener], show_tokens: bool) -> list[str]:
    """The URL carrying each gated route's token (opened once, it leaves a
    cookie), and how non-browser clients authenticate; without
    ``show_tokens``, how to get the URL instead."""
    lines = []
    for route in config.routes:
        urls = gate_urls(route, listeners)
        if not urls:
            continue
        if not show_tokens:
            lines.append(
                f"route {route.name} is gated: its URL carries the token and is not printed here (this "
                f"output may be collected); get it with: proxyctl url {route.name}"
            )
            continue
        lines.append(
            f"route {route.name} is gated: open this URL once in a browser (it leaves a cookie), "
            "or send Authorization: Bearer <token>:"
        )
        lines += [f"  {url}" for url in urls]
    return lines


def notice_lines(config: ProxyConfig) -> list[str]:
    return [f"exposed: {notice}" for notice in exposure_notices(config)]


def fault_banner_lines(config: ProxyConfig) -> list[str]:
    """Fault injection, said loudly at start: the configured faults (runtime ones come later)."""
    if not config.faults_enabled:
        return []
    faults = [(r.name, f) for r in config.routes for f in r.faults]
    lines = [
        f"FAULT INJECTION ENABLED ([faults] enabled = true): {len(faults)} configured fault(s)"
        + ("; add more with proxyctl fault add" if not faults else ":")
    ]
    lines += [f"  fault {route}/{f.name}: {f.describe()}" for route, f in faults]
    return lines


def warning_lines(config: ProxyConfig) -> list[str]:
    """What is exposed without protection because the operator said so."""
    return [f"WARNING: {warning}" for warning in exposure_warnings(config) + certificate_warnings(config)]


def inspector_lines(config: ProxyConfig, listeners: list[BoundListener], show_tokens: bool) -> list[str]:
    def bound(name: str) -> list[BoundListener]:
        return [item for item in listeners if item.route.name == name]

    profile = config.profile
    ui = next((r for r in config.routes if r.name == "inspector-ui"), None)
    if profile not in ("inspector-v1", "inspector-v2") or ui is None:
        return []
    ui_origins = route_origins(ui, listeners)
    if profile == "inspector-v2":
        return _inspector_v2_lines(config, listeners, ui, ui_origins, show_tokens)
    proxy_listeners = bound("inspector-proxy")
    proxy_port = proxy_listeners[0].address.port if proxy_listeners else 6277
    allowed = ",".join([f"http://localhost:{ui.upstream.port}", *ui_origins])
    lines = [
        "Inspector v1 through the sidecar:",
        f"  start it with:  ALLOWED_ORIGINS={allowed} npx @modelcontextprotocol/inspector",
        "                  (add http://NAME:PORT for any other host name you browse to)",
    ]
    gate = ""
    if ui.settings.gate.mode == "token":
        gate = f"&{TOKEN_PARAM}={ui.settings.gate.token if show_tokens else '<see: proxyctl url inspector-ui>'}"
    for origin in ui_origins:
        lines.append(
            f"  then open:      {origin}/?MCP_PROXY_PORT={proxy_port}"
            f"&MCP_PROXY_AUTH_TOKEN=<the token the Inspector printed>{gate}"
        )
    return lines


def v2_environment(config: ProxyConfig, listeners: Sequence[Listening]) -> dict[str, str]:
    """What Inspector v2 must be started with to work through the sidecar's
    inspector-v2 routes (for the first address they listen on)."""
    routes = {r.name: r for r in config.routes}
    ui = routes["inspector-ui"]
    ui_origins = route_origins(ui, listeners)
    defaults = [f"http://{host}:{ui.upstream.port}" for host in ("localhost", "127.0.0.1", "[::1]")]
    env = {"ALLOWED_ORIGINS": ",".join(dict.fromkeys(defaults + ui_origins))}
    for name, variable, suffix in (
        ("inspector-sandbox", "MCP_SANDBOX_FULL_ADDRESS", "/sandbox"),
        ("inspector-apps", "MCP_APP_ORIGIN_FULL_ADDRESS", ""),
    ):
        origins = route_origins(routes[name], listeners) if name in routes else []
        if origins:
            env[variable] = origins[0] + suffix
    return env


def _inspector_v2_lines(
    config: ProxyConfig, listeners: list[BoundListener], ui: RouteConfig, ui_origins: list[str], show_tokens: bool
) -> list[str]:
    env = v2_environment(config, listeners)
    lines = [
        "Inspector v2 through the sidecar:",
        "  start it with:  " + " ".join(f"{k}={v}" for k, v in env.items()) + " npx @modelcontextprotocol/inspector",
        "                  (browsing to a host name: add its origin to ALLOWED_ORIGINS, use it in the two "
        "addresses, and set MCP_INSPECTOR_ALLOWED_HOSTS=NAME)",
    ]
    gate = ""
    if ui.settings.gate.mode == "token":
        gate = f"?{TOKEN_PARAM}={ui.settings.gate.token if show_tokens else '<see: proxyctl url inspector-ui>'}"
    lines += [f"  then open:      {origin}/{gate}" for origin in ui_origins]
    return lines
