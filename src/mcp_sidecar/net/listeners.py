"""Opening listening sockets for routes: all of them, or none.

Rules this module keeps:

* ``bind_all`` either returns a listening socket for every address of every
  route or closes what it opened and raises ``BindError``: nothing is left
  half-started.
* A failure names the address and the route, and says why in words: who
  holds a busy port (and, when it holds only loopback, how to avoid the
  collision), that a privileged port needs a capability, that an address is
  not on this host.
* ``[::]:PORT`` listens on both families (one dual-stack socket, as Linux,
  Node and Go do by default), unless ``0.0.0.0:PORT`` is configured too:
  then each is its own family's (``IPV6_V6ONLY``), so both can bind.  Every
  other IPv6 socket is ``IPV6_V6ONLY``, whatever ``net.ipv6.bindv6only``
  says.  ``*`` is both families, two sockets on one port (port 0: the port
  the first socket got).
* Sockets are plain non-blocking stdlib sockets: the accept loop and the pump
  drive them with ``trio.lowlevel.wait_readable``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any

from ..config.addresses import EVERY_INTERFACE, NONLOOPBACK, HostPort
from ..config.model import AdminConfig, ProxyConfig, RouteConfig
from ..errors import BindError
from ..logs import log
from .netinfo import listeners_on_port, nonloopback_addresses

LISTEN_BACKLOG = 1024

logger = logging.getLogger(__name__)


@dataclass
class BoundListener:
    """A listening socket, the route it serves and the address it is bound to."""

    route: RouteConfig
    sock: socket.socket
    address: HostPort  # as bound: the real port when 0 was asked for

    def close(self) -> None:
        self.sock.close()


def expand_listen_host(host: str, port: int) -> list[str]:
    """The IP addresses one configured listen host stands for."""
    if host == EVERY_INTERFACE:
        return ["0.0.0.0", "::"] if _ipv6_available() else ["0.0.0.0"]
    if host == NONLOOPBACK:
        addresses = nonloopback_addresses()
        if not addresses:
            raise BindError(
                f"cannot listen on {NONLOOPBACK}:{port}: this host has no non-loopback address "
                "(use --forward with an explicit bind address)"
            )
        return addresses
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return [host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {host}:{port}: cannot resolve {host!r}: {exc.strerror}") from None
    result: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and str(sockaddr[0]) not in result:
            result.append(str(sockaddr[0]))
    return result


def _ipv6_available() -> bool:
    """Whether this host can listen on IPv6 at all (a kernel booted with ipv6.disable=1 cannot)."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
    except OSError:
        return False
    return socket.has_ipv6


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def _explain(exc: OSError, addr: HostPort, owner: str) -> BindError:
    where = f"cannot listen on {addr} ({owner})"
    if exc.errno == errno.EADDRINUSE:
        owners = list(listeners_on_port(addr.port))
        if not owners:
            return BindError(f"{where}: address already in use")
        held = "; ".join(o.describe() for o in owners)
        hint = ""
        if all(ipaddress.ip_address(o.address).is_loopback for o in owners) and (
            ipaddress.ip_address(addr.host.split("%", 1)[0]).is_unspecified
        ):
            hint = (
                f" -- the upstream holds only loopback: listen on {NONLOOPBACK}:{addr.port} "
                "(or a specific address) instead of a wildcard"
            )
        return BindError(f"{where}: address already in use by {held}{hint}")
    if exc.errno == errno.EACCES:
        start = _unprivileged_port_start()
        if addr.port < start:
            return BindError(f"{where}: permission denied: ports below {start} need root or CAP_NET_BIND_SERVICE")
        return BindError(f"{where}: permission denied")
    if exc.errno == errno.EADDRNOTAVAIL:
        return BindError(f"{where}: address not available on this host")
    return BindError(f"{where}: {exc.strerror or exc}")


def ipv4_wildcard_ports(config: ProxyConfig) -> frozenset[int]:
    """Ports some route listens on at ``0.0.0.0`` (or ``*``): an ``[::]`` of the
    same port must then leave IPv4 to it (``IPV6_V6ONLY``)."""
    return frozenset(
        addr.port
        for route in config.routes
        for addr in route.listen
        if addr.host in ("0.0.0.0", EVERY_INTERFACE) and addr.port
    )


def dual_stack(configured_host: str, host: str, port: int, ipv4_taken: frozenset[int]) -> bool:
    """Whether the socket for ``host`` (expanded from ``configured_host``) takes both families."""
    return configured_host == "::" and host == "::" and port not in ipv4_taken


