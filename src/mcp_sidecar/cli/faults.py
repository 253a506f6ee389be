"""``proxyctl fault list|add|remove|clear``: inject faults into a running
tree (``[faults] enabled = true`` only), as Toxiproxy's ``toxiproxy-cli
toxic add`` does, and more: MCP faults by method and tool.

Rules this module keeps:

* Over the control socket (its peer's uid checked by the supervisor); the
  admin API has the same (``GET/POST/DELETE /api/faults``, the token).
* One option per setting, named as in the TOML (``--average-size`` or
  ``--average_size`` for ``average_size``); the values are checked by the
  same parser as the configuration's, so an error names the setting.
* One line on success, ``--json`` for scripts; exit 0 done, 1 refused
  (faults off, no such route or fault), 2 usage, 3 not running.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..config.faults import FaultKind
from ..errors import EXIT_USAGE
from .manage import ask_supervisor, json_option, report_reply
from .options import reports_errors, resolve_state_dir, state_dir_option

#: TOML key -> how its CLI value is read (else a string: a duration, a size, a pattern).
_NUMBERS: dict[str, type] = {"probability": float, "count": int, "code": int, "status": int, "events": int}
_SETTINGS = (
    ("name", "the fault's name (default: KIND-N)"),
    ("direction", "TCP: upstream (client to server) or downstream (default)"),
    ("probability", "a share of connections (TCP) or matching requests (MCP), 0 < P <= 1"),
    ("ttl", "remove it after this long (10m, 30s)"),
    ("count", "only the first N connections or matches"),
    ("latency", "latency: added to each chunk (100ms)"),
    ("jitter", "latency: +- this much, at random"),
    ("rate", "bandwidth: bytes per second (64KiB)"),
    ("average_size", "slicer: the average slice (bytes)"),
    ("size_variation", "slicer: +- this many bytes"),
    ("delay", "slicer: pause between slices; slow_close: how long; MCP delay: how long"),
    ("after", "reset_peer: after this long"),
    ("after_bytes", "reset_peer: after this many bytes"),
    ("timeout", "timeout: close after this long (0: never)"),
    ("bytes", "limit_data: close after this many bytes"),
    ("method", "MCP: the JSON-RPC method (a glob: tools/*)"),
    ("target", "MCP: the tool, prompt or resource (a glob: search*)"),
    ("client", "MCP: the client's address (a glob: 10.0.0.*)"),
    ("code", "error: the JSON-RPC error code (-32603)"),
    ("message", "error: the error's message"),
    ("status", "http_status: 429, 503, 404 ..."),
    ("retry_after", "http_status: Retry-After seconds (429, 503)"),
    ("events", "cut: close the response stream after this many events"),
)


def _setting_options(func: Any) -> Any:
    for key, help_text in reversed(_SETTINGS):
        names = [f"--{key.replace('_', '-')}"] + ([f"--{key}"] if "_" in key else [])
        func = click.option(*names, key, default=None, help=help_text)(func)
    return func


@click.group("fault")
def fault() -> None:
    """Inject faults into a running tree ([faults] enabled = true): TCP
    faults per route and direction, MCP faults per method and tool."""


@fault.command("list")
@json_option
@state_dir_option
@reports_errors
def list_faults(as_json: bool, state_dir: Path | None) -> None:
    """The faults active now and how often each was injected.

    Exit 0, 3 not running."""
    reply = ask_supervisor(resolve_state_dir(state_dir), "fault", action="list")
    if as_json or not reply.get("ok"):
        report_reply(reply, as_json)
        return
    if not reply.get("enabled"):
        click.echo("fault injection is off ([faults] enabled = false)")
        return
    faults = reply.get("faults") or []
    if not faults:
        click.echo("no faults")
        return
    rows = [("ROUTE", "NAME", "FAULT", "FROM", "INJECTED", "EXPIRES IN")]
    for f in faults:
        expires = f.get("expires_in_s")
        rows.append(
            (
                f["route"],
                f["name"],
                f["description"],
                f["source"],
                str(f["injected"]),
                "-" if expires is None else f"{expires:.0f} s",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@fault.command("add")
@click.argument("route")
@click.argument("kind", type=click.Choice([k.value for k in FaultKind]))
@_setting_options
@json_option
@state_dir_option
@reports_errors
def add(route: str, kind: str, as_json: bool, state_dir: Path | None, **settings: str | None) -> None:
    """Add a fault of KIND to ROUTE (one option per setting, as in the TOML).

    \b
    proxyctl fault add mcp-http error --method tools/call --target 'search*' \\
        --code -32603 --probability 0.2 --ttl 10m
    proxyctl fault add ROUTE latency --direction downstream --latency 100ms --jitter 10ms

    Exit 0 added, 1 refused (faults off, no such route), 2 a bad setting, 3 not running."""
    table: dict[str, Any] = {"route": route, "kind": kind}
    for key, raw in settings.items():
        if raw is None:
            continue
        convert = _NUMBERS.get(key)
        try:
            table[key] = convert(raw) if convert is not None else raw
        except ValueError:
            click.echo(f"proxyctl: error: {key}: expected a number, got {raw!r}", err=True)
            sys.exit(EXIT_USAGE)
    reply = ask_supervisor(resolve_state_dir(state_dir), "fault", action="add", fault=table)
    if not reply.get("ok") and reply.get("usage"):
        if as_json:
            click.echo(json.dumps(reply, indent=1))
        else:
            click.echo(f"proxyctl: error: {reply.get('error')}", err=True)
        sys.exit(EXIT_USAGE)
    report_reply(reply, as_json)


@fault.command("remove")
@click.argument("route")
@click.argument("name")
@json_option
@state_dir_option
@reports_errors
def remove(route: str, name: str, as_json: bool, state_dir: Path | None) -> None:
    """Remove fault NAME from ROUTE (a configured one until the next reload).

    Exit 0 removed, 1 no such fault, 3 not running."""
    report_reply(
        ask_supervisor(resolve_state_dir(state_dir), "fault", action="remove", route=route, name=name), as_json
    )


@fault.command("clear")
@click.argument("route", required=False)
@json_option
@state_dir_option
@reports_errors
def clear(route: str | None, as_json: bool, state_dir: Path | None) -> None:
    """Remove every fault (of ROUTE, or of every route).

    Exit 0, 1 refused (faults off, no such route), 3 not running."""
    report_reply(ask_supervisor(resolve_state_dir(state_dir), "fault", action="clear", route=route), as_json)
