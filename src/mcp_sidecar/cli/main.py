"""``proxyctl``: the command line.

User errors (``LocalError``: bad config, busy port) are printed as one line,
``proxyctl: error: ...``, without a traceback, and exit with the error's code
(2 for configuration and usage, 1 for runtime failures); see docs/cli.md.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import click
import trio

from .. import __version__, logs
from ..config.addresses import HostPort, beyond_loopback
from ..admin.server import AdminServer
from .banner import admin_lines, inspector_lines, route_lines, warning_lines
from ..config.profiles import EXPOSE_OPTION, PROFILES, exposure_warnings
from ..config.model import ProxyConfig
from ..config.parse import build_config, load_config, load_config_file
from ..config.values import parse_admin_listen, parse_duration
from ..config.render import render_toml
from ..supervise.control import NotRunning, send_command
from ..errors import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_STOPPING, ConfigError, LocalError, SidecarError
from ..net.listeners import bind_everything
from ..logs import log
from ..forward.proxy import Proxy
from ..supervise.statedir import STATE_DIR_ENV, Counters, default_state_dir, ensure_state_dir, inspect_pid_file
from ..supervise.supervisor import Supervisor, run_supervised
from ..supervise.standalone import run_worker

logger = logging.getLogger(__name__)


def _sidecar_error(exc: BaseException) -> SidecarError | None:
    """The user-facing error in ``exc``, looking inside exception groups."""
    if isinstance(exc, SidecarError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _sidecar_error(exc.exceptions[0])
    return None


def reports_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BaseException as exc:
            error = _sidecar_error(exc)
            if error is None:
                raise
            click.echo(f"proxyctl: error: {error}", err=True)
            sys.exit(error.exit_code)

    return wrapper


def raise_fd_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: every connection costs
    two descriptors (four while splicing), and 1024 is a common soft default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)
    sys.stdout.flush()


log_options = [
    click.option("--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True,
                 help="Log lines on stderr: JSON objects, or text for humans (auto: text on a terminal)."),
    click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
                 show_default=True),
]


def with_log_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(log_options):
        func = option(func)
    return func


route_options = [
    click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                 help="TOML file with [[route]] tables (see docs/configuration.md)."),
    click.option("--forward", "-L", "forwards", multiple=True, metavar="[BIND:]PORT:HOST:HOSTPORT",
                 help="Forward a port, ssh -L syntax, optionally named (NAME=SPEC); repeatable. "
                      "IPv6 in brackets."),
    click.option("--profile", type=click.Choice(sorted(PROFILES)), default=None,
                 help="Predefined routes (default when nothing else is given: inspector-v1)."),
    click.option(EXPOSE_OPTION, "expose_unprotected", is_flag=True,
                 help="Let the inspector-v2 profile listen beyond loopback without protection: anyone who "
                      "reaches it can run commands on this host. For a trusted network only."),
]


@dataclass(frozen=True)
class RouteSource:
    """Where the routes come from: the route options of one command line."""

    config_path: str | None
    forwards: tuple[str, ...]
    profile: str | None
    expose_unprotected: bool

    def load(self) -> ProxyConfig:
        return load_config(self.config_path, forwards=self.forwards, profile=self.profile,
                           dangerously_expose_unprotected=self.expose_unprotected)


def with_route_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the route options; the command receives them as ``routes: RouteSource``."""

    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, forwards: tuple[str, ...], profile: str | None,
                expose_unprotected: bool, **kwargs: Any) -> Any:
        return func(*args, routes=RouteSource(config_path, forwards, profile, expose_unprotected), **kwargs)

    for option in reversed(route_options):
        wrapper = option(wrapper)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="proxyctl")
def cli() -> None:
    """mcp-sidecar: a resilient TCP/WebSocket sidecar proxy for MCP traffic."""


state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"PID file, counters and control socket (env {STATE_DIR_ENV}; default /run/mcp-sidecar for root, "
         "else $XDG_RUNTIME_DIR/mcp-sidecar or /tmp/mcp-sidecar-UID).")


def _state_dir(value: Path | None) -> Path:
    return value if value is not None else default_state_dir()


@cli.command()
@with_route_options
@click.option("--drain-timeout", default=None, metavar="DURATION",
              help="Override proxy.drain_timeout (e.g. 10s).")
@click.option("--admin", "admin_listen", default=None, metavar="HOST:PORT|off",
              help="Admin endpoint (health, metrics, API); default 127.0.0.1:6279.")
