"""Connecting to an upstream: per connection, both families, with a retry window.

Rules this module keeps:

* Names are resolved per connection, never cached across connections, so an
  upstream that moves (container restart, DNS change) is followed.
* ``localhost`` (and ``*.localhost``) always means both loopbacks, ``::1``
  and ``127.0.0.1`` (RFC 6761 section 6.3), whatever /etc/hosts says: Node
  servers "on localhost" often listen on ``::1`` only.  The family that
  answered last is tried first; a loopback refusal is immediate, so trying
  them in turn costs nothing.  Other names go through trio's happy eyeballs
  (``open_tcp_stream``), which tries every resolved address.
* IP literals and the loopbacks need no resolver and no happy eyeballs: a
  raw non-blocking ``connect`` and one ``wait_writable`` (the per-connection
  path is most of the cost of one-request-per-connection traffic).
* A route may have several upstreams: each attempt tries them in order
  (healthy ones first), so failover is immediate and failback happens as
  soon as the first one passes its checks again.
* At most ``max_connecting`` attempts of a route are in flight at once; the
  others wait for a slot (inside their retry window): hundreds of clients
  arriving while the upstream is down do not become a reconnect storm.
* Each attempt is bounded by ``connect_timeout_s``.  Failed attempts are
  retried with exponential backoff (and jitter) until ``retry_window_s``
  has passed since the first one, so a restarting upstream costs the client
  a short wait instead of an error.
* Running out of a local resource (``EMFILE``, ``ENFILE``, ``ENOBUFS``,
  ``ENOMEM``) raises ``LocalResourceError`` at once: it is this host's
  fault, so it is never counted as an upstream failure nor retried.
* The result is a plain non-blocking stdlib socket for the pump.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import ssl
from collections.abc import Callable

import trio

from ..config.addresses import HostPort
from ..errors import ClientGone, LocalResourceError, UpstreamUnavailable

INITIAL_BACKOFF_S = 0.025
MAX_BACKOFF_S = 0.5
HAPPY_EYEBALLS_DELAY_S = 0.25

_LOOPBACKS = ("127.0.0.1", "::1")


def is_localhost(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


#: errno -> what this host ran out of: a local fault, never the upstream's.
LOCAL_RESOURCE_ERRNOS = {
    errno.EMFILE: "descriptors",
    errno.ENFILE: "descriptors",
    errno.ENOBUFS: "buffers",
    errno.ENOMEM: "memory",
}


def local_resource_error(exc: BaseException) -> LocalResourceError | None:
    """The local resource ``exc`` says this host ran out of, if it does."""
    errors = [exc]
    if isinstance(exc, OSError) and isinstance(exc.__cause__, BaseExceptionGroup):
        errors += [e for e in exc.__cause__.exceptions if isinstance(e, OSError)]
    for error in errors:
        if isinstance(error, OSError) and error.errno in LOCAL_RESOURCE_ERRNOS:
            return LocalResourceError(
                LOCAL_RESOURCE_ERRNOS[error.errno], errno.errorcode[error.errno], error.strerror or str(error)
            )
    return None


def classify(exc: BaseException) -> str:
    """A bounded label for why a connect failed (used in metrics and logs)."""
    if isinstance(exc, trio.TooSlowError):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, OSError):
        errors = [exc]
        # trio raises an OSError whose __cause__ is a group of per-address errors.
        cause = exc.__cause__
        if isinstance(cause, BaseExceptionGroup):
            errors = [e for e in cause.exceptions if isinstance(e, OSError)] or errors
        codes = {e.errno for e in errors}
        if codes & {errno.ECONNREFUSED}:
            return "refused"
        if codes & {errno.ETIMEDOUT}:
            return "timeout"
        if codes & {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}:
            return "unreachable"
    return "error"


def literal_family(host: str) -> int | None:
    """AF_INET or AF_INET6 when ``host`` is an IP literal, else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


_STREAM_FLAGS = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0) | getattr(socket, "SOCK_CLOEXEC", 0)


async def connect_literal(family: int, host: str, port: int) -> socket.socket:
    """A non-blocking TCP connection to an IP literal (the caller bounds the time)."""
    sock = socket.socket(family, _STREAM_FLAGS)
    try:
        sock.setblocking(False)
        try:
            sock.connect((host, port))
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, f"connect to {host}:{port}: {os.strerror(error)}") from None
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    return sock


def _to_stdlib(stream: trio.SocketStream) -> socket.socket:
    fd = stream.socket.detach()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


