"""The supervisor <-> worker protocol: typed messages over the private channel.

Life of a worker, as the messages tell it::

    supervisor                       worker
    Configure(config, listeners, ...) ->
                                  <- Loaded(pid)          now a standby, heartbeating
    Activate()                     ->
                                  <- Serving()            accepting
                                  <- Heartbeat(snapshot)  every heartbeat_interval: its report
    Refresh()                      ->                     a Heartbeat now (a scrape wants it fresh)
    Facts(facts)                   ->                     what the views show of supervision
    HealthUpdate(routes)           ->                     the supervisor's upstream checks
    Query(id, kind, args)          ->                     connections for the admin endpoint
                                  <- Answer(id, payload)
    TapOn(filters)                 ->                     relay MCP messages (none: stop)
                                  <- TapBatch(records)
    Drain(handover)                ->                     stop accepting, drain, exit 0
    StopNow()                      ->                     close every connection

With several workers the supervisor serves the admin endpoint and runs the
health checks itself; each worker reports (``WorkerSnapshot``) what the
merged views need, and hands over the MCP messages that travel on two
connections (the legacy transport, the Inspector v2 API), which may be two
workers, for the supervisor to correlate.

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
from ..config.faults import FaultSpec
from ..config.model import ProxyConfig
from ..observe.recording import Line


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
    #: The worker's slot in the shared per-route connection counts (limits.py),
    #: and that memory's descriptor; None: no sharing (one worker).
    slot: int | None = None
    counts_fd: int | None = None
    counts_slots: int = 0
    #: The MCP messages that travel on two connections go to the supervisor.
    correlate_remotely: bool = False
    #: This worker's id (its connections are numbered from id x CONN_IDS_PER_WORKER)
    #: and how many workers serve the routes at once.
    worker_id: int = 0
    workers: int = 1


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
class McpDelta:
    """A route's MCP since the worker's last report (forward/statsrelay.py):
    outcomes, session and client activity, and the messages of transports
    that span connections (for the supervisor's correlation)."""

    route: str
    #: (at_unix, method, status, duration_s, transport, protocol_version, target)
    outcomes: tuple[tuple[Any, ...], ...] = ()
    #: (key, client, transport, at_unix, requests, last_method, version)
    sessions: tuple[tuple[Any, ...], ...] = ()
    #: (address, transport, at_unix, requests, last_method, version)
    clients: tuple[tuple[Any, ...], ...] = ()
    ended: tuple[str, ...] = ()
    #: (origin, message as a mapping, at_unix, session, transport, size, trace, version, target)
    remote: tuple[tuple[Any, ...], ...] = ()
    #: Requests awaiting their answer now, by method.
    in_flight: dict[str, int] = field(default_factory=dict)
    request_log: dict[str, Any] | None = None
    #: The worker's own figures of the route's MCP traffic now (streams open and
    #: ended, progress notifications, conformance, targets capped, connections).
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """What the supervisor keeps of a worker from its last heartbeat: what
    ``proxyctl status`` and the merged admin views need."""

    pid: int
    draining: bool
    routes: tuple[RouteStatus, ...]
    #: Its metric families: (name, type, documentation, ((sample, labels, value), ...)).
    families: tuple[tuple[Any, ...], ...] = ()
    #: Why it is not ready, as far as it alone can tell (local resources, ...).
    readiness: tuple[str, ...] = ()
    mcp: tuple[McpDelta, ...] = ()
    #: Its observation budget, inspection memory and local exhaustion (/api/status).
    local: dict[str, Any] = field(default_factory=dict)
    #: route -> the median kernel RTT of each leg over its newest connections.
    rtt: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: When it was built (unix time): every message it relays up to then is in it.
    at_unix: float = 0.0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent from the event loop every heartbeat_interval: the loop is alive."""

    snapshot: WorkerSnapshot
    #: How many Refresh messages the worker had received when it built this.
    refreshed: int = 0


@dataclass(frozen=True, slots=True)
class Refresh:
    """Send a Heartbeat now."""


@dataclass(frozen=True, slots=True)
class HealthUpdate:
    """The supervisor's view of the upstreams: route name -> each upstream's
    check state (health/checks.py ``UpstreamHealth``), in the route's order."""

    routes: tuple[tuple[str, tuple[Any, ...]], ...]


@dataclass(frozen=True, slots=True)
class Query:
    """A question of the admin endpoint: ``connections`` (route, offset,
    limit; or just the count) or ``connection`` (id)."""

    id: int
    kind: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    id: int
    payload: Any


@dataclass(frozen=True, slots=True)
class RouteControls:
    """What operators set on routes (route name, state, since unix); a route not
    named is enabled."""

    controls: tuple[tuple[str, str, float], ...]


@dataclass(frozen=True, slots=True)
class RuntimeFaults:
    """The operators' faults (spec, expiry as unix time or None) and the
    configured faults they took out ((route, name)): a worker's runtime faults
    become exactly these."""

    faults: tuple[tuple[FaultSpec, float | None], ...]
    suppressed: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LogLevel:
    level: str


@dataclass(frozen=True, slots=True)
class TapOn:
    """Relay the MCP messages these filters want (none: stop relaying)."""

    filters: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class TapBatch:
    """MCP messages for the supervisor's tap subscribers, and how many the relay
    dropped; for its recordings, the messages' lines encoded (observe/recording.py's ``Line``)."""

    records: tuple[dict[str, Any], ...]
    dropped: int = 0
    lines: tuple[Line, ...] = ()


#: What the supervisor sends.
ToWorker = (
    Configure
    | Activate
    | Drain
    | StopNow
    | Facts
    | Refresh
    | HealthUpdate
    | Query
    | TapOn
    | RouteControls
    | RuntimeFaults
    | LogLevel
)
#: What a worker sends.
ToSupervisor = Loaded | Serving | Heartbeat | Answer | TapBatch
