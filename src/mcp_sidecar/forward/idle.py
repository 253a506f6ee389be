"""The idle watcher: closes a connection that moved no byte for idle_timeout.

It wakes ``IDLE_CHECKS_PER_TIMEOUT`` times per timeout and compares the byte
counters, so the hot path pays nothing for it: a connection is closed
between 1 and 1.25 idle_timeouts after its last byte.
"""

from __future__ import annotations

import trio

from .state import Connection, End

IDLE_CHECKS_PER_TIMEOUT = 4
IDLE_TASK = "mcp_sidecar.forward.idle.idle_watch"


async def idle_watch(conn: Connection, timeout_s: float, scope: trio.CancelScope) -> None:
    last = (conn.c2u.bytes, conn.u2c.bytes)
    quiet_since = trio.current_time()
    while True:
        await trio.sleep(timeout_s / IDLE_CHECKS_PER_TIMEOUT)
        now = trio.current_time()
        seen = (conn.c2u.bytes, conn.u2c.bytes)
        if seen != last:
            last, quiet_since = seen, now
        elif now - quiet_since >= timeout_s:
            conn.end = End.IDLE_TIMEOUT
            scope.cancel()
            return
