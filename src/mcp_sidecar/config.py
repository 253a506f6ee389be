"""Configuration: TOML file, ``--forward`` specs and profiles -> ``ProxyConfig``.

Rules this module keeps:

* Every value is validated before anything is bound or started; the first
  problem raises ``ConfigError`` naming the source, the field and the fault.
* Unknown keys are errors (a typo must not silently fall back to a default).
* Durations are seconds: a TOML number (``5``, ``0.25``) or a string with a
  unit (``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``).  Internally every field
  that holds a duration ends in ``_s``; sizes end in ``_bytes``.
* Routes are numbered from 1 in messages: ``route[1]`` is the first.

File layout::

    [proxy]                      # process-wide settings
    drain_timeout = "25s"

    [defaults]                   # per-route settings every route inherits
    connect_timeout = "5s"

    [[route]]
    name = "ui"
    listen = "0.0.0.0:6274"      # or a list of addresses
    upstream = "localhost:6274"
    idle_timeout = "10m"         # any [defaults] key may be overridden here
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from .addresses import NONLOOPBACK, AddressSyntaxError, HostPort, beyond_loopback, parse_forward, parse_hostport
from .errors import ConfigError

# --- defaults, with their units -------------------------------------------------

#: Per attempt; a SYN to a dead host otherwise waits for the kernel (~2 min).
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: While the upstream refuses, keep retrying this long so that a restarting
#: upstream (Inspector reload, container restart) does not fail the client.
DEFAULT_CONNECT_RETRY_WINDOW_S = 5.0
#: Off: the Inspector's /sse and /stdio streams stay silent for 20 s and more,
#: WebSockets may idle for hours.  Dead peers are found by TCP keepalive.
DEFAULT_IDLE_TIMEOUT_S = 0.0
DEFAULT_MAX_CONNECTIONS = 1024
#: One buffer per direction per connection: the memory bound of a connection.
DEFAULT_BUFFER_BYTES = 256 * 1024
#: TCP keepalive idle time before the first probe (0 disables keepalive).
DEFAULT_TCP_KEEPALIVE_S = 60.0
#: Opaque TCP moves bytes with splice(2) through a pipe of buffer_size:
#: the kernel copies them, never Python (~1.6x the copying pump's throughput).
DEFAULT_SPLICE = True
#: Below Kubernetes' default 30 s termination grace period.
DEFAULT_DRAIN_TIMEOUT_S = 25.0
#: Fraction of one CPU core in-line observation may use (budget.py); beyond
#: it, observation is shed connection by connection and forwarding goes on at
#: full speed.  An h11 exchange costs ~2-4x what forwarding it does, so 0.2
#: keeps a saturated worker's forwarding rate >= 0.8 of opaque TCP while
#: leaving room for ~1,000 observed exchanges per second.  1 never sheds.
DEFAULT_OBSERVE_CPU_SHARE = 0.2
#: All inspection buffers of a worker together (JSON bodies being collected,
#: SSE lines, WebSocket text messages): bounded whatever the number of
#: connections, so a flood of half-sent large bodies cannot OOM-kill a
#: memory-limited container.  Beyond it observers give up, counted.
DEFAULT_OBSERVE_MEMORY_BYTES = 64 * 1024 * 1024
#: Kernel TCP_INFO (RTT, retransmits) is sampled for every connection this
#: often, and once more at close (Envoy's tcp_stats model).
DEFAULT_TCP_STATS_INTERVAL_S = 10.0
#: Active upstream check period; 0 disables checks.  While an upstream is
#: stable the period grows to health_interval_max; after a failure or a
#: state change it drops to a quarter of health_interval (seed 003).
DEFAULT_HEALTH_INTERVAL_S = 5.0
DEFAULT_HEALTH_INTERVAL_MAX_S = 30.0
DEFAULT_HEALTH_TIMEOUT_S = 2.0
HEALTH_CHECKS = ("tcp", "http", "ws", "mcp")
#: The per-connection ``connection.closed`` line: every one, the ones that did
#: not end cleanly plus one clean one in ``connection_log_every``, or none.
#: The counters (mcp_sidecar_connections_closed_total{end}) count all either way.
CONNECTION_LOGS = ("all", "sampled", "off")
DEFAULT_CONNECTION_LOG = "sampled"
DEFAULT_CONNECTION_LOG_EVERY = 100
PROTOCOLS = ("auto", "tcp", "http")
#: Passive health: this many consecutive clients that could not be connected
#: to the upstream open the circuit for breaker_open; then one client is let
#: through as a probe (seed 002: 5 failures, 30 s).
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_OPEN_S = 30.0
#: The MCP SDKs' default request timeout is 60 s.
DEFAULT_MCP_REQUEST_TIMEOUT_S = 60.0
#: Concurrent upstream connect attempts per route: hundreds of clients
#: arriving while the upstream is down do not become a reconnect storm.
DEFAULT_MAX_CONNECTING = 64
#: Consecutive successes to mark an upstream healthy, failures to mark it
#: down (HAProxy's rise/fall).
DEFAULT_HEALTH_RISE = 2
DEFAULT_HEALTH_FALL = 3
#: Supervision: the worker heartbeats this often; a worker silent for
#: heartbeat_timeout is killed and replaced (counted as a hang).
DEFAULT_HEARTBEAT_INTERVAL_S = 1.0
DEFAULT_HEARTBEAT_TIMEOUT_S = 5.0
#: A worker serving this long without a failure resets the restart backoff.
DEFAULT_STABLE_AFTER_S = 30.0
DEFAULT_RESTART_BACKOFF_INITIAL_S = 0.1
DEFAULT_RESTART_BACKOFF_MAX_S = 30.0
#: Alert after this many consecutive failures within the window (the old
#: watchdog's threshold was 3), at most once per alert_min_interval per kind.
DEFAULT_ALERT_THRESHOLD = 3
DEFAULT_ALERT_WINDOW_S = 300.0
DEFAULT_ALERT_MIN_INTERVAL_S = 300.0
#: The admin endpoint: loopback only unless told otherwise.
DEFAULT_ADMIN_LISTEN = "127.0.0.1:6279"
ADMIN_TOKEN_ENV = "MCP_SIDECAR_ADMIN_TOKEN"

MIN_BUFFER_BYTES = 4 * 1024
MAX_BUFFER_BYTES = 16 * 1024 * 1024

ROUTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

PROFILES: dict[str, list[dict[str, Any]]] = {
    # The MCP Inspector v1 pair: web UI and its proxy server.  Listening on the
    # host's non-loopback addresses leaves the loopback ports to the Inspector.
    "inspector-v1": [
        {"name": "inspector-ui", "listen": f"{NONLOOPBACK}:6274", "upstream": "localhost:6274"},
        {"name": "inspector-proxy", "listen": f"{NONLOOPBACK}:6277", "upstream": "localhost:6277"},
    ],
    # Inspector v2: one web port (UI and /api) and a sandbox origin.
    "inspector-v2": [
        {"name": "inspector-ui", "listen": f"{NONLOOPBACK}:6274", "upstream": "localhost:6274"},
        {"name": "inspector-sandbox", "listen": f"{NONLOOPBACK}:6275", "upstream": "localhost:6275"},
    ],
}
DEFAULT_PROFILE = "inspector-v1"
#: Profiles whose upstream hands out a credential to whoever loads its page:
#: they do not listen beyond loopback unless the operator says, loudly, that
#: the network is trusted (``dangerously_expose_unprotected``).  Inspector v2
#: writes its API token into the ``index.html`` it serves to anyone and
#: accepts API calls without an ``Origin``; the token starts processes on
#: the host.  (v1 never puts its token in the page, and its proxy checks the
#: token and ``Origin``.)
PROFILE_RISKS: dict[str, str] = {
    "inspector-v2": "Inspector v2 serves its API token in its page to anyone who loads it, "
                    "and that token runs commands on this host",
}
#: What to do instead, per guarded profile.
PROFILE_ALTERNATIVES: dict[str, str] = {
    "inspector-v2": "reach it through an SSH tunnel to loopback "
                    "(ssh -L 6274:localhost:6274 -L 6275:localhost:6275 THIS_HOST)",
}
EXPOSE_OPTION = "--dangerously-expose-unprotected"


# --- the validated model ----------------------------------------------------------


@dataclass(frozen=True)
class RouteSettings:
    """The per-route settings a ``[defaults]`` section may set."""

    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    connect_retry_window_s: float = DEFAULT_CONNECT_RETRY_WINDOW_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    tcp_keepalive_s: float = DEFAULT_TCP_KEEPALIVE_S
    splice: bool = DEFAULT_SPLICE
    #: Readiness requires this route's upstream to be reachable.
    required: bool = True
    health_interval_s: float = DEFAULT_HEALTH_INTERVAL_S
    health_interval_max_s: float = DEFAULT_HEALTH_INTERVAL_MAX_S
    health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S
    health_rise: int = DEFAULT_HEALTH_RISE
    health_fall: int = DEFAULT_HEALTH_FALL
    #: L1 "tcp" connect, L2 "http" GET health_path or "ws" handshake + ping,
    #: L3 "mcp" initialize + ping on health_path.
    health_check: str = "tcp"
    health_path: str = "/"
    #: "auto" sniffs the first client bytes for an HTTP request line.
    protocol: str = "auto"
    #: The proxy's own WebSocket keepalive: a ping to each side this often
    #: (0 = off); a side whose pong does not come within ws_ping_timeout is a
    #: zombie and the connection is closed (seed 003).
    ws_ping_interval_s: float = 0.0
    ws_ping_timeout_s: float = 10.0
    #: An MCP request with no response within this is counted as "timeout".
    mcp_request_timeout_s: float = DEFAULT_MCP_REQUEST_TIMEOUT_S
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_open_s: float = DEFAULT_BREAKER_OPEN_S
    max_connecting: int = DEFAULT_MAX_CONNECTING
    connection_log: str = DEFAULT_CONNECTION_LOG
    connection_log_every: int = DEFAULT_CONNECTION_LOG_EVERY


@dataclass(frozen=True)
class AdminConfig:
    #: None: no admin endpoint.
    listen: HostPort | None = field(default_factory=lambda: parse_hostport(DEFAULT_ADMIN_LISTEN))
    #: Required (as a bearer token) for requests that change state.
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SupervisorConfig:
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    heartbeat_timeout_s: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    stable_after_s: float = DEFAULT_STABLE_AFTER_S
    restart_backoff_initial_s: float = DEFAULT_RESTART_BACKOFF_INITIAL_S
    restart_backoff_max_s: float = DEFAULT_RESTART_BACKOFF_MAX_S
    #: Keep a pre-started worker ready, so a dead worker is replaced in
    #: milliseconds instead of a cold Python start (~0.3 s).
    standby: bool = True
    alert_threshold: int = DEFAULT_ALERT_THRESHOLD
    alert_window_s: float = DEFAULT_ALERT_WINDOW_S
    alert_min_interval_s: float = DEFAULT_ALERT_MIN_INTERVAL_S
    alert_webhook: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RouteConfig:
    name: str
    listen: tuple[HostPort, ...]
    #: In order of preference: the first reachable one gets the connection.
    upstreams: tuple[HostPort, ...]
    settings: RouteSettings = field(default_factory=RouteSettings)

    @property
    def upstream(self) -> HostPort:
        """The preferred upstream."""
        return self.upstreams[0]

    @property
    def upstream_text(self) -> str:
        return ", ".join(str(u) for u in self.upstreams)


@dataclass(frozen=True)
class ProxyConfig:
    routes: tuple[RouteConfig, ...]
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    tcp_stats_interval_s: float = DEFAULT_TCP_STATS_INTERVAL_S
    observe_cpu_share: float = DEFAULT_OBSERVE_CPU_SHARE
    observe_memory_bytes: int = DEFAULT_OBSERVE_MEMORY_BYTES
    #: Let a guarded profile (PROFILE_RISKS) listen beyond loopback anyway:
    #: for a trusted network only; warned about at start and in every status.
    dangerously_expose_unprotected: bool = False
    admin: AdminConfig = field(default_factory=AdminConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    profile: str | None = None
    source: str = "<defaults>"


# --- value parsers: each raises ValueError with a message for the user --------

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 5, 0.25 or \"250ms\", got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 5, 0.25 or \"250ms\", got {value!r}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"duration must be a finite number >= 0, got {value!r}")
    return seconds


_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*(B|KiB|MiB|GiB)?\s*$")
_UNIT_BYTES = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, None: 1}


def parse_size(value: Any) -> int:
    """Bytes: an integer, or a string with a binary unit (``"64MiB"``)."""
    if isinstance(value, bool):
        raise ValueError(f'expected a size such as 65536 or "64MiB", got {value!r}')
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(m.group(1)) * _UNIT_BYTES[m.group(2)]
    else:
        raise ValueError(f'expected a size such as 65536 or "64MiB", got {value!r}')
    if size < 0:
        raise ValueError(f"size must be >= 0, got {value!r}")
    return size


def format_size(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if size and size % _UNIT_BYTES[unit] == 0:
            return f"{size // _UNIT_BYTES[unit]}{unit}"
    return str(size)


def _size_at_least(low: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        size = parse_size(value)
        if size < low:
            raise ValueError(f"must be at least {format_size(low)}, got {value!r}")
        return size

    return parse


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"must be greater than 0, got {value!r}")
    return seconds


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


def _share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"expected a fraction of a CPU core, greater than 0 and at most 1, got {value!r}")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def parse_admin_listen(value: Any) -> HostPort | None:
    """``HOST:PORT``, or ``"off"`` (or empty) for no admin endpoint."""
    if value in ("", "off", "none", False):
        return None
    try:
        return parse_hostport(value, allow_zero_port=True)
    except AddressSyntaxError as exc:
        raise ValueError(f'{exc} (or "off")') from None


def _token(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 16 or any(c.isspace() for c in value):
        raise ValueError("must be a string of at least 16 characters without spaces")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(repr(o) for o in options)}, got {value!r}")
        return value

    return parse


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f'expected a path starting with "/", got {value!r}')
    return value


def _webhook_url(value: Any) -> str:
    # Never echo the value: a Slack or Discord webhook URL is itself a secret.
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got a {type(value).__name__}")
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        scheme = value.split("://", 1)[0] if "://" in value else ""
        shown = f" (scheme {scheme[:10]!r})" if scheme and scheme.isalnum() else ""
        raise ValueError(f"expected an http:// or https:// URL{shown}; the value is not shown: "
                         "a webhook URL is a secret")
    return value


#: TOML key -> (RouteSettings attribute, parser).
_SETTING_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "connect_timeout": ("connect_timeout_s", _positive_duration),
    "connect_retry_window": ("connect_retry_window_s", parse_duration),
    "idle_timeout": ("idle_timeout_s", parse_duration),
    "max_connections": ("max_connections", _int_in(1, 1_000_000)),
    "buffer_size": ("buffer_bytes", _int_in(MIN_BUFFER_BYTES, MAX_BUFFER_BYTES)),
    "tcp_keepalive": ("tcp_keepalive_s", parse_duration),
    "splice": ("splice", _boolean),
    "required": ("required", _boolean),
    "health_interval": ("health_interval_s", parse_duration),
    "health_interval_max": ("health_interval_max_s", _positive_duration),
    "health_timeout": ("health_timeout_s", _positive_duration),
    "health_rise": ("health_rise", _int_in(1, 100)),
    "health_fall": ("health_fall", _int_in(1, 100)),
    "health_check": ("health_check", _choice(HEALTH_CHECKS)),
    "health_path": ("health_path", _path),
    "protocol": ("protocol", _choice(PROTOCOLS)),
    "mcp_request_timeout": ("mcp_request_timeout_s", _positive_duration),
    "ws_ping_interval": ("ws_ping_interval_s", parse_duration),
    "ws_ping_timeout": ("ws_ping_timeout_s", _positive_duration),
    "breaker_failures": ("breaker_failures", _int_in(0, 1000)),
    "breaker_open": ("breaker_open_s", _positive_duration),
    "max_connecting": ("max_connecting", _int_in(1, 100_000)),
    "connection_log": ("connection_log", _choice(CONNECTION_LOGS)),
    "connection_log_every": ("connection_log_every", _int_in(1, 1_000_000)),
}
_PROXY_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "drain_timeout": ("drain_timeout_s", parse_duration),
    "tcp_stats_interval": ("tcp_stats_interval_s", _positive_duration),
    "observe_cpu_share": ("observe_cpu_share", _share),
    "observe_memory": ("observe_memory_bytes", _size_at_least(1024 * 1024)),
    "dangerously_expose_unprotected": ("dangerously_expose_unprotected", _boolean),
}
_ADMIN_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "listen": ("listen", parse_admin_listen),
    "token": ("token", _token),
}
_SUPERVISOR_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "heartbeat_interval": ("heartbeat_interval_s", _positive_duration),
    "heartbeat_timeout": ("heartbeat_timeout_s", _positive_duration),
    "stable_after": ("stable_after_s", parse_duration),
    "restart_backoff_initial": ("restart_backoff_initial_s", parse_duration),
    "restart_backoff_max": ("restart_backoff_max_s", parse_duration),
    "standby": ("standby", _boolean),
    "alert_threshold": ("alert_threshold", _int_in(1, 1000)),
    "alert_window": ("alert_window_s", _positive_duration),
    "alert_min_interval": ("alert_min_interval_s", parse_duration),
    "alert_webhook": ("alert_webhook", _webhook_url),
}
_ROUTE_KEYS = {"name", "listen", "upstream", *_SETTING_KEYS}
_TOP_KEYS = {"proxy", "defaults", "route", "admin", "supervisor"}


# --- building -------------------------------------------------------------------


def _section(source: str, name: str, document: dict[str, Any],
             keys: dict[str, tuple[str, Callable[[Any], Any]]]) -> dict[str, Any]:
    """Parse a flat ``[name]`` table into attribute values."""
    table = _table(source, name, document.get(name, {}))
    _check_keys(source, f"{name}.", table, set(keys))
    return _parse_values(source, f"{name}.", table, keys)


def _parse_values(source: str, prefix: str, table: dict[str, Any],
                  keys: dict[str, tuple[str, Callable[[Any], Any]]]) -> dict[str, Any]:
    """TOML key -> parsed attribute value; a bad value names its field."""
    values: dict[str, Any] = {}
    for key, (attr, parse) in keys.items():
        if key in table:
            try:
                values[attr] = parse(table[key])
            except ValueError as exc:
                raise ConfigError(source, f"{prefix}{key}", str(exc)) from None
    return values


def _table(source: str, fieldname: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(source, fieldname, f"expected a table, got {type(value).__name__}")
    return value


def _check_keys(source: str, prefix: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(source, f"{prefix}{key}", f"unknown key (known keys: {known})")


def _apply_settings(source: str, prefix: str, base: RouteSettings, table: dict[str, Any]) -> RouteSettings:
    return replace(base, **_parse_values(source, prefix, table, _SETTING_KEYS))


def _parse_listen(source: str, fieldname: str, value: Any) -> tuple[HostPort, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(source, fieldname, "needs at least one address")
    result = []
    for item in items:
        try:
            result.append(parse_hostport(item, allow_zero_port=True))
        except AddressSyntaxError as exc:
            raise ConfigError(source, fieldname, str(exc)) from None
    return tuple(result)


def _build_route(source: str, index: int, table: dict[str, Any], defaults: RouteSettings) -> RouteConfig:
    prefix = f"route[{index}]."
    _check_keys(source, prefix, table, _ROUTE_KEYS)
    for required in ("listen", "upstream"):
        if required not in table:
            raise ConfigError(source, f"{prefix}{required}", "missing (required)")
    listen = _parse_listen(source, f"{prefix}listen", table["listen"])
    raw_upstreams = table["upstream"] if isinstance(table["upstream"], list) else [table["upstream"]]
    if not raw_upstreams:
        raise ConfigError(source, f"{prefix}upstream", "needs at least one address")
    upstreams = []
    for item in raw_upstreams:
        try:
            upstream = parse_hostport(item)
        except AddressSyntaxError as exc:
            raise ConfigError(source, f"{prefix}upstream", str(exc)) from None
        if upstream.host == NONLOOPBACK:
            raise ConfigError(source, f"{prefix}upstream", f"{NONLOOPBACK} is only valid in listen")
        upstreams.append(upstream)
    name = table.get("name", f"port-{listen[0].port}" if listen[0].port else f"route-{index}")
    if not isinstance(name, str) or not ROUTE_NAME_RE.match(name):
        raise ConfigError(
            source, f"{prefix}name", f"must be 1-64 characters of A-Z a-z 0-9 _ . - , got {name!r}"
        )
    settings = _apply_settings(source, prefix, defaults, table)
    if settings.health_interval_s and settings.health_interval_max_s < settings.health_interval_s:
        raise ConfigError(source, f"{prefix}health_interval_max", "must not be shorter than health_interval")
    return RouteConfig(name=name, listen=listen, upstreams=tuple(upstreams), settings=settings)


def _check_routes(source: str, routes: list[RouteConfig]) -> None:
    if not routes:
        raise ConfigError(source, "route", "no routes: add [[route]] tables, --forward or --profile")
    addresses: dict[HostPort, int] = {}
    for index, route in enumerate(routes, start=1):
        for addr in route.listen:
            if addr.port and addr in addresses:
                raise ConfigError(
                    source, f"route[{index}].listen", f"{addr} is already used by route[{addresses[addr]}]"
                )
            addresses[addr] = index
    names: dict[str, int] = {}
    for index, route in enumerate(routes, start=1):
        if route.name in names:
            raise ConfigError(
                source, f"route[{index}].name", f"duplicate route name {route.name!r} (also route[{names[route.name]}])"
            )
        names[route.name] = index


def build_config(
    document: dict[str, Any] | None = None,
    *,
    source: str = "<defaults>",
    forwards: tuple[str, ...] = (),
    profile: str | None = None,
    dangerously_expose_unprotected: bool = False,
) -> ProxyConfig:
    """Validate a parsed TOML document plus CLI routes into a ``ProxyConfig``.

    With no document, no forwards and no profile, the default profile
    (``inspector-v1``) supplies the routes.  ``dangerously_expose_unprotected``
    (the command-line flag) sets the ``[proxy]`` key of that name.
    """
    document = document or {}
    _check_keys(source, "", document, _TOP_KEYS)
    proxy_values = _section(source, "proxy", document, _PROXY_KEYS)
    if dangerously_expose_unprotected:
        proxy_values["dangerously_expose_unprotected"] = True
    admin_values = _section(source, "admin", document, _ADMIN_KEYS)
    if "token" not in admin_values and os.environ.get(ADMIN_TOKEN_ENV):
        try:
            admin_values["token"] = _token(os.environ[ADMIN_TOKEN_ENV])
        except ValueError as exc:
            raise ConfigError(f"${ADMIN_TOKEN_ENV}", "", str(exc)) from None
    proxy_values["admin"] = AdminConfig(**admin_values)
    supervisor_values = _section(source, "supervisor", document, _SUPERVISOR_KEYS)
    if supervisor_values.get("heartbeat_timeout_s", DEFAULT_HEARTBEAT_TIMEOUT_S) <= supervisor_values.get(
        "heartbeat_interval_s", DEFAULT_HEARTBEAT_INTERVAL_S
    ):
        raise ConfigError(source, "supervisor.heartbeat_timeout", "must be longer than heartbeat_interval")
    proxy_values["supervisor"] = SupervisorConfig(**supervisor_values)

    defaults_table = _table(source, "defaults", document.get("defaults", {}))
    _check_keys(source, "defaults.", defaults_table, set(_SETTING_KEYS))
    defaults = _apply_settings(source, "defaults.", RouteSettings(), defaults_table)

    raw_routes = document.get("route", [])
    if not isinstance(raw_routes, list):
        raise ConfigError(source, "route", "expected [[route]] tables")
    routes = [
        _build_route(source, i, _table(source, f"route[{i}]", t), defaults)
        for i, t in enumerate(raw_routes, start=1)
    ]

    for spec in forwards:
        index = len(routes) + 1
        name, sep, address_spec = spec.partition("=")
        if not sep:
            name, address_spec = "", spec
        try:
            fwd = parse_forward(address_spec)
        except AddressSyntaxError as exc:
            raise ConfigError("--forward", spec, str(exc)) from None
        table = {"listen": str(fwd.listen), "upstream": str(fwd.upstream)}
        if name:
            table["name"] = name
        elif fwd.listen.port:
            # The same port on two addresses ([::1]:P and 127.0.0.1:P) gets port-P and port-P-2.
            taken = {r.name for r in routes}
            table["name"] = base = f"port-{fwd.listen.port}"
            suffix = 2
            while table["name"] in taken:
                table["name"] = f"{base}-{suffix}"
                suffix += 1
        routes.append(_build_route("--forward", index, table, defaults))

    if profile is None and not routes:
        profile = DEFAULT_PROFILE
    if profile is not None:
        if profile not in PROFILES:
            raise ConfigError("--profile", "", f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
        for table in PROFILES[profile]:
            routes.append(_build_route(f"profile {profile}", len(routes) + 1, dict(table), defaults))
        if not proxy_values.get("dangerously_expose_unprotected"):
            _refuse_exposure(profile, routes)

    _check_routes(source, routes)
    return ProxyConfig(routes=tuple(routes), profile=profile, source=source, **proxy_values)


def _refuse_exposure(profile: str, routes: list[RouteConfig]) -> None:
    """A guarded profile listening beyond loopback: refuse, naming the risk."""
    risk = PROFILE_RISKS.get(profile)
    if risk is None:
        return
    names = {table["name"] for table in PROFILES[profile]}
    exposed = [str(a) for r in routes if r.name in names for a in r.listen if beyond_loopback(a.host)]
    if exposed:
        raise ConfigError(
            f"--profile {profile}", "",
            f"refusing to listen beyond loopback ({', '.join(exposed)}): {risk}; "
            f"{PROFILE_ALTERNATIVES[profile]}, or pass {EXPOSE_OPTION} on a trusted network")


def exposure_warnings(config: ProxyConfig) -> list[str]:
    """What a guarded profile exposes unprotected (the operator allowed it)."""
    risk = PROFILE_RISKS.get(config.profile or "")
    if risk is None or not config.dangerously_expose_unprotected:
        return []
    names = {table["name"] for table in PROFILES[config.profile or ""]}
    return [f"route {r.name} listens beyond loopback without protection ({EXPOSE_OPTION}): {risk}"
            for r in config.routes if r.name in names and any(beyond_loopback(a.host) for a in r.listen)]


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and parse a TOML file; errors name the file and the position."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None


def load_config(
    path: str | Path | None = None, *, forwards: tuple[str, ...] = (), profile: str | None = None,
    dangerously_expose_unprotected: bool = False,
) -> ProxyConfig:
    document = load_config_file(path) if path is not None else None
    return build_config(document, source=str(path) if path else "<command line>", forwards=forwards, profile=profile,
                        dangerously_expose_unprotected=dangerously_expose_unprotected)


# --- rendering (``proxyctl config show``) -------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _settings_items(settings: RouteSettings) -> list[tuple[str, Any]]:
    attr_to_key = {attr: key for key, (attr, _) in _SETTING_KEYS.items()}
    items = []
    for f in fields(settings):
        value = getattr(settings, f.name)
        items.append((attr_to_key[f.name], format_duration(value) if f.name.endswith("_s") else value))
    return items


def render_toml(config: ProxyConfig) -> str:
    """The effective configuration, every default filled in, as TOML."""
    lines = [f"# effective configuration (source: {config.source}"]
    lines[0] += f", profile: {config.profile})" if config.profile else ")"
    lines += ["[proxy]", f"drain_timeout = {_toml_value(format_duration(config.drain_timeout_s))}",
              f"tcp_stats_interval = {_toml_value(format_duration(config.tcp_stats_interval_s))}",
              f"observe_cpu_share = {config.observe_cpu_share!r}",
              f"observe_memory = {_toml_value(format_size(config.observe_memory_bytes))}",
              f"dangerously_expose_unprotected = {_toml_value(config.dangerously_expose_unprotected)}", ""]
    admin = config.admin
    lines += ["[admin]", f"listen = {_toml_value(str(admin.listen) if admin.listen else 'off')}"]
    if admin.token:
        lines.append('# token is set (not shown)')
    lines.append("")
    lines.append("[supervisor]")
    attr_to_key = {attr: key for key, (attr, _) in _SUPERVISOR_KEYS.items()}
    for f in fields(config.supervisor):
        value = getattr(config.supervisor, f.name)
        if f.name == "alert_webhook":
            if value:
                lines.append("# alert_webhook is set (not shown)")
            continue
        shown = format_duration(value) if f.name.endswith("_s") else value
        lines.append(f"{attr_to_key[f.name]} = {_toml_value(shown)}")
    lines.append("")
    for route in config.routes:
        lines.append("[[route]]")
        lines.append(f"name = {_toml_value(route.name)}")
        listen = [str(a) for a in route.listen]
        lines.append(f"listen = {_toml_value(listen if len(listen) > 1 else listen[0])}")
        ups = [str(u) for u in route.upstreams]
        lines.append(f"upstream = {_toml_value(ups if len(ups) > 1 else ups[0])}")
        lines += [f"{k} = {_toml_value(v)}" for k, v in _settings_items(route.settings)]
        lines.append("")
    return "\n".join(lines)
