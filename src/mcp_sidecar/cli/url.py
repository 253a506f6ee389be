"""``proxyctl url ROUTE``: a gated route's URL, token included, for the operator.

Rules this module keeps:

* The URL comes from the running supervisor over its control socket, which
  answers only its own user (and root): the token is never printed into a
  collected log (the banner leaves it out unless it writes to a terminal).
* Exit 0 with one URL per line (an address per line for a wildcard
  listener), 2 for a route that does not exist or is not gated, 3 when
  nothing runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import EXIT_USAGE
from .manage import ask_supervisor
from .options import reports_errors, resolve_state_dir, state_dir_option


@click.command()
@click.argument("route")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@state_dir_option
@reports_errors
def url(route: str, as_json: bool, state_dir: Path | None) -> None:
    """Print a gated ROUTE's URL with its token (open it once in a browser).

    Exit 0 printed, 2 no such gated route, 3 not running."""
    reply = ask_supervisor(resolve_state_dir(state_dir), "url", route=route)
    if as_json:
        click.echo(json.dumps(reply, indent=1))
    elif reply.get("ok"):
        for line in reply["urls"]:
            click.echo(line)
    else:
        click.echo(f"proxyctl: error: {reply.get('error')}", err=True)
    if not reply.get("ok"):
        sys.exit(EXIT_USAGE)
