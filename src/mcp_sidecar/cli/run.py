"""``proxyctl run``: forward every route until SIGTERM/SIGINT, supervised
(the default) or in this process.

Rules this module keeps:

* The configuration is validated before anything is bound; binding is all
  or nothing; the banner is printed only once every listener is bound and a
  worker serves.
* What is exposed unprotected on purpose, and an admin endpoint beyond
  loopback without a token, are logged as warnings at start.
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import trio

from .. import __version__, logs
from ..admin.server import AdminServer
from ..config.addresses import beyond_loopback
from ..config.model import ProxyConfig
from ..config.profiles import exposure_warnings
from ..config.tls import certificate_warnings
from ..config.values import parse_admin_listen, parse_duration
from ..errors import ConfigError, LocalError
from ..forward.proxy import Proxy
from ..logs import log
from ..net.listeners import BoundListener, bind_everything
from ..supervise.standalone import run_worker
from ..supervise.statedir import ensure_state_dir, write_admin_token
from ..supervise.supervisor import Supervisor, run_supervised
from .banner import (
    admin_lines,
    fault_banner_lines,
    gate_lines,
    inspector_lines,
    notice_lines,
    route_lines,
    warning_lines,
)
from .options import (
    RouteSource,
    echo_lines,
    environment_warnings,
    reports_errors,
    resolve_state_dir,
    state_dir_option,
    with_log_options,
    with_route_options,
)

logger = logging.getLogger(__name__)


def raise_fd_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: every connection costs
    two descriptors (four while splicing), and 1024 is a common soft default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


@click.command()
@with_route_options
@click.option("--drain-timeout", default=None, metavar="DURATION", help="Override proxy.drain_timeout (e.g. 10s).")
@click.option(
    "--admin",
    "admin_listen",
    default=None,
    metavar="HOST:PORT|off",
    help="Admin endpoint (health, metrics, API); default 127.0.0.1:6279.",
)
@click.option(
    "--supervise/--no-supervise",
    default=True,
    show_default=True,
    help="Run the worker under a socket-holding supervisor, or alone in this process.",
)
@state_dir_option
@with_log_options
@reports_errors
def run(
    routes: RouteSource,
    drain_timeout: str | None,
    admin_listen: str | None,
    supervise: bool,
    state_dir: Path | None,
    log_format: str,
    log_level: str,
) -> None:
    """Forward every route until SIGTERM/SIGINT, then drain and exit 0."""

    generated_token = secrets.token_urlsafe(24)  # for this process's life: reloads keep it

    def load() -> ProxyConfig:
        config = apply_overrides(routes.load(), drain_timeout=drain_timeout, admin_listen=admin_listen)
        return with_admin_token(config, generated_token)

    config = load()
    logs.configure(log_format, log_level)
    for warning in exposure_warnings(config):
        log(logger, logging.WARNING, "exposure.unprotected", detail=warning)
    for warning in certificate_warnings(config):
        log(logger, logging.WARNING, "tls.certificate_expiry", detail=warning)
    for warning in environment_warnings(config):
        log(logger, logging.WARNING, "config.unused_environment", detail=warning)
    admin = config.admin
    if admin.listen is not None and beyond_loopback(admin.listen.host) and admin.token_source == "generated":
        log(
            logger,
            logging.WARNING,
            "admin.exposed_without_token",
            address=str(admin.listen),
            detail="read-only endpoints (metrics, status, the dashboard) are open to the network; the tap and "
            "state-changing requests need the token generated at start (in the state directory for "
            "proxyctl); set [admin] token or MCP_SIDECAR_ADMIN_TOKEN to choose it",
        )
    raise_fd_limit()
    token_file = TokenFile(config)
    if supervise:
        directory = ensure_state_dir(resolve_state_dir(state_dir))

        def on_supervised(supervisor: Supervisor) -> None:
            assert supervisor.sockets is not None
            token_file.write(directory, supervisor.sockets.admin)
            _banner(
                supervisor.config,
                supervisor.sockets.routes,
                supervisor.sockets.admin,
                f"supervisor pid {os.getpid()}, {supervisor.target} worker{'s' if supervisor.target != 1 else ''}, "
                f"state {directory}",
            )

        resolved_format = log_format if log_format != "auto" else ("text" if sys.stderr.isatty() else "json")
        try:
            run_supervised(
                config, directory, load, log_format=resolved_format, log_level=log_level, on_ready=on_supervised
            )
        finally:
            token_file.remove()
        return
    sockets = bind_everything(config)

    def on_ready(proxy: Proxy, admin: AdminServer | None) -> None:
        try:
            token_file.write(ensure_state_dir(resolve_state_dir(state_dir)), sockets.admin)
        except LocalError as exc:
            token_file.unwritable(str(exc))
        _banner(config, proxy.listeners, sockets.admin, f"pid {os.getpid()}, not supervised")

    try:
        trio.run(run_worker, config, sockets, on_ready)
    finally:
        token_file.remove()


def _banner(config: ProxyConfig, listeners: list[BoundListener], admin: Any, who: str) -> None:
    # A gate's token only on a terminal: otherwise this lands in the journal or kubectl logs.
    show_tokens = sys.stdout.isatty()
    echo_lines(
        [
            f"mcp-sidecar {__version__} forwarding ({who})",
            *route_lines(config, listeners),
            *admin_lines(admin),
            *inspector_lines(config, listeners, show_tokens),
            *gate_lines(config, listeners, show_tokens),
            *notice_lines(config),
            *warning_lines(config),
            *fault_banner_lines(config),
        ]
    )


def with_admin_token(config: ProxyConfig, generated: str) -> ProxyConfig:
    """The admin endpoint always has a token unless open on loopback by
    choice: the configured one, else ``generated`` (kept for proxyctl in the
    state directory: ``TokenFile``)."""
    admin = config.admin
    if admin.listen is None or admin.token is not None or admin.open_on_loopback:
        return config
    return replace(config, admin=replace(admin, token=generated, token_source="generated"))


class TokenFile:
    """The generated admin token, written where this user's proxyctl finds it
    (``state_dir/admin-PORT.token``, 0600) once the admin socket is bound,
    removed at exit.  Best effort: without it, ``proxyctl tap`` needs --token."""

    def __init__(self, config: ProxyConfig) -> None:
        self.token = config.admin.token if config.admin.token_source == "generated" else None
        self.path: Path | None = None

    def write(self, directory: Path, admin: Any) -> None:
        if self.token is None or admin is None:
            return
        try:
            self.path = write_admin_token(directory, admin.getsockname()[1], self.token)
        except OSError as exc:
            self.unwritable(f"{directory}: {exc.strerror}")

    def unwritable(self, why: str) -> None:
        if self.token is not None:
            log(
                logger,
                logging.WARNING,
                "admin.token_not_written",
                detail=why,
                consequence="proxyctl tap needs the admin token: set [admin] token or MCP_SIDECAR_ADMIN_TOKEN",
            )

    def remove(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass


def apply_overrides(
    config: ProxyConfig, *, drain_timeout: str | None = None, admin_listen: str | None = None
) -> ProxyConfig:
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
