"""Every default of the configuration, with its unit and the reason for it.

Rules this module keeps:

* A name says its unit: ``_S`` seconds, ``_BYTES`` bytes; counts are plain.
* Each default carries the reason it has that value (a measurement, a
  protocol's habit, what Kubernetes or HAProxy do), so that changing one is
  a decision, not a guess.
* Pure constants: no parsing, no I/O.
"""

from __future__ import annotations

import re

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
#: TCP_USER_TIMEOUT on both legs: data sent to a peer that acknowledges
#: nothing for this long ends the connection (0: the kernel's default, ~15
#: minutes of retransmissions).  Without it, a client that vanished while an
#: answer streams to it keeps its request open upstream for those 15 minutes
#: (idle_timeout and keepalive never fire while bytes flow); under MCP
#: 2026-07-28 closing the stream is the cancellation.  Since Linux 5.11 it
#: also ends a connection whose peer keeps its window closed (reads nothing)
#: that long while data waits.
DEFAULT_USER_TIMEOUT_S = 30.0
#: Opaque TCP moves bytes with splice(2) through a pipe of buffer_size:
#: the kernel copies them, never Python (~1.6x the copying pump's throughput).
DEFAULT_SPLICE = True
#: Below Kubernetes' default 30 s termination grace period.
DEFAULT_DRAIN_TIMEOUT_S = 25.0
#: Fraction of one CPU core in-line observation may use while the worker is
#: saturated (budget.py); beyond it, observation is shed connection by
#: connection and forwarding goes on at full speed.  Observing every exchange
#: of small MCP traffic takes about a third of a saturated core (~16 us per
#: exchange against ~30 us to forward it; benchmarks/compare.py), so 0.5 sheds
#: only pathological loads (huge bodies, floods of tiny frames).  1 never sheds.
DEFAULT_OBSERVE_CPU_SHARE = 0.5
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
#: state change it drops to a quarter of health_interval.
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
#: The MCP request log ([observe] / per route request_log): off by default;
#: when on, this share of completed requests is written, at most this many
#: lines per second per route (a burst of one second's worth).
DEFAULT_REQUEST_LOG_SAMPLE = 1.0
DEFAULT_REQUEST_LOG_RATE = 100
#: The admin endpoint's in-memory history (/api/history, the dashboard's
#: charts): this long at this resolution (0 turns it off), at most
#: MAX_HISTORY_POINTS samples.
DEFAULT_HISTORY_S = 900.0
DEFAULT_HISTORY_INTERVAL_S = 5.0
MAX_HISTORY_POINTS = 2000
#: The tap: how much of each message's params/result it shows, and how
#: many messages a subscriber's queue holds before it drops (counted).
DEFAULT_TAP_MAX_BYTES = 2048
DEFAULT_TAP_QUEUE = 1000
#: [observe] record: each route's recording files are rotated at this size
#: (bytes) and at most this many kept: 8 x 64 MiB = 512 MiB per route at most.
DEFAULT_RECORD_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_RECORD_MAX_FILES = 8
#: Bytes of each message's params/result/error a recording keeps (more is cut, marked).
DEFAULT_RECORD_BODY_BYTES = 64 * 1024
PROTOCOLS = ("auto", "tcp", "http")
#: How the supervisor starts workers: forked from a pre-imported fork server
#: (shared memory, ~10 ms), or exec'd as new interpreters (~0.3 s, ~24 MiB each).
WORKER_SPAWNS = ("fork", "exec")
#: Passive health: this many consecutive clients that could not be connected
#: to the upstream open the circuit for breaker_open; then one client is let
#: through as a probe (5 failures, 30 s: a common circuit-breaker setting).
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_OPEN_S = 30.0
#: The MCP SDKs' default request timeout is 60 s.
DEFAULT_MCP_REQUEST_TIMEOUT_S = 60.0
#: Distinct tool/prompt/resource names labelled per route; the rest are
#: "other" (each name is a series per method, status and version).
DEFAULT_MCP_TARGET_LIMIT = 50
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
#: Access gate of an HTTP route: "off", or "token" (a URL token exchanged for
#: a cookie, or a bearer token; see net/gate.py).
GATES = ("off", "token")
#: The gate's token when neither the route nor [defaults] sets gate_token.
GATE_TOKEN_ENV = "MCP_SIDECAR_GATE_TOKEN"
#: A TLS handshake (either leg) must finish within this: a client that
#: connects and says nothing holds a slot of max_connections, not a worker.
DEFAULT_TLS_HANDSHAKE_TIMEOUT_S = 10.0
#: On a gated route, a client's request head must be complete within this
#: (from the accept, the handshake's end or the gate's previous answer):
#: until it is, the client is unauthenticated and holds a slot for nothing.
#: The admin endpoint allows 5 s to start a request and 5 s to finish its
#: head; the gate allows the same 10 s in one bound.
DEFAULT_GATE_HEAD_TIMEOUT_S = 10.0
