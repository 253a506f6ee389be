"""``proxyctl top``: a live terminal view of a running worker.

Rules this module keeps:

* The view is a pure function of three admin documents (``/api/status``,
  ``/api/mcp``, a page of ``/api/connections``): ``render`` builds rich
  tables from them and nothing else, so a snapshot is testable as text.
* On a terminal it refreshes every ``--interval`` seconds (default 1) until
  ``q`` (or Ctrl-C); the terminal is put back as it was.  Without one
  (a pipe, a file, CI) it prints one snapshot and exits, as ``top -b -n 1``.
"""

from __future__ import annotations

import json
import os
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Any

import click
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..observe.slowness import PARTS
from .adminapi import admin_option, get_json, resolve_admin, token_option
from .options import reports_errors, resolve_state_dir, state_dir_option

#: Connections fetched per refresh (the busiest are shown).
CONNECTIONS_FETCHED = 1000
BUSIEST_SHOWN = 10
METHODS_SHOWN = 15
TARGETS_SHOWN = 10
_STATE_STYLE = {
    "serving": "green",
    "degraded": "yellow",
    "down": "bold red",
    "draining": "yellow",
    "not_listening": "bold red",
}


def _split(split: dict[str, Any] | None) -> str:
    """Who was slow, each part's mean in ms (network/server/transfer/client)."""
    if not split:
        return "-"
    return "/".join(f"{split[part]['mean_ms']:.1f}" for part in PARTS)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(status: dict[str, Any], mcp: dict[str, Any], connections: dict[str, Any], now_unix: float) -> Group:
    """The whole view, from the admin documents."""
    ready = status["ready"]
    headline = Text()
    headline.append(f"mcp-sidecar {status['version']}  pid {status['pid']}  up {_age(status['uptime_s'])}  ")
    label = "DRAINING" if status["draining"] else "ready" if ready else "NOT READY"
    headline.append(label, style="yellow" if status["draining"] else "green" if ready else "bold red")
    if status.get("reasons"):
        headline.append("  " + "; ".join(status["reasons"]), style="red")
    supervisor = status.get("supervisor")
    if supervisor:
        restarts = {k: v for k, v in supervisor.get("restarts", {}).items() if v}
        headline.append("  worker restarts: " + (", ".join(f"{k} {v}" for k, v in restarts.items()) or "none"))

    by_route = {r["route"]: r for r in mcp["routes"]}
    routes = Table(title="routes", title_justify="left", expand=False)
    for column in ("route", "state", "since", "upstream", "conns", "total", "MCP era", "MCP req/s", "err/s", "p95 ms"):
        routes.add_column(
            column, justify="right" if column in ("conns", "total", "MCP req/s", "err/s", "p95 ms") else "left"
        )
    for route in status["routes"]:
        view = by_route.get(route["name"], {})
        transports = view.get("transports", {}).values()
        p95s = [t["p95_ms"] for t in transports if t["p95_ms"] is not None]
        state = Text(route["state"], style=_STATE_STYLE.get(route["state"], ""))
        if route.get("reason"):
            state.append(f" ({route['reason']})")
        routes.add_row(
            route["name"],
            state,
            _age(max(0.0, now_unix - route["since_unix"])),
            route["upstream"],
            str(route["connections_active"]),
            str(route["connections_total"]),
            view.get("era", "-"),
            f"{sum(t['rate_per_s'] for t in transports):.2f}",
            f"{sum(t['errors_per_s'] for t in transports):.2f}",
            _ms(max(p95s, default=None)),
        )

    methods = Table(title=f"MCP methods (last {mcp['window_s']:.0f} s)", title_justify="left")
    for column in (
        "route",
        "method",
        "requests",
        "req/s",
        "err/s",
        "errors",
        "p50",
        "p95",
        "p99",
        "in flight",
        "slow: net/srv/xfer/cli",
    ):
        methods.add_column(column, justify="left" if column in ("route", "method", "errors") else "right")
    rows = [(r["route"], name, m) for r in mcp["routes"] for name, m in r["methods"].items()]
    rows.sort(key=lambda row: (-row[2]["rate_per_s"], -row[2]["requests"]))
    for route_name, name, m in rows[:METHODS_SHOWN]:
        errors = ", ".join(f"{code} {n}" for code, n in m["errors"].items()) or "-"
        methods.add_row(
            route_name,
            name,
            str(m["requests"]),
            f"{m['rate_per_s']:.2f}",
            f"{m['errors_per_s']:.2f}",
            errors,
            _ms(m["p50_ms"]),
            _ms(m["p95_ms"]),
            _ms(m["p99_ms"]),
            str(m["in_flight"]),
            _split(m.get("split")),
        )
    if not rows:
        methods.add_row("-", "no MCP requests seen yet", *[""] * 9)
    sessions = sum(r["sessions_open"] for r in mcp["routes"])
    clients = sum(r.get("clients_active", 0) for r in mcp["routes"])

    busiest = Table(
        title=f"busiest connections ({connections['count']} open, {sessions} MCP sessions, "
        f"{clients} stateless clients)",
        title_justify="left",
    )
    for column in ("id", "route", "client", "protocol", "age", "in / out", "RTT ms", "grade"):
        busiest.add_column(column, justify="right" if column in ("id", "age", "RTT ms") else "left")
    conns = sorted(
        connections["connections"], key=lambda c: -(c["bytes_client_to_upstream"] + c["bytes_upstream_to_client"])
    )
    for c in conns[:BUSIEST_SHOWN]:
        q = c["quality"]
        rtt = c["tcp"]["client"]["rtt_ms"] if c["tcp"].get("client") else None
        grade = f"{q['score']} ({q['grade']})" if q["samples"] else "-"
        if q["samples"] and q.get("deductions"):
            grade += ": " + "; ".join(d["reason"] for d in q["deductions"])
        busiest.add_row(
            str(c["id"]),
            c["route"],
            c["client"],
            c["protocol"] + (" / mcp" if c["mcp"] else ""),
            _age(c["age_s"]),
            f"{_bytes(c['bytes_client_to_upstream'])} / {_bytes(c['bytes_upstream_to_client'])}",
            _ms(rtt),
            grade,
        )
    if not conns:
        busiest.add_row("-", "no open connection", *[""] * 6)
    return Group(headline, routes, methods, _targets(mcp), busiest)


