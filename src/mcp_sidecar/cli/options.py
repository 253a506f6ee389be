"""The options several commands share, and the reporting of user errors.

Rules this module keeps:

* User errors (``SidecarError``: bad config, busy port, not running) are one
  line on stderr, ``proxyctl: error: ...``, without a traceback, and exit
  with the error's code (docs/cli.md lists them).
* The route options reach a command as one ``RouteSource``, which knows how
  to load the configuration they describe.
"""

from __future__ import annotations

import functools
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ..config.defaults import GATE_TOKEN_ENV
from ..config.model import ProxyConfig
from ..config.parse import Environment, load_config
from ..config.profiles import EXPOSE_OPTION, PROFILES
from ..errors import SidecarError
from ..supervise.statedir import STATE_DIR_ENV, default_state_dir


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


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)
    sys.stdout.flush()


log_options = [
    click.option(
        "--log-format",
        type=click.Choice(["auto", "json", "text"]),
        default="auto",
        show_default=True,
        help="Log lines on stderr: JSON objects, or text for humans (auto: text on a terminal).",
    ),
    click.option(
        "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
    ),
]


def with_log_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(log_options):
        func = option(func)
    return func


route_options = [
    click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="TOML file with [[route]] tables (see docs/configuration.md).",
    ),
    click.option(
        "--forward",
        "-L",
        "forwards",
        multiple=True,
        metavar="[BIND:]PORT:HOST:HOSTPORT",
        help="Forward a port, ssh -L syntax, optionally named (NAME=SPEC); repeatable. IPv6 in brackets.",
    ),
    click.option(
        "--profile",
        type=click.Choice(sorted(PROFILES)),
        default=None,
        help="Predefined routes (default when nothing else is given: inspector-v1).",
    ),
    click.option(
        EXPOSE_OPTION,
        "expose_unprotected",
        is_flag=True,
        help="Let the inspector-v2 profile listen beyond loopback without the access gate: anyone "
        "who reaches it can run commands on this host. For a trusted network only.",
    ),
]


def process_environment(generated_gate_token: str | None = None) -> Environment:
    """The one place the process environment reaches the configuration."""
    return Environment(dict(os.environ), generated_gate_token)


@dataclass(frozen=True)
class RouteSource:
    """Where the routes come from: the route options of one command line,
    and the gate token generated for this process (a reload keeps it)."""

    config_path: str | None
    forwards: tuple[str, ...]
    profile: str | None
    expose_unprotected: bool
    generated_gate_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    def load(self) -> ProxyConfig:
        return load_config(
            self.config_path,
            forwards=self.forwards,
            profile=self.profile,
            dangerously_expose_unprotected=self.expose_unprotected,
            environment=process_environment(self.generated_gate_token),
        )


def with_route_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the route options; the command receives them as ``routes: RouteSource``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        config_path: str | None,
        forwards: tuple[str, ...],
        profile: str | None,
        expose_unprotected: bool,
        **kwargs: Any,
    ) -> Any:
        return func(*args, routes=RouteSource(config_path, forwards, profile, expose_unprotected), **kwargs)

    for option in reversed(route_options):
        wrapper = option(wrapper)
    return wrapper


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"PID file, counters and control socket (env {STATE_DIR_ENV}; default /run/mcp-sidecar for root, "
    "else $XDG_RUNTIME_DIR/mcp-sidecar or /tmp/mcp-sidecar-UID).",
)


def resolve_state_dir(value: Path | None) -> Path:
    return value if value is not None else default_state_dir()


def environment_warnings(config: ProxyConfig) -> list[str]:
    """Settings in the environment that the configuration does not use (the
    operator meant something by them: say so rather than ignore them)."""
    if os.environ.get(GATE_TOKEN_ENV) and not any(r.settings.gate.token_source == "env" for r in config.routes):
        gated = [r.name for r in config.routes if r.settings.gate.mode == "token"]
        why = (
            f"every gated route ({', '.join(gated)}) has a gate_token of its own"
            if gated
            else 'no route has gate = "token"'
        )
        return [f"{GATE_TOKEN_ENV} is set but not used: {why}"]
    return []
