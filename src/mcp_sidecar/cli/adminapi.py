"""Reaching a running worker's admin endpoint from the command line
(``proxyctl top``, ``proxyctl tap``).

Rules this module keeps:

* Where: ``--admin HOST:PORT`` if given; else the address the running
  supervisor reports (its state directory); else the default admin address.
  A wildcard listen address (``0.0.0.0``, ``::``) is reached on loopback.
* The token (``--token`` or ``MCP_SIDECAR_ADMIN_TOKEN``, else the one the
  instance generated and keeps in this user's state directory for its admin
  port) is sent as a bearer token and never printed.
* An endpoint that does not answer is ``AdminUnreachable`` (exit 3, as for
  a service that is not running); an HTTP error is reported with the
  endpoint's own words.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import trio

from ..config.addresses import AddressSyntaxError, HostPort, dialable, parse_hostport
from ..config.defaults import ADMIN_TOKEN_ENV, DEFAULT_ADMIN_LISTEN
from ..errors import EXIT_NOT_RUNNING, EXIT_USAGE, LocalError
from ..net.http import ClientExchange, request
from ..supervise.control import status_if_running
from ..supervise.instances import demo_dir, registered
from ..supervise.statedir import read_admin_token

REQUEST_TIMEOUT_S = 5.0


class AdminUnreachable(LocalError):
    exit_code = EXIT_NOT_RUNNING


class AdminRefused(LocalError):
    """The endpoint answered with an error status."""


class UsageRefused(LocalError):
    """The endpoint refused what was asked (no such route, a bad filter): the asker's mistake."""

    exit_code = EXIT_USAGE


#: The admin endpoint top and tap talk to, when --admin is not given (``proxyctl --admin``).
ADMIN_ENV = "MCP_SIDECAR_ADMIN"

admin_option = click.option(
    "--admin",
    "admin_address",
    default=None,
    envvar=ADMIN_ENV,
    metavar="HOST:PORT",
    help=f"The admin endpoint (default: the one the running supervisor reports, else {DEFAULT_ADMIN_LISTEN}).",
)
token_option = click.option(
    "--token",
    default=None,
    envvar=ADMIN_TOKEN_ENV,
    show_envvar=True,
    help="Admin bearer token (the tap needs it; default: the one a local instance keeps in its state directory).",
)


def resolve_admin(address: str | None, state_dir: Path) -> HostPort:
    """The admin endpoint to talk to."""
    text = address
    if text is None:
        running = status_if_running(state_dir)
        demo = registered(demo_dir()) if running is None else None
        text = (running or demo or {}).get("admin") or DEFAULT_ADMIN_LISTEN
    text = text.removeprefix("http://").rstrip("/")
    try:
        return dialable(parse_hostport(text))
    except AddressSyntaxError as exc:
        raise LocalError(f"--admin {address!r}: {exc}") from None


def resolve_token(token: str | None, target: HostPort, state_dir: Path) -> str | None:
    """The token to send: the one given, else the one the instance behind
    ``target`` generated for this user (its state directory)."""
    return token if token else read_admin_token(state_dir, target.port)


def _headers(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


async def get_json(target: HostPort, path: str, token: str | None = None) -> Any:
    """GET one JSON document from the admin endpoint."""
    try:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            reply = await request(target.host, target.port, path, headers=_headers(token))
    except (OSError, trio.TooSlowError) as exc:
        raise AdminUnreachable(
            f"admin endpoint {target} does not answer ({exc or 'timeout'}); is mcp-sidecar running? (--admin HOST:PORT)"
        ) from None
    try:
        document = json.loads(reply.body)
    except ValueError:
        raise AdminRefused(f"admin endpoint {target}{path}: HTTP {reply.status}, not JSON") from None
    if reply.status >= 400 and not (reply.status == 503 and path == "/readyz"):
        raise AdminRefused(
            f"admin endpoint {target}{path}: HTTP {reply.status}: "
            f"{document.get('error', '') if isinstance(document, dict) else ''}"
        )
    return document


async def open_stream(
    target: HostPort, path: str, token: str | None = None
) -> tuple[trio.SocketStream, ClientExchange]:
    """Start a streamed GET (the tap); the caller reads ``exchange.body()``."""
    try:
        with trio.fail_after(REQUEST_TIMEOUT_S):
            stream = await trio.open_tcp_stream(target.host, target.port)
            exchange = ClientExchange(stream)
            await exchange.send(str(target), path, "GET", b"", _headers(token))
            head = await exchange.head()
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise AdminUnreachable(
            f"admin endpoint {target} does not answer ({exc or 'timeout'}); is mcp-sidecar running? (--admin HOST:PORT)"
        ) from None
    if head.status_code != 200:
        data = b""
        async for chunk in exchange.body():
            data += chunk
            if len(data) > 65536:
                break
        await stream.aclose()
        try:
            error = json.loads(data).get("error", "")
        except ValueError:
            error = ""
        if head.status_code in (400, 404):  # (what was asked for is wrong: a usage error, exit 2)
            raise UsageRefused(f"{error} (admin endpoint {target})")
        raise AdminRefused(f"admin endpoint {target}{path.split('?')[0]}: HTTP {head.status_code}: {error}")
    return stream, exchange