@click.option("--supervise/--no-supervise", default=True, show_default=True,
              help="Run the worker under a socket-holding supervisor, or alone in this process.")
@state_dir_option
@with_log_options
@reports_errors
def run(routes: RouteSource, drain_timeout: str | None, admin_listen: str | None, supervise: bool,
        state_dir: Path | None, log_format: str, log_level: str) -> None:
    """Forward every route until SIGTERM/SIGINT, then drain and exit 0."""

    def load() -> ProxyConfig:
        return apply_overrides(routes.load(), drain_timeout=drain_timeout, admin_listen=admin_listen)

    config = load()
    logs.configure(log_format, log_level)
    for warning in exposure_warnings(config):
        log(logger, logging.WARNING, "exposure.unprotected", detail=warning)
    admin = config.admin
    if admin.listen is not None and beyond_loopback(admin.listen.host) and admin.token is None:
        log(logger, logging.WARNING, "admin.exposed_without_token", address=str(admin.listen),
            detail="read-only endpoints are open to the network; state-changing ones are refused")
    raise_fd_limit()
    if supervise:
        directory = ensure_state_dir(_state_dir(state_dir))

        def on_supervised(supervisor: Supervisor) -> None:
            assert supervisor.sockets is not None
            _banner(supervisor.config, supervisor.sockets.routes, supervisor.sockets.admin,
                    f"supervisor pid {os.getpid()}, worker pid {supervisor.active.pid if supervisor.active else '?'}, "
                    f"state {directory}")

        resolved_format = log_format if log_format != "auto" else ("text" if sys.stderr.isatty() else "json")
        run_supervised(config, directory, load, log_format=resolved_format, log_level=log_level,
                       on_ready=on_supervised)
        return
    sockets = bind_everything(config)

    def on_ready(proxy: Proxy, admin: AdminServer | None) -> None:
        _banner(config, proxy.listeners, sockets.admin, f"pid {os.getpid()}, not supervised")

    trio.run(run_worker, config, sockets, on_ready)


def _banner(config: ProxyConfig, listeners: list, admin: Any, who: str) -> None:
    _echo_lines([f"mcp-sidecar {__version__} forwarding ({who})", *route_lines(config, listeners),
                 *admin_lines(admin), *inspector_lines(config, listeners), *warning_lines(config)])


def apply_overrides(config: ProxyConfig, *, drain_timeout: str | None = None,
                    admin_listen: str | None = None) -> ProxyConfig:
    """Command-line options that override single config values."""
    if drain_timeout is not None:
        try:
            config = replace(config, drain_timeout_s=parse_duration(drain_timeout))
        except ValueError as exc:
            raise ConfigError("--drain-timeout", "", str(exc)) from None
    if admin_listen is not None:
        try:
            config = replace(config, admin=replace(config.admin, listen=parse_admin_listen(admin_listen)))
        except ValueError as exc:
            raise ConfigError("--admin", "", str(exc)) from None
    return config


@cli.command()
@click.option("--http-port", default=6280, show_default=True, help="Proxy port for the demo HTTP service.")
@click.option("--echo-port", default=6281, show_default=True, help="Proxy port for the demo TCP echo service.")
@click.option("--admin-port", default=6282, show_default=True, help="Admin endpoint port (on 127.0.0.1).")
@click.option("--ws-port", default=6283, show_default=True, help="Proxy port for the demo WebSocket (MCP) service.")
@click.option("--check", is_flag=True, help="Run the self-check through the proxy, then exit (0 if it passed).")
@with_log_options
@reports_errors
def demo(http_port: int, echo_port: int, admin_port: int, ws_port: int, check: bool, log_format: str,
         log_level: str) -> None:
    """Run the proxy in front of an embedded demo upstream (HTTP + MCP, WebSocket, TCP echo)."""
    logs.configure(log_format, log_level)
    passed = trio.run(_demo, http_port, echo_port, admin_port, ws_port, check)
    if check and not passed:
        sys.exit(EXIT_FAILURE)


