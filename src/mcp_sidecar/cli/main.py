"""``proxyctl``: the command line -- the group and its commands.

Each command lives in a module of its own (run, demo, configure, check,
manage); this module only assembles them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import __version__
from ..errors import EXIT_USAGE
from ..supervise.statedir import STATE_DIR_ENV
from .adminapi import ADMIN_ENV
from .check import check
from .configure import config
from .demo import demo
from .faults import fault
from .ls import ls
from .manage import reload, restart, status, stop
from .record import record
from .replay import replay
from .run import run
from .runtime import log_level, route
from .tap import tap
from .top import top
from .url import url


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="proxyctl")
@click.option(
    "-s",
    "--state-dir",
    "global_state_dir",
    type=click.Path(file_okay=False),
    default=None,
    help=f"The instance's state directory, for every command (as {STATE_DIR_ENV}).",
)
@click.option(
    "--admin",
    "global_admin",
    default=None,
    metavar="HOST:PORT",
    help=f"The admin endpoint top and tap talk to (as {ADMIN_ENV}).",
)
def cli(global_state_dir: str | None, global_admin: str | None) -> None:
    """mcp-sidecar: a resilient TCP/WebSocket sidecar proxy for MCP traffic.

    Find running instances with `proxyctl ls`."""
    # (the environment every command reads: a subcommand's own option still wins)
    if global_state_dir is not None:
        os.environ[STATE_DIR_ENV] = global_state_dir
    if global_admin is not None:
        os.environ[ADMIN_ENV] = global_admin


for command in (
    run,
    demo,
    config,
    check,
    status,
    restart,
    reload,
    stop,
    route,
    log_level,
    fault,
    ls,
    top,
    tap,
    record,
    replay,
    url,
):
    cli.add_command(command)


class _PipeSafeStdout:
    """stdout that a reader closing early (``proxyctl status | head -1``) does not
    turn into a failure: the rest of the output goes nowhere and the command
    exits with its own code, as ``systemctl status | head`` does."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return int(self._stream.write(text))
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self) -> None:
        self.reader_gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)  # (the interpreter's last flush must not fail either)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main() -> None:
    """Run the command line; usage errors in the one style every error has
    (``proxyctl: error: ...``, exit 2), not click's own."""
    sys.stdout = _PipeSafeStdout(sys.stdout)
    try:
        code = cli.main(standalone_mode=False)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "proxyctl"
        click.echo(f"proxyctl: error: {exc.format_message()} (see: {command} --help)", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        click.echo(f"proxyctl: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("proxyctl: aborted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
