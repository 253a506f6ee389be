"""The live state of routes and connections: what the accept loops, the
connections, the health checks and the admin views all read.

Rules this module keeps:

* State, not behaviour: the tasks that change it live in ``proxy.py``
  (accepting) and ``connection.py`` (serving), the readers in ``admin/``.
  A route's counters change only through its ``RouteState`` methods, so an
  opened connection is always closed exactly once in the books.
* Nothing here runs per chunk; the per-direction counters (``Flow``) are
  plain attributes the pump updates.
* ``End`` is the bounded set of ways a connection ends: metric label values
  and log fields.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_address
from types import MappingProxyType
from typing import Any

import trio

from ..config.model import RouteConfig
from ..faults.book import FaultBook
from ..faults.legacy import LegacyStreams
from ..health.breaker import CircuitBreaker
from ..health.checks import RouteHealth
from ..net.exhaustion import LocalExhaustion
from ..net.listeners import BoundListener
from ..net.tcpinfo import TcpInfo, read_tcp_info
from ..net.upstream import Connector
from ..observe.quality import Quality
from .limits import SharedCounts
from .metrics import RouteMetrics
from .observation import Observation, RouteObservation
from .pump import Flow

#: Reconnects are long-lived connections (event streams, WebSockets, opaque
#: TCP) opened by the same client host in this window; separate short HTTP
#: requests are not reconnects.
RECONNECT_WINDOW_S = 600.0
MAX_TRACKED_CLIENTS = 1024


class End(StrEnum):
    """How a connection ended (``mcp_sidecar_connections_closed_total{end}``)."""

    CLOSED = "closed"  # both directions reached EOF
    CLIENT_RESET = "client_reset"  # the client leg failed (RST, EPIPE); upstream got RST
    UPSTREAM_RESET = "upstream_reset"  # the upstream leg failed; client got RST
    IDLE_TIMEOUT = "idle_timeout"
    WS_TIMEOUT = "ws_timeout"  # a WebSocket side stopped answering the proxy's keepalive pings
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"  # no upstream connection within the retry window
    CLIENT_GONE = "client_gone"  # the client left before an upstream connection was made: nothing delivered
    LOCAL_RESOURCES = "local_resources"  # this host ran out of descriptors, buffers or memory
    TLS_ERROR = "tls_error"  # the client's TLS handshake failed
    TLS_HANDSHAKE_TIMEOUT = "tls_handshake_timeout"  # the client's TLS handshake did not finish in time
    HEAD_TIMEOUT = "head_timeout"  # a gated route's client sent no complete request head in time
    SHED = "shed"  # unauthenticated (handshake or gate pending) and closed for a newcomer at max_connections
    UPSTREAM_TLS_ERROR = "upstream_tls_error"  # the upstream's TLS handshake failed (verification, protocol)
    GATE_REFUSED = "gate_refused"  # the access gate answered 401/400 (or closed): nothing reached the upstream
    DRAIN_TIMEOUT = "drain_timeout"  # still open when the drain deadline passed
    FAULT = "fault"  # ended by an injected fault (reset_peer, limit_data, timeout, an MCP cut)
    CANCELLED = "cancelled"  # stopped by the proxy otherwise


#: Injected faults a connection lists (its detail view), the newest kept.
MAX_CONNECTION_FAULTS = 16

_ids = itertools.count(1)
#: Each supervised worker numbers its connections from its id times this, so
#: that the merged views' connection ids are unique across workers.
CONN_IDS_PER_WORKER = 1_000_000_000


def number_connections_from(first: int) -> None:
    """The next connection of this process gets ``first`` (a supervised worker's range)."""
    global _ids
    _ids = itertools.count(first)


_NO_TCP: Mapping[str, TcpInfo | None] = MappingProxyType({"client": None, "upstream": None})


class Connection:
    """One forwarded connection: its identity, its two sockets, what moved
    through it, the kernel's figures for each leg and its quality.

    Owned by the task that serves it (``connection.serve_connection``);
    registered in its route's ``connections`` while open.
    """

    __slots__ = (
        "_retrans_seen",
        "c2u",
        "client",
        "connect_attempts",
        "connect_s",
        "csock",
        "end",
        "faults",
        "first_eof",
        "id",
        "observation",
        "quality",
        "reconnects",
        "route",
        "started",
        "started_unix",
        "tcp",
        "tls",
        "u2c",
        "upstream",
        "usock",
    )

    def __init__(self, route: str, client: str, csock: socket.socket) -> None:
        self.id = next(_ids)
        self.route = route
        self.client = client
        self.upstream: str | None = None
        self.started = trio.current_time()
        self.started_unix = time.time()
        self.c2u = Flow()
        self.u2c = Flow()
        self.end: End | None = None
        #: The side whose direction reached EOF first ("client", "upstream"), if one did.
        self.first_eof: str | None = None
        self.connect_attempts = 0
        self.connect_s: float | None = None
        self.csock = csock
        self.usock: socket.socket | None = None
        #: The last TCP_INFO sample per leg (a shared read-only mapping until the first).
        self.tcp: Mapping[str, TcpInfo | None] = _NO_TCP
        #: Retransmits already counted, [client, upstream].
        self._retrans_seen = [0, 0]
        self.observation: Observation | None = None
        self.quality = Quality()
        #: Earlier long-lived connections from the same client host to this
        #: route (RECONNECT_WINDOW_S), counted when this one became long-lived.
        self.reconnects = 0
        #: The client's TLS session (version, cipher, ALPN), on a TLS route.
        self.tls: dict[str, str | None] | None = None
        #: Faults injected into this connection (name: what), the last MAX_CONNECTION_FAULTS.
        self.faults: list[str] | None = None

    def note_fault(self, what: str) -> None:
        """A fault was injected into this connection (shown in its detail)."""
        if self.faults is None:
            self.faults = []
        self.faults.append(what)
        del self.faults[:-MAX_CONNECTION_FAULTS]

    @property
    def protocol(self) -> str:
        """What observation found it carries: tcp, http, sse or websocket."""
        return self.observation.protocol if self.observation is not None else "tcp"

    def close_now(self) -> None:
        """End this connection now (an operator disabled its route): both legs shut
        down, so its pumps see the end and it closes the usual way."""
        for sock in (self.csock, self.usock):
            if sock is not None and sock.fileno() >= 0:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def sample_tcp(self, metrics: RouteMetrics) -> None:
        """Read TCP_INFO of both legs into the histograms and counters."""
        for index, leg, sock in ((0, "client", self.csock), (1, "upstream", self.usock)):
            if sock is None or sock.fileno() < 0:
                continue
            info = read_tcp_info(sock)
            if info is None:
                continue
            if self.tcp is _NO_TCP:
                self.tcp = {"client": None, "upstream": None}
            self.tcp[leg] = info  # type: ignore[index]  # (a dict from the first sample on, see above)
            if info.rtt_s > 0:
                metrics.rtt[leg].observe(info.rtt_s)
                if leg == "client":
                    self.quality.latency(info.rtt_s, "tcp")
            delta = info.total_retrans - self._retrans_seen[index]
            if delta > 0:
                metrics.retransmits[leg] += delta
                self._retrans_seen[index] = info.total_retrans

    def as_json(self, now: float) -> dict[str, Any]:
        """The connection as /api/connections shows it; TCP figures read now."""
        tcp = {}
        age = now - self.started
        idle = age
        for leg, sock in (("client", self.csock), ("upstream", self.usock)):
            fresh = read_tcp_info(sock) if sock is not None and sock.fileno() >= 0 else None
            if fresh is not None:
                idle = min(idle, fresh.idle_s)
            info = fresh or self.tcp[leg]
            tcp[leg] = info.as_json() if info else None
        return {
            "id": self.id,
            "route": self.route,
            "client": self.client,
            "upstream": self.upstream,
            "protocol": self.protocol,
            "mcp": bool(self.observation and self.observation.mcp),
            "age_s": round(age, 3),
            "idle_s": round(idle, 3),
            "bytes_client_to_upstream": self.c2u.bytes,
            "bytes_upstream_to_client": self.u2c.bytes,
            "bytes_spliced": self.c2u.spliced + self.u2c.spliced,
            "client_eof": self.c2u.eof,
            "upstream_eof": self.u2c.eof,
            "connect_attempts": self.connect_attempts,
            "connect_ms": None if self.connect_s is None else round(self.connect_s * 1000, 3),
            "tcp": tcp,
            "tls": self.tls,
            "faults": self.faults,
            # The client falling behind: the pump waited this long for it to take
            # bytes, and this many MCP answers took it 100 ms or more (observe/slowness.py).
            "slow_client": {
                "blocked_s": round(self.u2c.blocked_s, 3),
                "answers": self.observation.records.slow_answers if self.observation is not None else 0,
            },
            "quality": self.quality.report(self.reconnects),
            "observed": self.observation.facts(now) if self.observation is not None else None,
        }


class RouteControl(StrEnum):
    """A route's state as an operator set it at run time (HAProxy's ``set server
    state``): kept across reloads and worker restarts until enabled again."""

    ENABLED = "enabled"
    DRAINING = "draining"  # new clients refused; open connections finish
    DISABLED = "disabled"  # new clients refused; open connections closed


#: What an operator types -> the state it sets.
OPERATOR_ACTIONS = {"drain": "draining", "disable": "disabled", "enable": "enabled"}


@dataclass
class RouteState:
    """A route's live state: its listeners, connector, health, breaker,
    observation and counters, and the connections open on it.

    One per route per worker, built by the ``Proxy``.  The counters change
    only through ``opened``/``closed``/``reject`` (and ``refusing`` around a
    503), so what is open, what was accepted and how each one ended always
    add up.
    """

    config: RouteConfig
    listeners: list[BoundListener]
    connector: Connector
    scratch: memoryview
    metrics: RouteMetrics
    health: RouteHealth
    breaker: CircuitBreaker
    observation: RouteObservation
    #: The worker's local resource exhaustion (shared by its routes).
    exhaustion: LocalExhaustion = field(default_factory=LocalExhaustion)
    active: int = 0
    total: int = 0
    #: The most connections open at once on the route since start, every
    #: worker's counted (HAProxy's smax): what to set max_connections by.
    peak: int = 0
    #: Clients being answered 503 (or RST) while the circuit is open.
    refusing: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)
    connections: dict[int, Connection] = field(default_factory=dict)
    #: Bytes of connections already closed: [client_to_upstream, upstream_to_client].
    bytes_closed: list[int] = field(default_factory=lambda: [0, 0])
    draining: bool = False
    #: client address -> times of its recent connections (reconnect counting).
    recent_clients: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    #: TLS towards clients (None: clear text), built from the route's files.
    tls_server: ssl.SSLContext | None = None
    #: Client networks allowed to connect (empty: everyone).
    allowed: tuple[IPv4Network | IPv6Network, ...] = ()
    #: Gate results by kind (net/gate.py), shared by the route's connections.
    gate_results: dict[str, int] = field(default_factory=dict)
    #: Connections that have not passed the TLS handshake and the gate yet,
    #: oldest first, with the scope that cancels them: at max_connections the
    #: oldest is shed for a newcomer (unauthenticated clients cannot hold the
    #: owner out).
    unadmitted: OrderedDict[int, tuple[Connection, trio.CancelScope]] = field(default_factory=OrderedDict)
    #: Why this route cannot serve at all in this worker (its TLS material
    #: would not load), None when it can: its clients are refused, the
    #: other routes serve.
    unusable: str | None = None
    #: The route's connection counts shared with the other workers (limits.py)
    #: and this route's index in them; None: this worker alone.
    shared: SharedCounts | None = None
    shared_index: int = 0
    #: What an operator set (``proxyctl route R drain|disable|enable``), and since when (unix).
    operator: RouteControl = field(default_factory=lambda: RouteControl.ENABLED)
    operator_since_unix: float | None = None
    #: The route's faults (faults/book.py); None unless ``[faults] enabled``:
    #: then no connection of the route takes a path that could inject one.
    faults: FaultBook | None = None
    #: The route's 2024-11-05 streams by session (faults only: a POST's fault reaches its answer).
    legacy_streams: LegacyStreams | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def open_elsewhere(self) -> int:
        """The route's connections open in the other workers (max_connections holds for all)."""
        return self.shared.others(self.shared_index) if self.shared is not None else 0

    def opened(self, elsewhere: int = 0) -> None:
        """An accepted client will be served (its Connection follows);
        ``elsewhere``: the route's connections open in the other workers, as
        the accept loop read them for max_connections (the peak counts them)."""
        self.active += 1
        self.total += 1
        if self.shared is not None:
            self.shared.publish(self.shared_index, self.active)
        if self.active + elsewhere > self.peak:
            self.peak = self.active + elsewhere

    def register(self, conn: Connection, now: float) -> None:
        """The served connection's record.  An unobserved route's connections
        are long-lived as far as anyone can tell: their reconnect count is
        taken now; observed ones wait until they turn out to be (``observe``)."""
        if self.config.settings.protocol == "tcp":
            self.stream_opened(conn, now)
        self.connections[conn.id] = conn

    def observe(self, conn: Connection) -> Observation:
        """The connection's observation, told whom it serves (and the route's
        observation how to count a reconnect when one turns out long-lived)."""
        if self.observation.stream_opened is None:
            self.observation.stream_opened = self._stream_opened_by_id
        settings = self.config.settings
        observation = conn.observation = Observation(
            self.observation,
            conn.id,
            conn.quality,
            settings.protocol,
            client=conn.client,
            keepalive=settings.ws_ping_interval_s > 0,
        )
        observation.records.legs = conn  # (who was slow: its sockets and flows)
        return observation

    def _stream_opened_by_id(self, conn_id: int) -> None:
        conn = self.connections.get(conn_id)
        if conn is not None:
            self.stream_opened(conn, trio.current_time())

    def stream_opened(self, conn: Connection, now: float) -> None:
        """``conn`` is long-lived (a stream, a WebSocket, opaque TCP): count it
        against its client host."""
        conn.reconnects = self.count_reconnect(conn.client.rsplit(":", 1)[0], now)

    def closed(self, conn: Connection) -> None:
        """The connection ended (``conn.end`` says how): out of the books."""
        self.connections.pop(conn.id, None)
        self.active -= 1
        if self.shared is not None:
            self.shared.publish(self.shared_index, self.active)
        end = conn.end or End.CANCELLED
        self.ended[end] = self.ended.get(end, 0) + 1
        self.bytes_closed[0] += conn.c2u.bytes
        self.bytes_closed[1] += conn.u2c.bytes

    def allows(self, host: str) -> bool:
        """Whether a client at ``host`` may connect (the route's ``allow``)."""
        if not self.allowed:
            return True
        try:
            address = ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:  # a dual-stack socket's IPv4 client
            address = address.ipv4_mapped
        return any(address in network for network in self.allowed)

    def shed_unadmitted(self) -> bool:
        """Close the oldest connection still in its TLS handshake or waiting
        for the gate, to make room; False if there is none."""
        if not self.unadmitted:
            return False
        _, (conn, scope) = self.unadmitted.popitem(last=False)
        conn.end = End.SHED
        scope.cancel()
        return True

    def upstreams_known_down(self) -> bool:
        """Every upstream failed its active checks (not merely unchecked yet):
        a client is answered at once instead of waiting out the retry window."""
        health = self.health
        return health.enabled and health.state is False

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def count_reconnect(self, client_host: str, now: float) -> int:
        """Earlier long-lived connections from this client host within RECONNECT_WINDOW_S."""
        times = self.recent_clients.pop(client_host, None) or deque(maxlen=100)
        while times and now - times[0] > RECONNECT_WINDOW_S:
            times.popleft()
        earlier = len(times)
        times.append(now)
        self.recent_clients[client_host] = times
        while len(self.recent_clients) > MAX_TRACKED_CLIENTS:
            self.recent_clients.popitem(last=False)
        return earlier

    def worst_quality(self) -> int:
        scores = [c.quality.score(c.reconnects) for c in self.connections.values() if c.quality.samples]
        return min(scores, default=100)

    def bytes_forwarded(self) -> tuple[int, int]:
        """Totals so far, open connections included."""
        c2u, u2c = self.bytes_closed
        for conn in self.connections.values():
            c2u += conn.c2u.bytes
            u2c += conn.u2c.bytes
        return c2u, u2c
