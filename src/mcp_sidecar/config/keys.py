"""Every TOML key of the configuration: the attribute it sets and the parser
of its value, by section (parse.py reads them, render.py writes them back).

Rules this module keeps:

* One table per section; a route's settings are flat TOML keys whatever
  their group (``health_interval`` is ``health.interval_s``).
* Parsers raise ``ValueError`` with a message; the reader names the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .defaults import (
    CONNECTION_LOGS,
    GATES,
    HEALTH_CHECKS,
    MAX_BUFFER_BYTES,
    MIN_BUFFER_BYTES,
    PROTOCOLS,
    WORKER_SPAWNS,
)
from .values import (
    boolean,
    choice,
    cpu_share,
    file_path,
    fraction,
    host_names,
    int_in,
    networks,
    parse_admin_listen,
    parse_duration,
    positive_duration,
    route_names,
    secret_token,
    server_name,
    short_text,
    size_at_least,
    url_path,
    webhook_url,
    worker_count,
)

#: TOML key -> (RouteSettings attribute, parser); ``group.attribute`` for the
#: grouped settings (model.SETTING_GROUPS): the keys stay flat.
SETTING_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "connect_timeout": ("connect_timeout_s", positive_duration),
    "connect_retry_window": ("connect_retry_window_s", parse_duration),
    "idle_timeout": ("idle_timeout_s", parse_duration),
    "max_connections": ("max_connections", int_in(1, 1_000_000)),
    "buffer_size": ("buffer_bytes", int_in(MIN_BUFFER_BYTES, MAX_BUFFER_BYTES)),
    "tcp_keepalive": ("tcp_keepalive_s", parse_duration),
    "user_timeout": ("user_timeout_s", parse_duration),
    "splice": ("splice", boolean),
    "required": ("required", boolean),
    "protected_by": ("protected_by", short_text),
    "health_interval": ("health.interval_s", parse_duration),
    "health_interval_max": ("health.interval_max_s", positive_duration),
    "health_timeout": ("health.timeout_s", positive_duration),
    "health_rise": ("health.rise", int_in(1, 100)),
    "health_fall": ("health.fall", int_in(1, 100)),
    "health_check": ("health.check", choice(HEALTH_CHECKS)),
    "health_path": ("health.path", url_path),
    "protocol": ("protocol", choice(PROTOCOLS)),
    "mcp_request_timeout": ("observe.mcp_request_timeout_s", positive_duration),
    "target_label_limit": ("observe.target_label_limit", int_in(0, 10_000)),
    "target_label_resources": ("observe.target_label_resources", boolean),
    "ws_ping_interval": ("ws_ping_interval_s", parse_duration),
    "ws_ping_timeout": ("ws_ping_timeout_s", positive_duration),
    "sse_keepalive": ("sse_keepalive_s", parse_duration),
    "breaker_failures": ("breaker.failures", int_in(0, 1000)),
    "breaker_open": ("breaker.open_s", positive_duration),
    "max_connecting": ("max_connecting", int_in(1, 100_000)),
    "connection_log": ("connection_log", choice(CONNECTION_LOGS)),
    "connection_log_every": ("connection_log_every", int_in(1, 1_000_000)),
    "tls_cert": ("tls.cert", file_path),
    "tls_key": ("tls.key", file_path),
    "tls_client_ca": ("tls.client_ca", file_path),
    "upstream_tls": ("upstream_tls.enabled", boolean),
    "upstream_tls_ca": ("upstream_tls.ca", file_path),
    "upstream_tls_name": ("upstream_tls.name", server_name),
    "upstream_tls_verify": ("upstream_tls.verify", boolean),
    "gate": ("gate.mode", choice(GATES)),
    "gate_token": ("gate.token", secret_token),
    "gate_head_timeout": ("gate.head_timeout_s", positive_duration),
    "tls_handshake_timeout": ("tls.handshake_timeout_s", positive_duration),
    "allow": ("allow", networks),
    "request_log": ("observe.request_log", boolean),
    "request_log_sample": ("observe.request_log_sample", fraction),
    "request_log_rate": ("observe.request_log_rate", int_in(1, 100_000)),
}
#: [observe]: the request log keys set every route's default (beneath
#: [defaults]); the others bound the history and the tap.
ROUTE_DEFAULTS_IN_OBSERVE = ("request_log", "request_log_sample", "request_log_rate")
OBSERVE_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    **{k: SETTING_KEYS[k] for k in ROUTE_DEFAULTS_IN_OBSERVE},
    "history": ("history_s", parse_duration),
    "history_interval": ("history_interval_s", positive_duration),
    "tap_max_bytes": ("tap_max_bytes", int_in(64, 1024 * 1024)),
    "tap_queue": ("tap_queue", int_in(1, 100_000)),
    "record": ("record", lambda value: value),  # (a table: _record_config)
}
#: [observe] record = { ... }: its keys.
RECORD_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "dir": ("dir", file_path),
    "max_bytes": ("max_bytes", size_at_least(64 * 1024)),
    "max_files": ("max_files", int_in(1, 10_000)),
    "max_body_bytes": ("max_body_bytes", int_in(64, 16 * 1024 * 1024)),
    "routes": ("routes", route_names),
}
PROXY_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "workers": ("workers", worker_count),
    "drain_timeout": ("drain_timeout_s", parse_duration),
    "tcp_stats_interval": ("tcp_stats_interval_s", positive_duration),
    "observe_cpu_share": ("observe_cpu_share", cpu_share),
    "observe_memory": ("observe_memory_bytes", size_at_least(1024 * 1024)),
    "dangerously_expose_unprotected": ("dangerously_expose_unprotected", boolean),
}
ADMIN_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "listen": ("listen", parse_admin_listen),
    "token": ("token", secret_token),
    "open_on_loopback": ("open_on_loopback", boolean),
    "hosts": ("hosts", host_names),
}
SUPERVISOR_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "heartbeat_interval": ("heartbeat_interval_s", positive_duration),
    "heartbeat_timeout": ("heartbeat_timeout_s", positive_duration),
    "stable_after": ("stable_after_s", parse_duration),
    "restart_backoff_initial": ("restart_backoff_initial_s", parse_duration),
    "restart_backoff_max": ("restart_backoff_max_s", parse_duration),
    "standby": ("standby", boolean),
    "worker_spawn": ("worker_spawn", choice(WORKER_SPAWNS)),
    "alert_threshold": ("alert_threshold", int_in(1, 1000)),
    "alert_window": ("alert_window_s", positive_duration),
    "alert_min_interval": ("alert_min_interval_s", parse_duration),
    "alert_webhook": ("alert_webhook", webhook_url),
}
ROUTE_KEYS = {"name", "listen", "upstream", "fault", *SETTING_KEYS}
TOP_KEYS = {"proxy", "defaults", "route", "admin", "supervisor", "observe", "faults", "otel"}
FAULTS_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {"enabled": ("faults_enabled", boolean)}
