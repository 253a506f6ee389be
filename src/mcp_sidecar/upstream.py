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
* Each attempt is bounded by ``connect_timeout_s``.  Failed attempts are
  retried with exponential backoff (and jitter) until ``retry_window_s``
  has passed since the first one, so a restarting upstream costs the client
  a short wait instead of an error.
* The result is a plain non-blocking stdlib socket for the pump.
"""

from __future__ import annotations

import errno
import random
import socket
from dataclasses import dataclass, field

import trio

from .addresses import HostPort
from .errors import UpstreamUnavailable

INITIAL_BACKOFF_S = 0.025
MAX_BACKOFF_S = 0.5
HAPPY_EYEBALLS_DELAY_S = 0.25

_LOOPBACKS = ("127.0.0.1", "::1")


def is_localhost(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


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


def _to_stdlib(stream: trio.SocketStream) -> socket.socket:
    fd = stream.socket.detach()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


@dataclass
class Connector:
    """Connects to one upstream; remembers which loopback family answered."""

    upstream: HostPort
    connect_timeout_s: float
    retry_window_s: float
    _preferred_loopback: str = "127.0.0.1"
    #: Attempts that failed, over the connector's life (retries included).
    failed_attempts: int = 0
    #: The same, by ``classify`` reason.
    failures: dict[str, int] = field(default_factory=dict)

    async def attempt_once(self) -> socket.socket:
        host, port = self.upstream.host, self.upstream.port
        if not is_localhost(host):
            stream = await trio.open_tcp_stream(host, port, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S)
            return _to_stdlib(stream)
        first = self._preferred_loopback
        order = (first, *(a for a in _LOOPBACKS if a != first))
        last_error: OSError | None = None
        for address in order:
            try:
                stream = await trio.open_tcp_stream(address, port)
            except OSError as exc:
                last_error = exc
                continue
            self._preferred_loopback = address
            return _to_stdlib(stream)
        assert last_error is not None
        raise last_error

    async def connect(self) -> tuple[socket.socket, int]:
        """Return ``(socket, attempts)`` or raise ``UpstreamUnavailable``."""
        deadline = trio.current_time() + self.retry_window_s
        delay = INITIAL_BACKOFF_S
        attempts = 0
        while True:
            attempts += 1
            try:
                with trio.fail_after(self.connect_timeout_s):
                    return await self.attempt_once(), attempts
            except (OSError, trio.TooSlowError) as exc:
                error: BaseException = exc
                self.failed_attempts += 1
                reason = classify(exc)
                self.failures[reason] = self.failures.get(reason, 0) + 1
            pause = delay * random.uniform(0.8, 1.2)
            if trio.current_time() + pause >= deadline:
                detail = "timed out" if isinstance(error, trio.TooSlowError) else str(error)
                raise UpstreamUnavailable(str(self.upstream), classify(error), detail, attempts)
            await trio.sleep(pause)
            delay = min(delay * 2, MAX_BACKOFF_S)