class Connector:
    """Connects a route to its upstreams; remembers which loopback answered.

    ``order()`` gives the addresses to try, in order (healthy ones first, see
    health.RouteHealth.preferred); each attempt tries them in turn, so a
    connection fails over to the next address at once.  At most
    ``max_connecting`` attempts run at the same time.
    """

    def __init__(
        self,
        upstreams: tuple[HostPort, ...],
        connect_timeout_s: float,
        retry_window_s: float,
        max_connecting: int = 64,
        order: Callable[[], list[HostPort]] | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        tls_name: str | None = None,
    ) -> None:
        self.upstreams = upstreams
        #: TLS towards the upstream (None: clear text), verified for tls_name
        #: or else the address's host; the caller does the handshake.
        self.tls = tls
        self.tls_name = tls_name
        self.connect_timeout_s = connect_timeout_s
        self.retry_window_s = retry_window_s
        self.order = order or (lambda: list(upstreams))
        self._limiter = trio.Semaphore(max_connecting)
        self._preferred_loopback = "127.0.0.1"
        #: host -> its family if an IP literal, None for a name (the upstreams' hosts only: bounded).
        self._families: dict[str, int | None] = {}
        #: Attempts that failed, over the connector's life (retries included).
        self.failed_attempts = 0
        #: The same, by ``classify`` reason.
        self.failures: dict[str, int] = {}
        self.connecting = 0
        self.connecting_peak = 0
        #: Which address each successful connection went to, by address.
        self.connected_to: dict[str, int] = {}
        #: Failed attempts by address (the upstreams' only: bounded).
        self.failed_to: dict[str, int] = {}

    @property
    def upstream(self) -> HostPort:
        return self.upstreams[0]

    async def attempt_address(self, address: HostPort) -> socket.socket:
        host, port = address.host, address.port
        family = self._families.get(host, -1)
        if family == -1:
            family = self._families[host] = literal_family(host)
        if family is not None:
            return await connect_literal(family, host, port)
        if not is_localhost(host):
            stream = await trio.open_tcp_stream(host, port, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S)
            return _to_stdlib(stream)
        first = self._preferred_loopback
        order = (first, *(a for a in _LOOPBACKS if a != first))
        last_error: OSError | None = None
        for loopback in order:
            try:
                sock = await connect_literal(socket.AF_INET if "." in loopback else socket.AF_INET6, loopback, port)
            except OSError as exc:
                if exc.errno in LOCAL_RESOURCE_ERRNOS:
                    raise
                last_error = exc
                continue
            self._preferred_loopback = loopback
            return sock
        assert last_error is not None
        raise last_error

    async def attempt_once(self) -> tuple[socket.socket, HostPort]:
        """One pass over the upstreams, in order; each bounded by connect_timeout."""
        if self._limiter.value:  # a free slot, the usual case: no scheduling round trip for it
            self._limiter.acquire_nowait()
        else:
            await self._limiter.acquire()
        try:
            self.connecting += 1
            self.connecting_peak = max(self.connecting_peak, self.connecting)
            try:
                error: BaseException | None = None
                for address in self.order():
                    try:
                        # A bare cancel scope: trio.fail_after is a generator-based
                        # context manager, a measurable share of a connection's cost.
                        with trio.CancelScope(deadline=trio.current_time() + self.connect_timeout_s) as scope:
                            sock = await self.attempt_address(address)
                        if scope.cancelled_caught:
                            raise trio.TooSlowError
                    except (OSError, trio.TooSlowError) as exc:
                        local = local_resource_error(exc)
                        if local is not None:
                            raise local from None  # not the upstream's fault: not counted against it
                        error = exc
                        self.failed_attempts += 1
                        reason = classify(exc)
                        self.failures[reason] = self.failures.get(reason, 0) + 1
                        key = str(address)
                        self.failed_to[key] = self.failed_to.get(key, 0) + 1
                        continue
                    key = str(address)
                    self.connected_to[key] = self.connected_to.get(key, 0) + 1
                    return sock, address
                assert error is not None
                raise error
            finally:
                self.connecting -= 1
        finally:
            self._limiter.release()

    async def connect(self, client_gone: Callable[[], bool] = lambda: False) -> tuple[socket.socket, int, HostPort]:
        """Return ``(socket, attempts, address)`` or raise ``UpstreamUnavailable``.

        ``client_gone`` is asked before every attempt, between attempts and
        once connected: when the client has left, ``ClientGone`` is raised
        (and a fresh upstream socket closed) instead of delivering a request
        nobody waits for -- as Envoy aborts the upstream connect when the
        downstream closes first.  Such attempts count against nobody.
        """
        deadline = trio.current_time() + self.retry_window_s
        delay = INITIAL_BACKOFF_S
        attempts = 0
        while True:
            if attempts and client_gone():
                raise ClientGone(attempts)
            attempts += 1
            try:
                sock, address = await self.attempt_once()
            except (OSError, trio.TooSlowError) as exc:
                error: BaseException = exc
            else:
                if attempts > 1 and client_gone():  # it left while we retried
                    sock.close()
                    raise ClientGone(attempts)
                return sock, attempts, address
            pause = delay * random.uniform(0.8, 1.2)
            if trio.current_time() + pause >= deadline:
                if client_gone():
                    raise ClientGone(attempts)
                detail = "timed out" if isinstance(error, trio.TooSlowError) else str(error)
                names = ", ".join(str(u) for u in self.upstreams)
                raise UpstreamUnavailable(names, classify(error), detail, attempts)
            await trio.sleep(pause)
            delay = min(delay * 2, MAX_BACKOFF_S)
