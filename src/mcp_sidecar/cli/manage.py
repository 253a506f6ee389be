"""``proxyctl status | restart | reload | stop``: asking a running supervisor.

Rules this module keeps:

* ``status`` on a stopped service describes what is left (PID file,
  persistent counters) and exits 3 (LSB); ``restart`` and ``reload`` say in
  one line that nothing runs and exit 3; ``stop`` on a stopped service is
  done already: exit 0, as ``systemctl stop``.
* ``stop --wait`` returns when the supervisor has exited (its pidfd says so:
  no polling), or exits 6 when ``--timeout`` passed first.
* ``--json`` on every command: one JSON document on stdout, same exit code.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..errors import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_STILL_RUNNING, EXIT_STOPPING, LocalError
from ..supervise.control import NotRunning, send_command
from ..supervise.statedir import Counters, inspect_pid_file
from .options import reports_errors, resolve_state_dir, state_dir_option

# --- talking to a running supervisor ---------------------------------------------------


def _not_running(directory: Path, as_json: bool) -> None:
    pid_state = inspect_pid_file(directory)
    counters = Counters.load(directory).data if (directory / "counters.json").exists() else None
    if as_json:
        click.echo(
            json.dumps(
                {"running": False, "state_dir": str(directory), "pid_file": pid_state.describe(), "counters": counters},
                indent=1,
            )
        )
    else:
        click.echo(f"mcp-sidecar: {pid_state.describe()} (state directory {directory})")
        if counters:
            _echo_counters(counters)
    sys.exit(EXIT_NOT_RUNNING)


def _echo_counters(counters: dict[str, Any]) -> None:
    restarts = counters.get("worker_restarts", {})
    click.echo("failure counters (persistent):")
    click.echo(
        f"  worker crashes {restarts.get('crash', 0)}, hangs {restarts.get('hang', 0)}, "
        f"restarts {restarts.get('restart', 0)}, reloads {restarts.get('reload', 0)}, "
        f"supervisor starts {counters.get('supervisor_starts', 0)}"
    )
    for route, n in sorted(counters.get("upstream_connect_failures", {}).items()):
        down = counters.get("upstream_down", {}).get(route, 0)
        click.echo(f"  route {route}: upstream connect failures {n}, went down {down} time(s)")
    for event in counters.get("events", [])[-5:]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["ts"]))
        rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("ts", "event"))
        click.echo(f"  {stamp} {event['event']} {rest}".rstrip())


def ask_supervisor(directory: Path, command: str, as_json: bool = False, **fields: Any) -> dict[str, Any]:
    try:
        return send_command(directory, command, **fields)
    except NotRunning:
        if command == "status":
            _not_running(directory, as_json)
        raise NotRunning(f"mcp-sidecar is not running (state directory {directory})") from None
    except OSError as exc:
        raise LocalError(f"cannot reach the supervisor in {directory}: {exc}") from None


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@state_dir_option
@reports_errors
def status(as_json: bool, state_dir: Path | None) -> None:
    """Supervisor, worker, routes and failure counters.

    Exit 0 healthy, 1 degraded, 3 not running, 4 stopping."""
    directory = resolve_state_dir(state_dir)
    reply = ask_supervisor(directory, "status", as_json)
    if as_json:
        click.echo(json.dumps(reply, indent=1))
    else:
        sup, worker, standby = reply["supervisor"], reply["worker"], reply["standby"]
        verdict = "healthy" if reply["healthy"] else "DEGRADED"
        if reply.get("stopping"):
            verdict = "STOPPING (draining)"
        click.echo(f"mcp-sidecar {reply['version']}: running, {verdict} (state directory {reply['state_dir']})")
        spawn = (
            f"workers forked by pid {sup['forkserver_pid']}" if sup.get("worker_spawn") == "fork" else "workers exec'd"
        )
        click.echo(f"  supervisor pid {sup['pid']}, up {sup['uptime_s']:.0f} s; {spawn}")
        serving = reply.get("workers") or ([worker] if worker else [])
        if serving:
            click.echo(f"  workers: {len(serving)} serving of {reply.get('workers_target', len(serving))}")
            for item in serving:
                click.echo(
                    f"  worker {item.get('id', '?')} pid {item['pid']} {item['state']}, up {item['uptime_s']:.1f} s, "
                    f"last heartbeat {item['heartbeat_age_s']} s ago, "
                    f"connections active {item.get('connections_active', 0)}, total {item.get('connections_total', 0)}"
                )
        else:
            click.echo("  worker: none serving")
        click.echo(
            f"  standby: {'pid ' + str(standby['pid']) + ' ' + standby['state'] if standby else 'none'}"
            f"; draining: {len(reply['draining_workers'])}"
        )
        if reply["admin"]:
            click.echo(f"  admin http://{reply['admin']}/")
        for route in reply["routes"]:
            state = route["upstream_state"]
            click.echo(
                f"  route {route['name']}: {', '.join(route['listen'])} -> {route['upstream']} "
                f"[upstream {state}] active {route['connections_active']}, "
                f"total {route['connections_total']}"
            )
        for problem in reply["problems"]:
            click.echo(f"  problem: {problem}")
        for warning in reply.get("warnings", []):
            click.echo(f"  WARNING: {warning}")
        for line in fault_lines(reply.get("faults")):
            click.echo(f"  {line}")
        _echo_counters(reply["counters"])
    sys.exit(EXIT_STOPPING if reply.get("stopping") else 0 if reply["healthy"] else 1)


@click.command()
@click.option(
    "--worker-only",
    is_flag=True,
    help="Replace the workers with the configuration they run, without re-reading the file.",
)
@click.option("--hard", is_flag=True, help="Kill the workers now instead of draining them (implies --worker-only).")
@json_option
@state_dir_option
@reports_errors
def restart(worker_only: bool, hard: bool, as_json: bool, state_dir: Path | None) -> None:
    """Re-read the configuration and replace every worker, as `systemctl restart`
    does: new workers serve, then the old ones drain.  An invalid configuration
    changes nothing.

    Exit 0 done, 1 failed, 3 not running, 4 stopping."""
    report_reply(
        ask_supervisor(resolve_state_dir(state_dir), "restart", hard=hard, reread=not (worker_only or hard)),
        as_json,
    )


@click.command()
@json_option
@state_dir_option
@reports_errors
def reload(as_json: bool, state_dir: Path | None) -> None:
    """Re-read the configuration and apply it through a graceful restart.

    Exit 0 done, 1 failed (the old configuration keeps serving), 3 not running, 4 stopping."""
    report_reply(ask_supervisor(resolve_state_dir(state_dir), "reload"), as_json)


@click.command()
@click.option("--wait", is_flag=True, help="Return once the service has stopped (its connections drained).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="With --wait: give up after this long (default: drain_timeout + 15 s); exit 6.",
)
@json_option
@state_dir_option
@reports_errors
def stop(wait: bool, timeout: float | None, as_json: bool, state_dir: Path | None) -> None:
    """Stop gracefully: open connections drain for up to drain_timeout.

    Idempotent: a service that is not running is stopped already (exit 0).
    Exit 0 stopped or stopping, 1 failed, 6 still running after --wait --timeout."""
    directory = resolve_state_dir(state_dir)
    pid = inspect_pid_file(directory).pid
    try:
        reply = send_command(directory, "stop")
    except NotRunning:
        _echo(
            {
                "ok": True,
                "running": False,
                "stopped": True,
                "message": f"mcp-sidecar is not running (state directory {directory})",
            },
            as_json,
        )
        return
    except OSError as exc:
        raise LocalError(f"cannot reach the supervisor in {directory}: {exc}") from None
    if not reply.get("ok"):
        report_reply(reply, as_json)
    if wait:
        limit = timeout if timeout is not None else float(reply.get("drain_timeout_s", 25)) + 15.0
        started = time.monotonic()
        stopped = _wait_exit(pid, directory, limit)
        waited = round(time.monotonic() - started, 3)
        reply = {**reply, "stopped": stopped, "waited_s": waited, "message": f"stopped (waited {waited:g} s)"}
        if not stopped:
            _echo({**reply, "ok": False, "error": f"still running after {limit:g} s"}, as_json, err=True)
            sys.exit(EXIT_STILL_RUNNING)
    _echo(reply, as_json)


def _wait_exit(pid: int | None, directory: Path, limit_s: float) -> bool:
    """Wait for the supervisor to exit: on its pidfd when it can be opened
    (an event, not polling), else on its PID file's lock."""
    deadline = time.monotonic() + limit_s
    fd = None
    if pid is not None:
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            fd = None
    try:
        while True:
            left = deadline - time.monotonic()
            if not inspect_pid_file(directory).running:
                return True
            if left <= 0:
                return False
            if fd is not None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                if poller.poll(max(1, int(left * 1000))):  # readable: the process exited
                    return True
            else:
                time.sleep(min(0.1, left))
    finally:
        if fd is not None:
            os.close(fd)


def _echo(reply: dict[str, Any], as_json: bool, err: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(reply, indent=1))
    elif "error" in reply:
        click.echo(f"proxyctl: error: {reply['error']}", err=True)
    else:
        click.echo(reply.get("message") or "done", err=err)


def fault_lines(faults: dict[str, Any] | None) -> list[str]:
    """What ``status`` (and the banner) say of fault injection: nothing when it is off."""
    if not faults or not faults.get("enabled"):
        return []
    active = faults.get("faults") or []
    lines = [f"FAULT INJECTION ENABLED: {len(active)} fault(s) active" + (":" if active else "")]
    lines += [f"  fault {f['route']}/{f['name']}: {f['description']} (injected {f['injected']})" for f in active]
    return lines


def report_reply(reply: dict[str, Any], as_json: bool = False) -> None:
    if not reply.get("ok"):
        if as_json:
            click.echo(json.dumps(reply, indent=1))
        else:
            click.echo(f"proxyctl: error: {reply.get('error', 'failed')}", err=True)
        sys.exit(EXIT_STOPPING if reply.get("stopping") else EXIT_FAILURE)
    _echo(reply, as_json)
