"""The validated configuration: frozen records, every default filled in.

Rules this module keeps:

* Nothing here parses or checks: ``parse.build_config`` builds these only
  from validated values, so code that holds a ``ProxyConfig`` can trust it.
* Fields that hold durations end in ``_s``, sizes in ``_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .addresses import HostPort, parse_hostport
from .defaults import (
    DEFAULT_ADMIN_LISTEN,
    DEFAULT_ALERT_MIN_INTERVAL_S,
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_ALERT_WINDOW_S,
    DEFAULT_BREAKER_FAILURES,
    DEFAULT_BREAKER_OPEN_S,
    DEFAULT_BUFFER_BYTES,
    DEFAULT_CONNECT_RETRY_WINDOW_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_CONNECTION_LOG,
    DEFAULT_CONNECTION_LOG_EVERY,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_GATE_HEAD_TIMEOUT_S,
    DEFAULT_HEALTH_FALL,
    DEFAULT_HEALTH_INTERVAL_MAX_S,
    DEFAULT_HEALTH_INTERVAL_S,
    DEFAULT_HEALTH_RISE,
    DEFAULT_HEALTH_TIMEOUT_S,
    DEFAULT_HEARTBEAT_INTERVAL_S,
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    DEFAULT_HISTORY_INTERVAL_S,
    DEFAULT_HISTORY_S,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_CONNECTING,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MCP_REQUEST_TIMEOUT_S,
    DEFAULT_MCP_TARGET_LIMIT,
    DEFAULT_OBSERVE_CPU_SHARE,
    DEFAULT_OBSERVE_MEMORY_BYTES,
    DEFAULT_RECORD_BODY_BYTES,
    DEFAULT_RECORD_MAX_BYTES,
    DEFAULT_RECORD_MAX_FILES,
    DEFAULT_REQUEST_LOG_RATE,
    DEFAULT_REQUEST_LOG_SAMPLE,
    DEFAULT_RESTART_BACKOFF_INITIAL_S,
    DEFAULT_RESTART_BACKOFF_MAX_S,
    DEFAULT_SPLICE,
    DEFAULT_STABLE_AFTER_S,
    DEFAULT_TAP_MAX_BYTES,
    DEFAULT_TAP_QUEUE,
    DEFAULT_TCP_KEEPALIVE_S,
    DEFAULT_TCP_STATS_INTERVAL_S,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT_S,
    DEFAULT_USER_TIMEOUT_S,
)
from .faults import FaultSpec
from .otel import OtelConfig


@dataclass(frozen=True)
class HealthSettings:
    """Active checks of a route's upstreams (TOML keys ``health_*``)."""

    #: Period (0: no checks); while stable it grows to interval_max.
    interval_s: float = DEFAULT_HEALTH_INTERVAL_S
    interval_max_s: float = DEFAULT_HEALTH_INTERVAL_MAX_S
    timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    #: Consecutive successes to mark an upstream healthy, failures to mark it down.
    rise: int = DEFAULT_HEALTH_RISE
    fall: int = DEFAULT_HEALTH_FALL
    #: L1 "tcp" connect, L2 "http" GET path or "ws" handshake + ping,
    #: L3 "mcp" initialize + ping on path.
    check: str = "tcp"
    path: str = "/"


@dataclass(frozen=True)
class BreakerSettings:
    """The circuit breaker (TOML keys ``breaker_*``)."""

    #: Consecutive clients that could not be connected open the circuit (0: never).
    failures: int = DEFAULT_BREAKER_FAILURES
    open_s: float = DEFAULT_BREAKER_OPEN_S


@dataclass(frozen=True)
class TlsSettings:
    """TLS towards clients (TOML keys ``tls_*``): certificate chain and key
    (PEM files), and the CA client certificates must be signed by (mutual
    TLS) when set."""

    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    #: A TLS handshake (either leg) must finish within this.
    handshake_timeout_s: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True)
class UpstreamTlsSettings:
    """TLS towards the upstream (TOML keys ``upstream_tls*``), verified
    against ``ca`` (else the system's trust store) for ``name`` (else the
    upstream's host)."""

    enabled: bool = False
    ca: str | None = None
    name: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class GateSettings:
    """The access gate (TOML keys ``gate*``; net/gate.py)."""

    #: "token": every HTTP request needs the gate's cookie or bearer token.
    mode: str = "off"
    token: str | None = field(default=None, repr=False)
    #: How the token was set: "config", "env" or "generated" (printed, not persisted).
    token_source: str | None = None
    #: A gated route's request head must be complete within this.
    head_timeout_s: float = DEFAULT_GATE_HEAD_TIMEOUT_S

    @property
    def on(self) -> bool:
        return self.mode == "token"


