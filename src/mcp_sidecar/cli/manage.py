"""``proxyctl status | restart | reload | stop``: asking a running supervisor."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_STOPPING, LocalError
from ..supervise.control import NotRunning, send_command
from ..supervise.statedir import Counters, inspect_pid_file
from .options import reports_errors, resolve_state_dir, state_dir_option


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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@state_dir_option
@reports_errors
def status(as_json: bool, state_dir: Path | None) -> None:
    """Supervisor, worker, routes and failure counters.

    Exit 0 healthy, 1 degraded, 3 not running, 4 stopping."""
    directory = resolve_state_dir(state_dir)
    reply = _ask(directory, "status", as_json)
    if as_json:
        click.echo(json.dumps(reply, indent=1))
    else:
        sup, worker, standby = reply["supervisor"], reply["worker"], reply["standby"]
        verdict = "healthy" if reply["healthy"] else "DEGRADED"
        if reply.get("stopping"):
            verdict = "STOPPING (draining)"
        click.echo(f"mcp-sidecar {reply['version']}: running, {verdict} (state directory {reply['state_dir']})")
        spawn = (f"workers forked by pid {sup['forkserver_pid']}" if sup.get("worker_spawn") == "fork"
                 else "workers exec'd")
        click.echo(f"  supervisor pid {sup['pid']}, up {sup['uptime_s']:.0f} s; {spawn}")
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


@click.command()
@click.option("--hard", is_flag=True, help="Kill the worker now instead of draining it.")
@state_dir_option
@reports_errors
def restart(hard: bool, state_dir: Path | None) -> None:
    """Replace the worker: a new one takes over the sockets, the old one drains."""
    _report(_ask(resolve_state_dir(state_dir), "restart", hard=hard))


@click.command()
@state_dir_option
@reports_errors
def reload(state_dir: Path | None) -> None:
    """Re-read the configuration and apply it through a graceful restart."""
    _report(_ask(resolve_state_dir(state_dir), "reload"))


@click.command()
@state_dir_option
@reports_errors
def stop(state_dir: Path | None) -> None:
    """Stop gracefully: open connections drain for up to drain_timeout."""
    _report(_ask(resolve_state_dir(state_dir), "stop"))


def _report(reply: dict[str, Any]) -> None:
    if not reply.get("ok"):
        click.echo(f"proxyctl: error: {reply.get('error', 'failed')}", err=True)
        sys.exit(EXIT_STOPPING if reply.get("stopping") else EXIT_FAILURE)
    click.echo(" ".join(f"{k}={v}" for k, v in reply.items() if k != "ok"))


