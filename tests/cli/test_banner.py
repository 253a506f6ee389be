from __future__ import annotations

from dataclasses import replace

from mcp_sidecar.cli.banner import gate_lines, inspector_lines, route_lines
from mcp_sidecar.config.parse import build_config
from mcp_sidecar.forward.proxy import Proxy
from mcp_sidecar.net.listeners import bind_all


def _proxy(profile: str, expose: bool = True) -> Proxy:
    """The profile's routes, bound on loopback port 0 instead of their ports."""
    config = build_config(profile=profile, dangerously_expose_unprotected=expose)
    routes = tuple(
        replace(r, listen=tuple(replace(a, host="127.0.0.1", port=0) for a in r.listen)) for r in config.routes
    )
    config = replace(config, routes=routes)
    return Proxy(config, bind_all(config))


def test_inspector_v1_lines_tell_origin_and_proxy_port() -> None:
    proxy = _proxy("inspector-v1")
    try:
        ui = proxy.routes[0].listeners[0].address.port
        mcp_proxy = proxy.routes[1].listeners[0].address.port
        assert route_lines(proxy.config, proxy.listeners) == [
            f"route inspector-ui     127.0.0.1:{ui} -> localhost:6274",
            f"route inspector-proxy  127.0.0.1:{mcp_proxy} -> localhost:6277",
        ]
        lines = inspector_lines(proxy.config, proxy.listeners, show_tokens=True)
        assert lines[1] == (
            f"  start it with:  ALLOWED_ORIGINS=http://localhost:6274,http://127.0.0.1:{ui} "
            "npx @modelcontextprotocol/inspector"
        )
        token = proxy.config.routes[0].settings.gate.token  # the page is gated beyond loopback
        assert lines[3] == (
            f"  then open:      http://127.0.0.1:{ui}/?MCP_PROXY_PORT={mcp_proxy}"
            f"&MCP_PROXY_AUTH_TOKEN=<the token the Inspector printed>&mcp_sidecar_token={token}"
        )
        assert gate_lines(proxy.config, proxy.listeners, show_tokens=True) == [
            "route inspector-ui is gated: open this URL once in a browser (it leaves a cookie), "
            "or send Authorization: Bearer <token>:",
            f"  http://127.0.0.1:{ui}/?mcp_sidecar_token={token}",
        ]
        # Written anywhere but a terminal (the journal, kubectl logs), the token stays out.
        hidden = inspector_lines(proxy.config, proxy.listeners, show_tokens=False) + gate_lines(
            proxy.config, proxy.listeners, show_tokens=False
        )
        assert token not in "\n".join(hidden)
        assert hidden[3].endswith("&mcp_sidecar_token=<see: proxyctl url inspector-ui>")
        assert hidden[-1] == (
            "route inspector-ui is gated: its URL carries the token and is not printed here (this "
            "output may be collected); get it with: proxyctl url inspector-ui"
        )
    finally:
        for listener in proxy.listeners:
            listener.close()


def test_inspector_v2_lines_give_the_environment_and_the_gated_url() -> None:
    proxy = _proxy("inspector-v2", expose=False)  # gated by default
    try:
        ui, sandbox, apps = (rt.listeners[0].address.port for rt in proxy.routes)
        token = proxy.config.routes[0].settings.gate.token
        assert inspector_lines(proxy.config, proxy.listeners, show_tokens=True) == [
            "Inspector v2 through the sidecar:",
            f"  start it with:  ALLOWED_ORIGINS=http://localhost:6274,http://127.0.0.1:6274,http://[::1]:6274,"
            f"http://127.0.0.1:{ui} MCP_SANDBOX_FULL_ADDRESS=http://127.0.0.1:{sandbox}/sandbox "
            f"MCP_APP_ORIGIN_FULL_ADDRESS=http://127.0.0.1:{apps} npx @modelcontextprotocol/inspector",
            "                  (browsing to a host name: add its origin to ALLOWED_ORIGINS, use it in the two "
            "addresses, and set MCP_INSPECTOR_ALLOWED_HOSTS=NAME)",
            f"  then open:      http://127.0.0.1:{ui}/?mcp_sidecar_token={token}",
        ]
    finally:
        for listener in proxy.listeners:
            listener.close()
    config = build_config(forwards=("127.0.0.1:0:localhost:1",))
    plain = Proxy(config, bind_all(config))
    try:
        assert inspector_lines(plain.config, plain.listeners, show_tokens=True) == []
    finally:
        for listener in plain.listeners:
            listener.close()
