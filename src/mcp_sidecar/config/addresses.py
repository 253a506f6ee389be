"""Address syntax: ``HOST:PORT``, ``[V6]:PORT`` and ssh ``-L`` forward specs.

Rules this module keeps:

* IPv6 literals are written in brackets wherever a port follows them
  (``[::1]:8000``); hosts are stored without brackets.
* Ports are integers in 0..65535; 0 (pick a free port) is allowed for listen
  addresses only, where tests and the demo use it.
* Parsing never resolves names: resolution happens per connection (upstream)
  or at bind time (listen), so a config can be validated anywhere.
* ``@nonloopback`` as a listen host means "every address of this host that
  is not loopback"; it is expanded at bind time (see netinfo).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..errors import LocalError

NONLOOPBACK = "@nonloopback"


class AddressSyntaxError(LocalError, ValueError):
    """A malformed address; the message says what was expected.  The config
    parser turns it into a ``ConfigError`` naming the field."""


@dataclass(frozen=True, order=True)
class HostPort:
    """A host (name or IP literal, without brackets) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{bracket(self.host)}:{self.port}"


#: A listen host meaning every interface of both families (``*:PORT``, as ssh -L):
#: ``0.0.0.0`` and ``[::]``, two sockets (the IPv6 one V6ONLY), on one port.
EVERY_INTERFACE = "*"


def beyond_loopback(host: str) -> bool:
    """Whether listening on ``host`` may accept clients from other hosts.

    Loopback IP literals and ``localhost`` (RFC 6761: always loopback) stay
    on this host; ``@nonloopback``, wildcards, other IP literals and any
    other name (it may resolve anywhere) do not.
    """
    if host.lower().rstrip(".") == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return True


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this host's loopback only (an upstream nobody
    else could reach): loopback literals, ``localhost`` and ``*.localhost``."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def dialable(addr: HostPort) -> HostPort:
    """Where a client on this host reaches a listener bound to ``addr``: a
    wildcard (``0.0.0.0``, ``::``) on the loopback address of its family,
    never the wildcard itself."""
    if addr.host in ("0.0.0.0", "", EVERY_INTERFACE):
        return HostPort("127.0.0.1", addr.port)
    if addr.host == "::":
        return HostPort("::1", addr.port)
    return addr


def bracket(host: str) -> str:
    """``::1`` -> ``[::1]``; names and IPv4 are returned unchanged."""
    return f"[{host}]" if ":" in host else host


def format_sockaddr(addr: tuple[Any, ...]) -> str:
    """A socket address (IPv4 or IPv6 tuple) as ``HOST:PORT``."""
    return f"{bracket(addr[0])}:{addr[1]}"


def _split_tokens(text: str) -> list[str]:
    """Split on ``:`` outside ``[...]``; brackets are removed from tokens."""
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    bracketed = False
    for ch in text:
        if ch == "[":
            if depth or current:
                raise AddressSyntaxError(f"unexpected '[' in {text!r}")
            depth = 1
            bracketed = True
        elif ch == "]":
            if not depth:
                raise AddressSyntaxError(f"unexpected ']' in {text!r}")
            depth = 0
        elif ch == ":" and not depth:
            tokens.append("".join(current))
            current = []
            bracketed = False
        else:
            if bracketed and not depth:
                raise AddressSyntaxError(f"expected ':' after ']' in {text!r}")
            current.append(ch)
    if depth:
        raise AddressSyntaxError(f"unclosed '[' in {text!r}")
    tokens.append("".join(current))
    return tokens


def parse_port(text: str, *, allow_zero: bool) -> int:
    if not text.isdigit():
        raise AddressSyntaxError(f"port must be a number, got {text!r}")
    port = int(text)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise AddressSyntaxError(f"port must be in {low}..65535, got {port}")
    return port


def _check_host(host: str, text: str) -> str:
    if not host:
        raise AddressSyntaxError(f"missing host in {text!r}")
    if host == EVERY_INTERFACE:
        return host
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise AddressSyntaxError(f"invalid IPv6 address {host!r}") from None
    elif any(c.isspace() for c in host) or "/" in host:
        raise AddressSyntaxError(f"invalid host {host!r}")
    return host


def parse_hostport(text: str, *, allow_zero_port: bool = False) -> HostPort:
    """Parse ``HOST:PORT`` or ``[V6]:PORT``."""
    if not isinstance(text, str):
        raise AddressSyntaxError(f'expected "HOST:PORT", got {text!r}')
    tokens = _split_tokens(text.strip())
    if len(tokens) != 2:
        hint = " (write IPv6 addresses in brackets: [::1]:8000)" if len(tokens) > 2 else ""
        raise AddressSyntaxError(f'expected "HOST:PORT", got {text!r}{hint}')
    host = _check_host(tokens[0], text)
    return HostPort(host, parse_port(tokens[1], allow_zero=allow_zero_port))


@dataclass(frozen=True)
class ForwardSpec:
    """One ``--forward`` (ssh ``-L``): where to listen, where to forward."""

    listen: HostPort
    upstream: HostPort


def parse_forward(text: str, *, default_bind: str = "127.0.0.1") -> ForwardSpec:
    """Parse ssh ``-L`` syntax: ``[BIND:]PORT:HOST:HOSTPORT``.

    As ssh does: without a bind address the port listens on loopback only;
    ``*`` (or an empty bind address) means every interface, IPv4 and IPv6."""
    tokens = _split_tokens(text.strip())
    if len(tokens) == 3:
        bind, port, host, hostport = default_bind, *tokens
    elif len(tokens) == 4:
        bind, port, host, hostport = tokens
        if bind in ("*", ""):
            bind = EVERY_INTERFACE
    else:
        raise AddressSyntaxError(
            f'expected "[BIND:]PORT:HOST:HOSTPORT", got {text!r}'
            " (write IPv6 addresses in brackets: [::1]:7000:[::1]:8000)"
        )
    listen = HostPort(_check_host(bind, text), parse_port(port, allow_zero=True))
    upstream = HostPort(_check_host(host, text), parse_port(hostport, allow_zero=False))
    return ForwardSpec(listen, upstream)