async def _demo(http_port: int, echo_port: int, admin_port: int, ws_port: int, check_only: bool) -> bool:
    from ..demo.servers import drive_mcp, self_check, serve_echo, serve_http, serve_ws

    outcome = {"passed": False}
    async with trio.open_nursery() as upstreams:
        upstream_http = await upstreams.start(serve_http, "127.0.0.1", 0)
        upstream_echo = await upstreams.start(serve_echo, "127.0.0.1", 0)
        upstream_ws = await upstreams.start(serve_ws, "127.0.0.1", 0)
        config = build_config({"admin": {"listen": f"127.0.0.1:{admin_port}"}, "route": [
            {"name": "demo-http", "listen": f"127.0.0.1:{http_port}", "upstream": f"localhost:{upstream_http}"},
            {"name": "demo-echo", "listen": f"127.0.0.1:{echo_port}", "upstream": f"localhost:{upstream_echo}"},
            {"name": "demo-ws", "listen": f"127.0.0.1:{ws_port}", "upstream": f"localhost:{upstream_ws}"},
        ]}, source="demo")
        sockets = bind_everything(config)

        async with trio.open_nursery() as nursery:

            async def check_then(proxy: Proxy) -> None:
                http = next(rt for rt in proxy.routes if rt.config.name == "demo-http").listeners[0].address
                echo = next(rt for rt in proxy.routes if rt.config.name == "demo-echo").listeners[0].address
                ws = next(rt for rt in proxy.routes if rt.config.name == "demo-ws").listeners[0].address
                results = await self_check(http.port, echo.port)
                try:
                    with trio.fail_after(20):
                        counts = await drive_mcp("127.0.0.1", http.port, ws.port)
                    results.append(("MCP sessions (streamable HTTP, WebSocket, HTTP+SSE)",
                                    all(counts.values()), ", ".join(f"{k} {v} responses" for k, v in counts.items())))
                except Exception as exc:  # noqa: BLE001 - reported as a failed check
                    results.append(("MCP sessions", False, repr(exc)))
                lines = ["self-check through the proxy:"]
                lines += [f"  {'ok  ' if ok else 'FAIL'} {what}: {detail}" for what, ok, detail in results]
                outcome["passed"] = all(ok for _, ok, _ in results)
                admin_url = f"http://127.0.0.1:{sockets.admin.getsockname()[1]}" if sockets.admin else None
                if not check_only:
                    lines += ["", f"Open http://{http}/ in a browser, or: curl http://{http}/ticks?n=3",
                              *([f"Metrics: {admin_url}/metrics   connections: {admin_url}/api/connections"]
                                if admin_url else []),
                              f"Echo: nc {http.host} {echo.port}",
                              "Ctrl-C to stop (drains open connections first)."]
                _echo_lines(lines)
                if check_only:
                    proxy.begin_drain()

            def on_ready(proxy: Proxy, admin: AdminServer | None) -> None:
                _echo_lines([f"mcp-sidecar {__version__} demo (pid {os.getpid()})",
                             *route_lines(config, proxy.listeners), *admin_lines(sockets.admin)])
                nursery.start_soon(check_then, proxy)

            await run_worker(config, sockets, on_ready)
        upstreams.cancel_scope.cancel()
    return outcome["passed"]