@dataclass(frozen=True)
class RouteObserveSettings:
    """What a route's observation records (TOML keys ``request_log*``,
    ``mcp_request_timeout``, ``target_label_limit``, ``target_label_resources``)."""

    #: An MCP request with no response within this is counted as "timeout".
    mcp_request_timeout_s: float = DEFAULT_MCP_REQUEST_TIMEOUT_S
    #: Distinct tool/prompt names labelled (``target``); later ones are "other".
    target_label_limit: int = DEFAULT_MCP_TARGET_LIMIT
    #: Resource URIs as target labels too (their number is the server's choice).
    target_label_resources: bool = False
    #: One JSON line per completed MCP request (event mcp.request): this
    #: share of them, at most request_log_rate lines per second.
    request_log: bool = False
    request_log_sample: float = DEFAULT_REQUEST_LOG_SAMPLE
    request_log_rate: int = DEFAULT_REQUEST_LOG_RATE


@dataclass(frozen=True)
class RouteSettings:
    """The per-route settings a ``[defaults]`` section may set: the
    forwarding ones here, the others grouped by concern (their TOML keys are
    flat, the group's name their prefix: ``health_interval`` is
    ``health.interval_s``)."""

    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    connect_retry_window_s: float = DEFAULT_CONNECT_RETRY_WINDOW_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Concurrent upstream connect attempts.
    max_connecting: int = DEFAULT_MAX_CONNECTING
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    tcp_keepalive_s: float = DEFAULT_TCP_KEEPALIVE_S
    #: TCP_USER_TIMEOUT of both legs (0: the kernel's default).
    user_timeout_s: float = DEFAULT_USER_TIMEOUT_S
    splice: bool = DEFAULT_SPLICE
    #: Readiness requires this route's upstream to be reachable.
    required: bool = True
    #: What controls access that the sidecar cannot see (the upstream's own
    #: authentication), in words: counts as an access control for the exposure
    #: warnings, and the banner names it.
    protected_by: str = ""
    #: "auto" sniffs the first client bytes for an HTTP request line.
    protocol: str = "auto"
    #: The proxy's own WebSocket keepalive: a ping to each side this often
    #: (0 = off); a side whose pong does not come within ws_ping_timeout is a
    #: zombie and the connection is closed.
    ws_ping_interval_s: float = 0.0
    ws_ping_timeout_s: float = 10.0
    #: The proxy's own SSE keepalive (0 = off): an open event stream whose
    #: upstream was silent this long gets a comment line at an event boundary.
    sse_keepalive_s: float = 0.0
    connection_log: str = DEFAULT_CONNECTION_LOG
    connection_log_every: int = DEFAULT_CONNECTION_LOG_EVERY
    #: Client networks allowed to connect (empty: everyone).
    allow: tuple[str, ...] = ()
    health: HealthSettings = field(default_factory=HealthSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    upstream_tls: UpstreamTlsSettings = field(default_factory=UpstreamTlsSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    observe: RouteObserveSettings = field(default_factory=RouteObserveSettings)


#: The groups of RouteSettings (attribute -> record type).
SETTING_GROUPS = {
    "health": HealthSettings,
    "breaker": BreakerSettings,
    "tls": TlsSettings,
    "upstream_tls": UpstreamTlsSettings,
    "gate": GateSettings,
    "observe": RouteObserveSettings,
}


@dataclass(frozen=True)
class RecordConfig:
    """``[observe] record``: the routes whose MCP conversations are recorded
    to files (forward/recorder.py), and the bounds of those files."""

    dir: str
    max_bytes: int = DEFAULT_RECORD_MAX_BYTES
    max_files: int = DEFAULT_RECORD_MAX_FILES
    max_body_bytes: int = DEFAULT_RECORD_BODY_BYTES
    #: Route names; empty: every route that observes (protocol other than tcp).
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObserveConfig:
    """The operator's views of observation: history and tap bounds."""

    #: How much history the admin endpoint keeps (0: none), and its resolution.
    history_s: float = DEFAULT_HISTORY_S
    history_interval_s: float = DEFAULT_HISTORY_INTERVAL_S
    #: Bytes of each message's params/result the tap shows.
    tap_max_bytes: int = DEFAULT_TAP_MAX_BYTES
    #: Messages a tap subscriber's queue holds before it drops.
    tap_queue: int = DEFAULT_TAP_QUEUE
    #: Recording to files (None: nothing is recorded unless proxyctl record asks).
    record: RecordConfig | None = None


@dataclass(frozen=True)
class AdminConfig:
    """Where the admin endpoint listens (None: nowhere) and its bearer token."""

    #: None: no admin endpoint.
    listen: HostPort | None = field(default_factory=lambda: parse_hostport(DEFAULT_ADMIN_LISTEN))
    #: Required (as a bearer token) for requests that change state and for the tap.
    token: str | None = field(default=None, repr=False)
    #: How the token was set: "config", "env" or "generated" (at start,
    #: written to the state directory for proxyctl; see supervise/statedir.py).
    token_source: str | None = None
    #: Let state-changing requests and the tap through without the token
    #: while the endpoint listens on loopback (anything on this host may then
    #: drain the worker or read tool arguments: a trade-off, docs/operations.md).
    open_on_loopback: bool = False
    #: Host names (besides IP literals and localhost) requests may name in
    #: their Host header: anything else is refused (DNS rebinding).
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class SupervisorConfig:
    """How the supervisor watches, replaces and alerts about its workers."""

    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    stable_after_s: float = DEFAULT_STABLE_AFTER_S
    restart_backoff_initial_s: float = DEFAULT_RESTART_BACKOFF_INITIAL_S
    restart_backoff_max_s: float = DEFAULT_RESTART_BACKOFF_MAX_S
    #: Keep a pre-started worker ready, so a dead worker is replaced in
    #: milliseconds instead of a cold Python start (~0.3 s).
    standby: bool = True
    #: "fork": workers forked from a pre-imported fork server (their memory
    #: shared copy-on-write); "exec": each a new interpreter. Read at start.
    worker_spawn: str = "fork"
    alert_threshold: int = DEFAULT_ALERT_THRESHOLD
    alert_window_s: float = DEFAULT_ALERT_WINDOW_S
    alert_min_interval_s: float = DEFAULT_ALERT_MIN_INTERVAL_S
    alert_webhook: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TlsMaterial:
    """What a route's TLS files held when the configuration was loaded (and
    validated): workers build their contexts from these bytes, never from
    the files, so a file broken on disk later cannot stop a worker from
    starting with the configuration that loaded (config/tls.py).  Key
    material: never in a repr, a log or a view."""

    cert_chain: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    client_ca: bytes | None = field(default=None, repr=False)
    upstream_ca: bytes | None = field(default=None, repr=False)
    #: The leaf certificate's end of validity (unix time), for expiry warnings.
    cert_not_after_unix: float | None = None


@dataclass(frozen=True)
class RouteConfig:
    """One route: its name, where it listens, its upstreams in order of preference, its settings."""

    name: str
    listen: tuple[HostPort, ...]
    #: In order of preference: the first reachable one gets the connection.
    upstreams: tuple[HostPort, ...]
    settings: RouteSettings = field(default_factory=RouteSettings)
    #: Faults injected on this route (``[[route.fault]]``; only with ``[faults] enabled``).
    faults: tuple[FaultSpec, ...] = ()
    #: The TLS files' contents as loaded with this configuration.
    tls_material: TlsMaterial = field(default_factory=TlsMaterial, repr=False, compare=False)

    @property
    def health(self) -> HealthSettings:
        return self.settings.health

    @property
    def breaker(self) -> BreakerSettings:
        return self.settings.breaker

    @property
    def tls(self) -> TlsSettings:
        return self.settings.tls

    @property
    def upstream_tls(self) -> UpstreamTlsSettings:
        return self.settings.upstream_tls

    @property
    def gate(self) -> GateSettings:
        return self.settings.gate

    @property
    def observe(self) -> RouteObserveSettings:
        return self.settings.observe

    @property
    def upstream(self) -> HostPort:
        """The preferred upstream."""
        return self.upstreams[0]

    @property
    def upstream_text(self) -> str:
        return ", ".join(str(u) for u in self.upstreams)


@dataclass(frozen=True)
class ProxyConfig:
    """The whole validated configuration: routes and the process-wide settings."""

    routes: tuple[RouteConfig, ...]
    #: Forwarding workers under a supervisor; 0 ("auto"): one per CPU this
    #: process may use (affinity mask and cgroup quota), decided at start.
    workers: int = 0
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    tcp_stats_interval_s: float = DEFAULT_TCP_STATS_INTERVAL_S
    observe_cpu_share: float = DEFAULT_OBSERVE_CPU_SHARE
    observe_memory_bytes: int = DEFAULT_OBSERVE_MEMORY_BYTES
    #: Let a guarded profile (PROFILE_RISKS) listen beyond loopback anyway:
    #: for a trusted network only; warned about at start and in every status.
    dangerously_expose_unprotected: bool = False
    #: ``[faults] enabled``: fault injection may be configured and added at
    #: run time.  Off, no fault can be turned on, not even through the API.
    faults_enabled: bool = False
    admin: AdminConfig = field(default_factory=AdminConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    #: OpenTelemetry: every observed MCP request as a span (off unless an endpoint is set).
    otel: OtelConfig = field(default_factory=OtelConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    profile: str | None = None
    source: str = "<defaults>"
