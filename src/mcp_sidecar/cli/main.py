"""``proxyctl``: the command line -- the group and its commands.

Each command lives in a module of its own (run, demo, configure, check,
manage); this module only assembles them.
"""

from __future__ import annotations

import click

from .. import __version__
from .check import check
from .configure import config
from .demo import demo
from .manage import reload, restart, status, stop
from .run import run
from .tap import tap
from .top import top


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="proxyctl")
def cli() -> None:
    """mcp-sidecar: a resilient TCP/WebSocket sidecar proxy for MCP traffic."""


for command in (run, demo, config, check, status, restart, reload, stop, top, tap):
    cli.add_command(command)


def main() -> None:
    cli()