def _targets(mcp: dict[str, Any]) -> Table:
    """The busiest tools, prompts and resources, and each route's protocol versions."""
    versions = "; ".join(
        f"{r['route']}: " + ", ".join(f"{v} {n}" for v, n in r.get("protocol_versions", {}).items())
        for r in mcp["routes"]
        if r.get("protocol_versions")
    )
    table = Table(
        title=f"MCP targets (last {mcp['window_s']:.0f} s)" + (f"   protocol versions: {versions}" if versions else ""),
        title_justify="left",
    )
    for column in ("route", "method", "target", "requests", "req/s", "err/s", "errors", "p50", "p95"):
        table.add_column(column, justify="left" if column in ("route", "method", "target", "errors") else "right")
    rows = [
        (r["route"], method, target, t)
        for r in mcp["routes"]
        for method, by_target in r.get("targets", {}).items()
        for target, t in by_target.items()
    ]
    rows.sort(key=lambda row: (-row[3]["rate_per_s"], -row[3]["requests"]))
    for route_name, method, target, t in rows[:TARGETS_SHOWN]:
        table.add_row(
            route_name,
            method,
            target,
            str(t["requests"]),
            f"{t['rate_per_s']:.2f}",
            f"{t['errors_per_s']:.2f}",
            ", ".join(f"{code} {n}" for code, n in t["errors"].items()) or "-",
            _ms(t["p50_ms"]),
            _ms(t["p95_ms"]),
        )
    if not rows:
        table.add_row("-", "no tool, prompt or resource called yet", *[""] * 7)
    return table


async def _fetch(target: Any, token: str | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    status = await get_json(target, "/api/status", token)
    mcp = await get_json(target, "/api/mcp", token)
    connections = await get_json(target, f"/api/connections?limit={CONNECTIONS_FETCHED}", token)
    return status, mcp, connections


@click.command()
@click.option(
    "--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True, help="Seconds between refreshes."
)
@click.option("--once", is_flag=True, help="Print one snapshot and exit (the default without a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot's data as JSON and exit.")
@admin_option
@token_option
@state_dir_option
@reports_errors
def top(
    interval: float, once: bool, as_json: bool, admin_address: str | None, token: str | None, state_dir: Path | None
) -> None:
    """A live view: routes, MCP methods, busiest connections (q quits)."""
    target = resolve_admin(admin_address, resolve_state_dir(state_dir))
    if as_json:
        status, mcp, connections = trio.run(_fetch, target, token)
        click.echo(json.dumps({"status": status, "mcp": mcp, "connections": connections}, indent=1))
        return
    if once or not (sys.stdout.isatty() and sys.stdin.isatty()):
        status, mcp, connections = trio.run(_fetch, target, token)
        Console(width=max(100, Console().width)).print(render(status, mcp, connections, time.time()))
        return
    try:
        trio.run(_live, target, token, interval)
    except KeyboardInterrupt:
        pass


async def _live(target: Any, token: str | None, interval: float) -> None:
    console = Console()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        with Live(Text("connecting..."), console=console, screen=True, auto_refresh=False) as live:
            async with trio.open_nursery() as nursery:

                async def keys() -> None:
                    stream = trio.lowlevel.FdStream(os.dup(fd))
                    async with stream:
                        while True:
                            data = await stream.receive_some(16)
                            if not data or b"q" in data.lower():
                                nursery.cancel_scope.cancel()
                                return

                nursery.start_soon(keys)
                while True:
                    status, mcp, connections = await _fetch(target, token)
                    view = render(status, mcp, connections, time.time())
                    live.update(Group(view, Text("q quits", style="dim")), refresh=True)
                    await trio.sleep(interval)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
