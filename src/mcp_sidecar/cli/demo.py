"""``proxyctl demo``: the real forwarding path in front of the embedded demo
upstreams, with a self-check through it."""

from __future__ import annotations

import os
import sys

import click
import trio

from .. import __version__, logs
from ..admin.server import AdminServer
from ..config.parse import build_config
from ..demo.drive import drive_mcp, drive_mcp_modern, self_check
from ..demo.servers import serve_echo, serve_http, serve_ws
from ..errors import EXIT_FAILURE
from ..forward.proxy import Proxy
from ..net.listeners import bind_everything
from ..supervise.instances import demo_dir, register, unregister
from ..supervise.standalone import run_worker
from .banner import admin_lines, route_lines, self_command
from .options import echo_lines, reports_errors, with_log_options


@click.command()
@click.option("--http-port", default=6280, show_default=True, help="Proxy port for the demo HTTP service.")
@click.option("--echo-port", default=6281, show_default=True, help="Proxy port for the demo TCP echo service.")
@click.option("--admin-port", default=6282, show_default=True, help="Admin endpoint port (on 127.0.0.1).")
@click.option("--ws-port", default=6283, show_default=True, help="Proxy port for the demo WebSocket (MCP) service.")
@click.option("--check", is_flag=True, help="Run the self-check through the proxy, then exit (0 if it passed).")
@with_log_options
@reports_errors
def demo(
    http_port: int, echo_port: int, admin_port: int, ws_port: int, check: bool, log_format: str, log_level: str
) -> None:
    """Run the proxy in front of an embedded demo upstream (HTTP + MCP, WebSocket, TCP echo)."""
    logs.configure(log_format, log_level)
    passed = trio.run(_demo, http_port, echo_port, admin_port, ws_port, check)
    if check and not passed:
        sys.exit(EXIT_FAILURE)


async def _demo(http_port: int, echo_port: int, admin_port: int, ws_port: int, check_only: bool) -> bool:

    outcome = {"passed": False}
    async with trio.open_nursery() as upstreams:
        upstream_http = await upstreams.start(serve_http, "127.0.0.1", 0)
        upstream_echo = await upstreams.start(serve_echo, "127.0.0.1", 0)
        upstream_ws = await upstreams.start(serve_ws, "127.0.0.1", 0)
        # A short-lived demonstration on loopback: the tap and drain are open
        # there (admin.open_on_loopback), so the banner's commands work as printed.
        config = build_config(
            {
                "admin": {"listen": f"127.0.0.1:{admin_port}", "open_on_loopback": True},
                "route": [
                    {"name": "demo-http", "listen": f"127.0.0.1:{http_port}", "upstream": f"localhost:{upstream_http}"},
                    {"name": "demo-echo", "listen": f"127.0.0.1:{echo_port}", "upstream": f"localhost:{upstream_echo}"},
                    {"name": "demo-ws", "listen": f"127.0.0.1:{ws_port}", "upstream": f"localhost:{upstream_ws}"},
                ],
            },
            source="demo",
        )
        sockets = bind_everything(config)
        # Registered for proxyctl ls, top and tap (removed at exit).
        register(
            demo_dir(),
            {
                "kind": "demo",
                "admin": f"127.0.0.1:{sockets.admin.getsockname()[1]}" if sockets.admin else None,
                "routes": [r.name for r in config.routes],
            },
        )

        async with trio.open_nursery() as nursery:

            async def check_then(proxy: Proxy) -> None:
                http = next(rt for rt in proxy.routes if rt.config.name == "demo-http").listeners[0].address
                echo = next(rt for rt in proxy.routes if rt.config.name == "demo-echo").listeners[0].address
                ws = next(rt for rt in proxy.routes if rt.config.name == "demo-ws").listeners[0].address
                results = await self_check(http.port, echo.port)
                try:
                    with trio.fail_after(20):
                        counts = await drive_mcp("127.0.0.1", http.port, ws.port)
                    results.append(
                        (
                            "MCP sessions (streamable HTTP, WebSocket, HTTP+SSE)",
                            all(counts.values()),
                            ", ".join(f"{k} {v} responses" for k, v in counts.items()),
                        )
                    )
                except Exception as exc:
                    results.append(("MCP sessions", False, repr(exc)))
                try:
                    with trio.fail_after(20):
                        answers = await drive_mcp_modern("127.0.0.1", http.port)
                    results.append(
                        (
                            "MCP 2026-07-28 (stateless: discover, tools, a listen stream)",
                            answers == 5,
                            f"{answers} answers",
                        )
                    )
                except Exception as exc:
                    results.append(("MCP 2026-07-28", False, repr(exc)))
                lines = ["self-check through the proxy:"]
                lines += [f"  {'ok  ' if ok else 'FAIL'} {what}: {detail}" for what, ok, detail in results]
                outcome["passed"] = all(ok for _, ok, _ in results)
                admin_url = f"http://127.0.0.1:{sockets.admin.getsockname()[1]}" if sockets.admin else None
                if not check_only:
                    lines += [
                        "",
                        f"Open http://{http}/ in a browser, or: curl http://{http}/ticks?n=3",
                        *(
                            [
                                f"Dashboard: {admin_url}/dashboard   metrics: {admin_url}/metrics   "
                                f"MCP per method: {admin_url}/api/mcp",
                                f"Live view: {self_command()} top --admin {admin_url.removeprefix('http://')}   "
                                f"MCP messages: {self_command()} tap --admin {admin_url.removeprefix('http://')}",
                            ]
                            if admin_url
                            else []
                        ),
                        f"Echo: nc {http.host} {echo.port}",
                        "Ctrl-C to stop (drains open connections first).",
                    ]
                echo_lines(lines)
                if check_only:
                    proxy.begin_drain()

            def on_ready(proxy: Proxy, admin: AdminServer | None) -> None:
                echo_lines(
                    [
                        f"mcp-sidecar {__version__} demo (pid {os.getpid()})",
                        *route_lines(config, proxy.listeners),
                        *admin_lines(sockets.admin, explicit=True),
                    ]
                )
                nursery.start_soon(check_then, proxy)

            try:
                await run_worker(config, sockets, on_ready)
            finally:
                unregister(demo_dir())
        upstreams.cancel_scope.cancel()
    return outcome["passed"]
