"""Answers still on their way to the client: when it took them.

Why: an answer is observed when its last byte is handed to the kernel, but
a client that reads slowly takes it later -- its bytes wait in the kernel's
send buffer, where no pump blocks (loopback and fast links grow that
buffer to megabytes).  Who was slow's ``client`` part needs the moment the
client had them all: the kernel says it (``tcpi_bytes_acked``).

Rules this module keeps:

* Watched: an answer whose client had, at its last byte, at least
  ``WATCH_BYTES`` not yet acknowledged (mcprecords.py decides).  Its
  report (metrics, figures, request log) waits until the client
  acknowledged those bytes, or ``MAX_WATCH_S`` passed, or its connection
  closed: then the callback gets the seconds it took.
* Bounded: at most ``MAX_WATCHED`` at a time; past it, ``watch`` says no
  and the answer is reported at once with the kernel's estimate.  Polled
  every ``POLL_S`` (one ``getsockopt`` per watched answer), only while
  something is watched.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..net.tcpinfo import bytes_acked

#: Unacknowledged bytes at an answer's end that make it worth watching.
WATCH_BYTES = 64 * 1024
MAX_WATCHED = 256
POLL_S = 0.01
#: Past this, the answer is reported as taken now (the client stalled).
MAX_WATCH_S = 60.0


@dataclass(slots=True)
class _Watched:
    sock: socket.socket
    target: int
    since: float
    done: Callable[[float, float], None]


class DrainWatch:
    """The worker's answers on their way to slow clients (see the rules above)."""

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self.clock = clock
        self.watched: list[_Watched] = []
        self._wakeup: trio.Event | None = None

    def watch(self, sock: socket.socket, unacked: int, since: float, done: Callable[[float, float], None]) -> bool:
        """Call ``done(seconds_to_take, now)`` once the client acknowledged the
        ``unacked`` bytes it had at ``since``; False (nothing watched) when full
        or the kernel does not say."""
        acked = bytes_acked(sock)
        if acked is None or len(self.watched) >= MAX_WATCHED:
            return False
        self.watched.append(_Watched(sock, acked + unacked, since, done))
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
        return True

    def poll(self) -> None:
        """Report the answers their clients took (or that waited too long)."""
        now = self.clock()
        still = []
        for item in self.watched:
            acked = bytes_acked(item.sock) if item.sock.fileno() >= 0 else None
            if acked is None or acked >= item.target or now - item.since >= MAX_WATCH_S:
                item.done(now - item.since, now)
            else:
                still.append(item)
        self.watched = still

    async def run(self) -> None:
        """Poll while something is watched (the worker's task)."""
        while True:
            if not self.watched:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            await trio.sleep(POLL_S)
            self.poll()
