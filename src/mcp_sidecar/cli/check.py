"""``proxyctl check``: diagnose a route (through the proxy and directly) or a URL."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import trio

from ..config.addresses import NONLOOPBACK, HostPort, parse_hostport
from ..config.values import parse_duration
from ..errors import ConfigError
from ..net.netinfo import nonloopback_addresses
from ..supervise.control import NotRunning, send_command
from .banner import route_origins, v2_environment
from .diagnose import check_inspector_v2, check_route, check_url
from .options import RouteSource, reports_errors, resolve_state_dir, state_dir_option, with_route_options


@click.command()
@click.argument("target", required=False)
@with_route_options
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", default="5s", show_default=True, metavar="DURATION", help="Bound on each step.")
@reports_errors
def check(target: str | None, routes: RouteSource, state_dir: Path | None, as_json: bool, timeout: str) -> None:
    """Diagnose a route (through the proxy and directly) or a URL.

    TARGET is a route name of the configuration (default: every route) or a
    URL: http://HOST:PORT/PATH (an MCP endpoint if PATH ends in /mcp),
    ws://HOST:PORT/PATH, tcp://HOST:PORT.  Exit 0 healthy, 1 degraded,
    2 unreachable.
    """

    try:
        timeout_s = parse_duration(timeout)
    except ValueError as exc:
        raise ConfigError("--timeout", "", str(exc)) from None
    if target and "://" in target:
        try:
            reports = [trio.run(check_url, target, timeout_s)]
        except ValueError as exc:
            raise ConfigError("check", "TARGET", str(exc)) from None
    else:
        config = routes.load()
        chosen = [r for r in config.routes if target is None or r.name == target]
        if not chosen:
            raise ConfigError("check", "TARGET", f"no route {target!r} (routes: "
                                                 f"{', '.join(r.name for r in config.routes)})")
        live = _live_listen_addresses(resolve_state_dir(state_dir))
        reports = [trio.run(check_route, r.name, _through(r, live), r.upstreams, r.settings.health_check,
                            r.settings.health_path, timeout_s) for r in chosen]
        if config.profile == "inspector-v2":
            for route, report in zip(chosen, reports):
                through = _through(route, live)
                if route.name == "inspector-ui" and through is not None and report.verdict != "unreachable":
                    listeners = _listener_view(config, live)
                    env = v2_environment(config, listeners)
                    origin = route_origins(route, listeners)[0]
                    trio.run(check_inspector_v2, report, through, env, origin, route.settings.gate_token, timeout_s)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in reports], indent=1))
    else:
        click.echo("\n\n".join(r.render() for r in reports))
    sys.exit(max(r.exit_code for r in reports))


def _live_listen_addresses(directory: Path) -> dict[str, list[str]]:
    """Route name -> bound addresses, from a running supervisor (else {})."""
    try:
        status = send_command(directory, "status", timeout_s=5)
    except (NotRunning, OSError, ValueError):
        return {}
    return {r["name"]: r["listen"] for r in status.get("routes", [])}


def _through(route: Any, live: dict[str, list[str]]) -> HostPort | None:
    """Where a client reaches the route: the running proxy's address, else the config's."""

    if live.get(route.name):
        return parse_hostport(live[route.name][0])
    addr = route.listen[0]
    if not addr.port:
        return None
    if addr.host == NONLOOPBACK:
        hosts = nonloopback_addresses()
        return HostPort(hosts[0], addr.port) if hosts else None
    if addr.host in ("0.0.0.0", "::"):
        return HostPort("127.0.0.1" if addr.host == "0.0.0.0" else "::1", addr.port)
    return addr




@dataclass(frozen=True)
class _Listening:
    """A route's address as the banner's helpers read a bound listener."""

    route: Any
    address: HostPort


def _listener_view(config: Any, live: dict[str, list[str]]) -> list[_Listening]:
    """Where each route listens: the running proxy's addresses, else the
    configuration's (@nonloopback expanded to this host's addresses)."""
    out = []
    for route in config.routes:
        if live.get(route.name):
            out += [_Listening(route, parse_hostport(a)) for a in live[route.name]]
            continue
        for addr in route.listen:
            hosts = nonloopback_addresses() if addr.host == NONLOOPBACK else [addr.host]
            out += [_Listening(route, HostPort(h, addr.port)) for h in hosts]
    return out
