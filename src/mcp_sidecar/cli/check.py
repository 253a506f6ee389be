"""``proxyctl check``: diagnose a route (through the proxy and directly) or a URL."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import trio

from ..config.addresses import NONLOOPBACK, HostPort, dialable, parse_hostport
from ..config.defaults import GATE_TOKEN_ENV
from ..config.model import RouteConfig, RouteSettings, UpstreamTlsSettings
from ..config.parse import build_config
from ..config.tls import client_context, client_context_from_files
from ..config.values import parse_duration
from ..errors import ConfigError
from ..net.netinfo import nonloopback_addresses
from ..net.origins import route_origins
from ..supervise.control import NotRunning, status_if_running
from .banner import v2_environment
from .diagnose import RouteAccess, check_inspector_v2, check_route, check_url
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
    ws://HOST:PORT/PATH, tcp://HOST:PORT.  Without --config, --forward or
    --profile, the routes are those of the running instance (exit 3 when none
    runs).  Exit 0 healthy, 1 degraded, 3 not running, 5 unreachable, 2 usage.
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
        running = status_if_running(resolve_state_dir(state_dir))
        live = {r["name"]: r["listen"] for r in running.get("routes", [])} if running else {}
        explicit = bool(routes.config_path or routes.forwards or routes.profile)
        if not running and not explicit:
            directory = resolve_state_dir(state_dir)
            raise NotRunning(
                f"mcp-sidecar is not running (state directory {directory}); to check without it, "
                "give a URL (proxyctl check http://HOST:PORT/mcp) or the routes (--config FILE, --forward, --profile)"
            )
        if running and not explicit:
            # The routes of the instance that runs, not the defaults.
            config = None
            candidates = [_RunningRoute.of(r) for r in running["routes"]]
            source = f"the running instance ({running.get('config_source')})"
        else:
            config = routes.load()
            candidates = [_RunningRoute.of_config(r) for r in config.routes]
            source = config.source
        chosen = [r for r in candidates if target is None or r.name == target]
        if not chosen:
            raise ConfigError(
                "check", "TARGET", f"no route {target!r} in {source} (routes: {', '.join(r.name for r in candidates)})"
            )
        reports = [
            trio.run(
                check_route,
                r.name,
                _through(r.route, live),
                r.upstreams,
                r.health_check,
                r.health_path,
                timeout_s,
                r.access,
            )
            for r in chosen
        ]
        if config is None and running and running.get("profile") == "inspector-v2":
            config = routes.load() if explicit else build_config(profile="inspector-v2", source="profile")
            chosen = [_RunningRoute.of_config(r) for r in config.routes if target is None or r.name == target]
        if config is not None and config.profile == "inspector-v2":
            for running_route, report in zip(chosen, reports, strict=True):
                route = running_route.route
                through = _through(route, live)
                if route.name == "inspector-ui" and through is not None and report.verdict != "unreachable":
                    listeners = _listener_view(config, live)
                    env = v2_environment(config, listeners)
                    origin = route_origins(route, listeners)[0]
                    trio.run(check_inspector_v2, report, through, env, origin, route.settings.gate.token, timeout_s)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in reports], indent=1))
    else:
        click.echo("\n\n".join(r.render() for r in reports))
    sys.exit(max(r.exit_code for r in reports))


@dataclass(frozen=True)
class _RunningRoute:
    """What a check needs of a route, from the configuration or from the
    running supervisor's status."""

    name: str
    upstreams: tuple[HostPort, ...]
    health_check: str
    health_path: str
    #: The configured route (listen addresses), or a stand-in with the name only.
    route: Any
    #: TLS and the access gate on the way (a gated route is checked with
    #: MCP_SIDECAR_GATE_TOKEN, or a token from the config file).
    access: RouteAccess = field(default_factory=RouteAccess)

    @classmethod
    def of_config(cls, route: Any) -> _RunningRoute:
        s = route.settings
        token = os.environ.get(GATE_TOKEN_ENV) or (s.gate.token if s.gate.token_source == "config" else None)
        access = RouteAccess(
            tls=s.tls.enabled, upstream_tls=client_context(s, route.tls_material), gated=s.gate.on, gate_token=token
        )
        return cls(route.name, route.upstreams, s.health.check, s.health.path, route, access)

    @classmethod
    def of(cls, status: dict[str, Any]) -> _RunningRoute:
        upstreams = tuple(parse_hostport(u) for u in status.get("upstreams") or [status["upstream"]])
        listen = tuple(parse_hostport(a, allow_zero_port=True) for a in status["listen"])
        upstream_tls = status.get("upstream_tls")
        context = (
            client_context_from_files(
                RouteSettings(
                    upstream_tls=UpstreamTlsSettings(
                        True, upstream_tls["ca"], upstream_tls["name"], upstream_tls["verify"]
                    )
                )
            )
            if upstream_tls
            else None
        )
        access = RouteAccess(
            tls=bool(status.get("tls")),
            upstream_tls=context,
            gated=bool(status.get("gate")),
            gate_token=os.environ.get(GATE_TOKEN_ENV),
        )
        return cls(
            status["name"],
            upstreams,
            status.get("health_check", "tcp"),
            status.get("health_path", "/"),
            _Named(status["name"], listen),
            access,
        )


@dataclass(frozen=True)
class _Named:
    name: str
    listen: tuple[HostPort, ...]


def _through(route: Any, live: dict[str, list[str]]) -> HostPort | None:
    """Where a client reaches the route: the running proxy's address, else the config's."""

    if live.get(route.name):
        return dialable(parse_hostport(live[route.name][0]))
    addr = route.listen[0]
    if not addr.port:
        return None
    if addr.host == NONLOOPBACK:
        hosts = nonloopback_addresses()
        return HostPort(hosts[0], addr.port) if hosts else None
    return dialable(addr)


@dataclass(frozen=True)
class _Listening:
    """A route's address as the banner's helpers read a bound listener."""

    route: RouteConfig
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
