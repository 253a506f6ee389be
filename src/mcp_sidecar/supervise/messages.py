"""The supervisor <-> worker protocol: typed messages over the private channel.

Life of a worker, as the messages tell it::

    supervisor                       worker
    Configure(config, listeners, ...) ->
                                  <- Loaded(pid)          now a standby, heartbeating
    Activate()                     ->
                                  <- Serving()            accepting, admin answering
                                  <- Heartbeat(snapshot)  every heartbeat_interval
    Facts(facts)                   ->                     what /api/status shows of supervision
    Drain(handover)                ->                     stop accepting, drain, exit 0
    StopNow()                      ->                     close every connection

Rules this module keeps:

* Every message is a frozen, slotted class; the union types say which side
  sends what.  The channel pickles them as they are: it is a private
  socketpair between a supervisor and the worker it spawned, so pickle (which
  carries the validated ``ProxyConfig`` whole) is safe there and nowhere else.
* ``Drain.handover``: a successor serves (a restart or reload), so the
  draining worker stops answering on the shared admin socket; without one (a
  stop) it keeps answering the probes through the drain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..admin.status import RouteStatus
from ..config.model import ProxyConfig


@dataclass(frozen=True, slots=True)
class ListenerPlan:
    """An inherited listening socket: which route it serves, its descriptor
    in the worker, and the address it is bound to."""

    route_index: int
    fd: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Configure:
    """The worker's configuration and the sockets it inherits (the first message)."""

    config: ProxyConfig
    listeners: tuple[ListenerPlan, ...]
    admin_fd: int | None
    log_format: str
    log_level: str
    heartbeat_interval_s: float


@dataclass(frozen=True, slots=True)
class Activate:
    """Start accepting and answering the admin endpoint."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop accepting and drain; see the module's rules for ``handover``."""

    handover: bool


@dataclass(frozen=True, slots=True)
class StopNow:
    """Close every connection at once (a second stop signal)."""


@dataclass(frozen=True, slots=True)
class StateWriteFacts:
    """Whether the supervisor's state directory takes writes (counters, events)."""

    writable: bool = True
    failures: int = 0
    error: str | None = None
    failing_since_unix: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "writable": self.writable,
            "write_failures": self.failures,
            "error": self.error,
            "failing_since_unix": self.failing_since_unix,
        }


@dataclass(frozen=True, slots=True)
class SupervisionFacts:
    """What a worker shows of its supervisor (``/api/status``, metrics)."""

    supervisor_pid: int
    supervisor_uptime_s: float
    restarts: dict[str, int] = field(default_factory=dict)
    consecutive_failures: int = 0
    upstream_connect_failures: dict[str, int] = field(default_factory=dict)
    state_writes: StateWriteFacts = field(default_factory=StateWriteFacts)

    def as_json(self) -> dict[str, Any]:
        return {
            "supervisor_pid": self.supervisor_pid,
            "supervisor_uptime_s": self.supervisor_uptime_s,
            "restarts": dict(self.restarts),
            "consecutive_failures": self.consecutive_failures,
            "upstream_connect_failures": dict(self.upstream_connect_failures),
            "state_dir": self.state_writes.as_json(),
        }


@dataclass(frozen=True, slots=True)
class Facts:
    """The supervisor's latest facts, for the worker's views."""

    facts: SupervisionFacts


@dataclass(frozen=True, slots=True)
class Loaded:
    """Configured and heartbeating: a standby."""

    pid: int


@dataclass(frozen=True, slots=True)
class Serving:
    """Accepting on the inherited sockets."""


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """What the supervisor keeps of a worker from its last heartbeat."""

    pid: int
    draining: bool
    routes: tuple[RouteStatus, ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent from the event loop every heartbeat_interval: the loop is alive."""

    snapshot: WorkerSnapshot


#: What the supervisor sends.
ToWorker = Configure | Activate | Drain | StopNow | Facts
#: What a worker sends.
ToSupervisor = Loaded | Serving | Heartbeat
