"""The supervisor's view of its workers: each one's process, channel, role
and latest heartbeat, and why it was killed.

Rules this module keeps:

* A ``Worker`` is state, not behaviour: the supervisor (supervisor.py) moves
  it from role to role; ``until`` waits for one of its events while it lives.
* Roles and kill reasons are enums: they decide how an exit is counted.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import trio

from ..config.model import ProxyConfig
from ..errors import SidecarError
from .channel import Channel
from .forkserver import WorkerProcess
from .messages import WorkerSnapshot

_ids = itertools.count(1)


def next_worker_id() -> int:
    return next(_ids)


class Role(StrEnum):
    """Where a worker is in its life."""

    STARTING = "starting"  # spawned, configuring
    STANDBY = "standby"  # configured, sockets adopted, not accepting
    ACTIVE = "active"  # serving
    DRAINING = "draining"  # replaced or stopping: no new connections
    EXITED = "exited"


class KillReason(StrEnum):
    """Why the supervisor killed a worker (decides how its exit is counted)."""

    HANG = "hang"  # silent past heartbeat_timeout (or never loaded)
    RESTART = "restart"  # proxyctl restart --hard
    RELOAD = "reload"
    STOP = "stop"
    STARTUP = "startup"  # did not come up in time


class Stopping(SidecarError):
    """A worker was to be spawned while the supervisor stops: it is not."""


@dataclass(eq=False)
class Worker:
    """One worker process as the supervisor sees it: its handle, channel,
    role and latest heartbeat."""

    id: int
    process: WorkerProcess
    channel: Channel
    config: ProxyConfig
    role: Role = Role.STARTING
    started: float = field(default_factory=trio.current_time)
    serving_since: float | None = None
    last_heartbeat: float | None = None
    snapshot: WorkerSnapshot | None = None
    kill_reason: KillReason | None = None
    expected_exit: bool = False
    returncode: int | None = None
    loaded: trio.Event = field(default_factory=trio.Event)
    serving: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)
    #: Its slot in the shared connection counts (None: none), and which counts (CountSlots).
    slot: int | None = None
    counts: Any = None
    #: Refresh messages sent, and how many its latest report had seen; set at each report.
    refreshes_sent: int = 0
    refreshed: int = 0
    reported: trio.Event = field(default_factory=trio.Event)
    #: Set when its channel is read to the end (its last report applied).
    followed: trio.Event = field(default_factory=trio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, reason: KillReason) -> None:
        if self.returncode is None and self.kill_reason is None:
            self.kill_reason = reason
        try:
            self.process.kill()
        except ProcessLookupError:
            pass

    def as_json(self, now: float) -> dict[str, Any]:
        routes = self.snapshot.routes if self.snapshot is not None else ()
        return {
            "id": self.id,
            "pid": self.pid,
            "state": self.role,
            "uptime_s": round(now - self.started, 3),
            "serving_s": None if self.serving_since is None else round(now - self.serving_since, 3),
            "heartbeat_age_s": None if self.last_heartbeat is None else round(now - self.last_heartbeat, 3),
            # (as of its latest report)
            "connections_active": sum(r.connections_active for r in routes),
            "connections_total": sum(r.connections_total for r in routes),
        }


async def until(worker: Worker, event: trio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` while the worker lives, at most ``timeout_s``:
    True if it happened and the worker is still alive."""
    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:

            async def first(ready: trio.Event) -> None:
                await ready.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, event)
            nursery.start_soon(first, worker.exited)
    return event.is_set() and not worker.exited.is_set()
