"""``proxyctl ls``: the instances this user runs, where to find them."""

from __future__ import annotations

import json

import click

from ..supervise.instances import discover
from .options import reports_errors


@click.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def ls(as_json: bool) -> None:
    """List the running instances this user can see: state directory, pid,
    kind (supervised or demo), admin address, routes.  Exit 0."""
    found = discover()
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    if not found:
        click.echo("no mcp-sidecar instance runs (for this user)")
        return
    for item in found:
        health = "" if item.get("healthy") is None else (", healthy" if item["healthy"] else ", DEGRADED")
        click.echo(
            f"{item['state_dir']}  pid {item.get('pid')}  {item['kind']}{health}  "
            f"admin {item.get('admin') or 'off'}  routes {', '.join(item.get('routes') or []) or '-'}"
        )