def _listening_socket(host: str, port: int, owner: str, *, both_families: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if both_families else 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _explain(exc, HostPort(host, port), owner) from None
    return sock


def open_listener(route: RouteConfig, host: str, port: int, *, both_families: bool = False) -> BoundListener:
    sock = _listening_socket(host, port, f"route {route.name}", both_families=both_families)
    return BoundListener(route, sock, HostPort(host, sock.getsockname()[1]))


def open_admin_listener(admin: AdminConfig) -> socket.socket | None:
    """The admin endpoint's socket (its first address), or None when off."""
    if admin.listen is None:
        return None
    host = expand_listen_host(admin.listen.host, admin.listen.port)[0]
    return _listening_socket(host, admin.listen.port, "admin endpoint", both_families=admin.listen.host == "::")


def bind_route(route: RouteConfig, ipv4_taken: frozenset[int] = frozenset()) -> list[BoundListener]:
    bound: list[BoundListener] = []
    try:
        for addr in route.listen:
            port = addr.port
            for host in expand_listen_host(addr.host, addr.port):
                both = dual_stack(addr.host, host, addr.port, ipv4_taken)
                listener = open_listener(route, host, port, both_families=both)
                bound.append(listener)
                port = port or listener.address.port  # (one address, one port: its other sockets share it)
    except BaseException:
        for listener in bound:
            listener.close()
        raise
    return bound


def bind_all(config: ProxyConfig) -> list[BoundListener]:
    bound: list[BoundListener] = []
    try:
        ipv4_taken = ipv4_wildcard_ports(config)
        for route in config.routes:
            bound.extend(bind_route(route, ipv4_taken))
    except BaseException:
        for listener in bound:
            listener.close()
        raise
    return bound


@dataclass
class Sockets:
    """Everything the worker listens on: route listeners and the admin socket."""

    routes: list[BoundListener]
    admin: socket.socket | None
    #: Adopted from systemd socket activation (systemd holds them too).
    activated: bool = False

    def close(self) -> None:
        for listener in self.routes:
            listener.close()
        if self.admin is not None:
            self.admin.close()

    def close_unshared(self, other: Sockets) -> None:
        """Close the route sockets that ``other`` does not use (after a reload)."""
        keep = {item.sock.fileno() for item in other.routes}
        for listener in self.routes:
            if listener.sock.fileno() >= 0 and listener.sock.fileno() not in keep:
                listener.close()


def bind_everything(config: ProxyConfig) -> Sockets:
    """Route listeners and the admin endpoint, all or nothing."""
    routes = bind_all(config)
    try:
        admin = open_admin_listener(config.admin)
    except BaseException:
        for listener in routes:
            listener.close()
        raise
    return Sockets(routes, admin)


# --- sockets across reloads and from systemd -----------------------------------------------


def _expanded(route_listen: list[Any]) -> list[tuple[str, int]]:
    return [(host, addr.port) for addr in route_listen for host in expand_listen_host(addr.host, addr.port)]


def rebind(current: Sockets, config: ProxyConfig) -> Sockets:
    """Sockets for ``config``, reusing the current ones where the address is
    unchanged -- for a port-0 address, the port the same route already has
    on that host -- and binding new addresses now (all or nothing)."""
    unclaimed = {(item.address.host, item.address.port): item for item in current.routes}
    ipv4_taken = ipv4_wildcard_ports(config)
    wanted = [
        (route, host, addr.port, (route.name, n), dual_stack(addr.host, host, addr.port, ipv4_taken))
        for route in config.routes
        for n, addr in enumerate(route.listen)
        for host in expand_listen_host(addr.host, addr.port)
    ]
    reused: dict[int, BoundListener] = {}
    for i, (_, host, port, _, _) in enumerate(wanted):  # explicit ports first: they cannot be taken by port 0
        if port and (host, port) in unclaimed:
            reused[i] = unclaimed.pop((host, port))
    for i, (route, host, port, _, _) in enumerate(wanted):
        if not port:
            mine = next(
                (item for item in unclaimed.values() if item.route.name == route.name and item.address.host == host),
                None,
            )
            if mine is not None:
                reused[i] = unclaimed.pop((mine.address.host, mine.address.port))
    fresh: list[BoundListener] = []
    result: list[BoundListener] = []
    ports: dict[tuple[str, int], int] = {}  # a port-0 address's port, shared by its sockets
    try:
        for i, (route, host, port, key, both) in enumerate(wanted):
            if i in reused:
                result.append(BoundListener(route, reused[i].sock, reused[i].address))
                ports.setdefault(key, reused[i].address.port)
                continue
            listener = open_listener(route, host, port or ports.get(key, 0), both_families=both)
            ports.setdefault(key, listener.address.port)
            fresh.append(listener)
            result.append(listener)
    except BaseException:
        for listener in fresh:
            listener.close()
        raise
    return Sockets(result, current.admin, current.activated)


def adopt_activated(config: ProxyConfig, adopted: list[tuple[str, socket.socket]]) -> Sockets:
    """Map systemd's sockets to routes: by FileDescriptorName = route name,
    else by address; routes left over are bound here."""
    pool = list(adopted)
    routes: list[BoundListener] = []
    for route in config.routes:
        named = [(n, s) for n, s in pool if n == route.name]
        if named:
            for item in named:
                pool.remove(item)
                sock = item[1]
                sock.setblocking(False)
                host, port = sock.getsockname()[:2]
                routes.append(BoundListener(route, sock, HostPort(host, port)))
            continue
        wanted = set(_expanded(list(route.listen)))
        matched = [(n, s) for n, s in pool if tuple(s.getsockname()[:2]) in wanted]
        for item in matched:
            pool.remove(item)
            item[1].setblocking(False)
            host, port = item[1].getsockname()[:2]
            routes.append(BoundListener(route, item[1], HostPort(host, port)))
        if not matched:
            routes.extend(bind_route(route, ipv4_wildcard_ports(config)))
    admin_sock = next((s for n, s in pool if n == "admin"), None)
    if admin_sock is not None:
        pool = [(n, s) for n, s in pool if s is not admin_sock]
    else:
        admin_sock = open_admin_listener(config.admin)
    for name, sock in pool:
        log(logger, logging.WARNING, "systemd.unused_socket", name=name, address=str(sock.getsockname()))
        sock.close()
    return Sockets(routes, admin_sock, activated=True)
