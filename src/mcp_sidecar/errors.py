"""Errors, split by who is to blame (the h11 way).

* ``LocalError`` -- the operator's input or this host is wrong: a bad config
  field, a busy port, a missing permission.  The CLI prints ``str(err)`` as
  one line, without a traceback, and exits with ``err.exit_code``.
* ``RemoteError`` -- a peer misbehaved or is absent (upstream refused, reset,
  timed out).  These are per-connection facts: they are counted and logged,
  never fatal to the process.

Exit codes follow the table in docs/cli.md; no code has two meanings:
0 ok, 1 runtime failure (cannot bind, ...; ``status``/``check``: degraded),
2 usage or configuration error, 3 not running (LSB ``status``), 4 stopping
(a stop is in progress: the workers are draining), 5 ``check``: a target
is unreachable, 6 ``stop --wait``: still running when the wait ended.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_STOPPING = 4
EXIT_UNREACHABLE = 5
EXIT_STILL_RUNNING = 6


class SidecarError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = EXIT_FAILURE


class LocalError(SidecarError):
    """The operator's input or the local host is at fault."""


class ConfigError(LocalError):
    """An invalid configuration value.

    ``source`` is the file (or ``--forward``, ``--profile``), ``field`` the
    dotted path of the offending key (``route[1].upstream``).
    """

    exit_code = EXIT_USAGE

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        self.message = message
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {message}")


class BindError(LocalError):
    """A listening socket could not be opened (busy, privileged, absent)."""

    exit_code = EXIT_FAILURE


class LocalResourceError(LocalError):
    """This host ran out of something a connection needs (descriptors, socket
    buffers, memory): the fault is local, never the upstream's.

    ``resource`` is a bounded label (``descriptors``, ``buffers``,
    ``memory``) for metrics; ``errno_name`` says which error it was.
    """

    def __init__(self, resource: str, errno_name: str, detail: str) -> None:
        self.resource = resource
        self.errno_name = errno_name
        super().__init__(f"out of {resource} ({errno_name}): {detail}")


class RemoteError(SidecarError):
    """A peer (client or upstream) is at fault."""


class ObserverError(RemoteError, ValueError):
    """A peer's bytes break the protocol an in-line observer reads (HTTP,
    SSE, WebSocket): that observer gives up on its connection, the bytes
    keep flowing.  (Also a ``ValueError``: it is a malformed value.)"""


class ClientGone(RemoteError):
    """The client left (reset, or closed an HTTP request) before an upstream
    connection was made: nothing is delivered, nothing counts as an upstream
    failure."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        super().__init__(f"the client left during {attempts} upstream connect attempt(s)")


class UpstreamUnavailable(RemoteError):
    """No upstream connection could be made within the retry window.

    ``reason`` is a bounded label (``refused``, ``timeout``, ``unreachable``,
    ``dns``, ``error``) suitable for metrics.
    """

    def __init__(self, upstream: str, reason: str, detail: str, attempts: int) -> None:
        self.upstream = upstream
        self.reason = reason
        self.detail = detail
        self.attempts = attempts
        super().__init__(f"upstream {upstream} unavailable after {attempts} attempt(s): {detail}")