@cli.group()
def config() -> None:
    """Validate or show a configuration."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@reports_errors
def config_validate(file: str) -> None:
    """Check FILE; print a summary, exit 2 with the reason if invalid."""
    cfg = build_config(load_config_file(file), source=file)
    click.echo(f"{file}: ok ({len(cfg.routes)} route{'s' if len(cfg.routes) != 1 else ''})")


@config.command("show")
@with_route_options
@reports_errors
def config_show(routes: RouteSource) -> None:
    """Print the effective configuration, defaults filled in, as TOML."""
    click.echo(render_toml(routes.load()), nl=False)


@cli.command()
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
    from .diagnose import check_route, check_url

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
        live = _live_listen_addresses(_state_dir(state_dir))
        reports = [trio.run(check_route, r.name, _through(r, live), r.upstreams, r.settings.health_check,
                            r.settings.health_path, timeout_s) for r in chosen]
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
    from ..config.addresses import NONLOOPBACK, parse_hostport
    from ..net.netinfo import nonloopback_addresses

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


# --- talking to a running supervisor ---------------------------------------------------


def _not_running(directory: Path, as_json: bool) -> None:
    pid_state = inspect_pid_file(directory)
    counters = Counters.load(directory).data if (directory / "counters.json").exists() else None
    if as_json:
        click.echo(json.dumps({"running": False, "state_dir": str(directory), "pid_file": pid_state.describe(),
                               "counters": counters}, indent=1))
    else:
        click.echo(f"mcp-sidecar: {pid_state.describe()} (state directory {directory})")
        if counters:
            _echo_counters(counters)
    sys.exit(EXIT_NOT_RUNNING)


def _echo_counters(counters: dict[str, Any]) -> None:
    restarts = counters.get("worker_restarts", {})
    click.echo("failure counters (persistent):")
    click.echo(f"  worker crashes {restarts.get('crash', 0)}, hangs {restarts.get('hang', 0)}, "
               f"restarts {restarts.get('restart', 0)}, reloads {restarts.get('reload', 0)}, "
               f"supervisor starts {counters.get('supervisor_starts', 0)}")
    for route, n in sorted(counters.get("upstream_connect_failures", {}).items()):
        down = counters.get("upstream_down", {}).get(route, 0)
        click.echo(f"  route {route}: upstream connect failures {n}, went down {down} time(s)")
    for event in counters.get("events", [])[-5:]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["ts"]))
        rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("ts", "event"))
        click.echo(f"  {stamp} {event['event']} {rest}".rstrip())


def _ask(directory: Path, command: str, as_json: bool = False, **fields: Any) -> dict[str, Any]:
    try:
        return send_command(directory, command, **fields)
    except NotRunning:
        _not_running(directory, as_json)
        raise AssertionError("unreachable")
    except OSError as exc:
        raise LocalError(f"cannot reach the supervisor in {directory}: {exc}") from None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@state_dir_option
@reports_errors
def status(as_json: bool, state_dir: Path | None) -> None:
    """Supervisor, worker, routes and failure counters.

    Exit 0 healthy, 1 degraded, 3 not running, 4 stopping."""
    directory = _state_dir(state_dir)
    reply = _ask(directory, "status", as_json)
    if as_json:
        click.echo(json.dumps(reply, indent=1))
    else:
        sup, worker, standby = reply["supervisor"], reply["worker"], reply["standby"]
        verdict = "healthy" if reply["healthy"] else "DEGRADED"
        if reply.get("stopping"):
            verdict = "STOPPING (draining)"
        click.echo(f"mcp-sidecar {reply['version']}: running, {verdict} (state directory {reply['state_dir']})")
        click.echo(f"  supervisor pid {sup['pid']}, up {sup['uptime_s']:.0f} s")
        if worker:
            click.echo(f"  worker pid {worker['pid']} {worker['state']}, up {worker['uptime_s']:.1f} s, "
                       f"last heartbeat {worker['heartbeat_age_s']} s ago")
        else:
            click.echo("  worker: none serving")
        click.echo(f"  standby: {'pid ' + str(standby['pid']) + ' ' + standby['state'] if standby else 'none'}"
                   f"; draining: {len(reply['draining_workers'])}")
        if reply["admin"]:
            click.echo(f"  admin http://{reply['admin']}/")
        for route in reply["routes"]:
            state = route["upstream_state"]
            click.echo(f"  route {route['name']}: {', '.join(route['listen'])} -> {route['upstream']} "
                       f"[upstream {state}] active {route['connections_active']}, "
                       f"total {route['connections_total']}")
        for problem in reply["problems"]:
            click.echo(f"  problem: {problem}")
        for warning in reply.get("warnings", []):
            click.echo(f"  WARNING: {warning}")
        _echo_counters(reply["counters"])
    sys.exit(EXIT_STOPPING if reply.get("stopping") else 0 if reply["healthy"] else 1)


@cli.command()
@click.option("--hard", is_flag=True, help="Kill the worker now instead of draining it.")
@state_dir_option
@reports_errors
def restart(hard: bool, state_dir: Path | None) -> None:
    """Replace the worker: a new one takes over the sockets, the old one drains."""
    _report(_ask(_state_dir(state_dir), "restart", hard=hard))


@cli.command()
@state_dir_option
@reports_errors
def reload(state_dir: Path | None) -> None:
    """Re-read the configuration and apply it through a graceful restart."""
    _report(_ask(_state_dir(state_dir), "reload"))


@cli.command()
@state_dir_option
@reports_errors
def stop(state_dir: Path | None) -> None:
    """Stop gracefully: open connections drain for up to drain_timeout."""
    _report(_ask(_state_dir(state_dir), "stop"))


def _report(reply: dict[str, Any]) -> None:
    if not reply.get("ok"):
        click.echo(f"proxyctl: error: {reply.get('error', 'failed')}", err=True)
        sys.exit(EXIT_STOPPING if reply.get("stopping") else EXIT_FAILURE)
    click.echo(" ".join(f"{k}={v}" for k, v in reply.items() if k != "ok"))


def main() -> None:
    cli()
