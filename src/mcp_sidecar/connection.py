"""One forwarded connection: connect upstream, pump both ways, close right.

Rules this module keeps:

* Each connection is one task owning one nursery with the two pumps (and
  the idle watcher when ``idle_timeout`` is set).  It ends when both
  directions have seen EOF, when a leg fails, on idle timeout, or when the
  proxy cancels it (drain deadline, forced stop).
* Half-close is propagated: EOF from one side becomes ``shutdown(SHUT_WR)``
  towards the other, and the other direction keeps flowing.
* A reset is propagated: an error on one leg closes the other with RST, so
  each peer sees what it would have seen on a direct connection.
* ``end`` records how it ended, as a bounded label (see ``END_REASONS``).
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import time
from typing import TYPE_CHECKING, Any

import trio

from . import sockopts
from .addresses import format_sockaddr
from .errors import ClientGone, LocalResourceError, UpstreamUnavailable
from .logs import log
from .metrics import RouteMetrics
from .observation import Observation, connection_facts
from .pump import HAVE_SPLICE, Flow, LegFailed, pump
from .quality import Quality
from .observe.http import starts_like_request
from .tcpinfo import TCP_CLOSE, TCP_CLOSE_WAIT, TcpInfo, read_tcp_info, tcp_state

if TYPE_CHECKING:
    from .proxy import RouteRuntime

logger = logging.getLogger("mcp_sidecar.connection")

END_REASONS = (
    "closed",  # both directions reached EOF
    "client_reset",  # the client leg failed (RST, EPIPE); upstream got RST
    "upstream_reset",  # the upstream leg failed; client got RST
    "idle_timeout",
    "ws_timeout",  # a WebSocket side stopped answering the proxy's keepalive pings
    "upstream_unavailable",  # no upstream connection within the retry window
    "client_gone",  # the client left before an upstream connection was made: nothing delivered
    "local_resources",  # this host ran out of descriptors, buffers or memory (never the upstream's fault)
    "drain_timeout",  # still open when the drain deadline passed
    "cancelled",  # stopped by the proxy otherwise
)

#: The idle watcher wakes this many times per idle_timeout: a connection is
#: closed between 1 and 1.25 idle_timeouts after its last byte.
IDLE_CHECKS_PER_TIMEOUT = 4

_ids = itertools.count(1)


def _peer(sock: socket.socket) -> str:
    try:
        return format_sockaddr(sock.getpeername())
    except OSError:
        return "?"


class Connection:
    """One forwarded connection's identity, sockets and counters."""

    __slots__ = ("id", "route", "client", "upstream", "started", "started_unix", "c2u", "u2c", "end",
                 "connect_attempts", "connect_s", "csock", "usock", "tcp", "_retrans_seen", "protocol", "observation",
                 "quality", "reconnects")

    def __init__(self, route: str, client: str, csock: socket.socket) -> None:
        self.id = next(_ids)
        self.route = route
        self.client = client
        self.upstream: str | None = None
        self.started = trio.current_time()
        self.started_unix = time.time()
        self.c2u = Flow()
        self.u2c = Flow()
        self.end: str | None = None
        self.connect_attempts = 0
        self.connect_s: float | None = None
        self.csock = csock
        self.usock: socket.socket | None = None
        #: The last TCP_INFO sample per leg.
        self.tcp: dict[str, TcpInfo | None] = {"client": None, "upstream": None}
        self._retrans_seen = {"client": 0, "upstream": 0}
        self.protocol = "tcp"
        self.observation: Observation | None = None
        self.quality = Quality()
        #: Earlier connections from the same client address to this route (10 min).
        self.reconnects = 0

    def sample_tcp(self, metrics: RouteMetrics) -> None:
        """Read TCP_INFO of both legs into the histograms and counters."""
        for leg, sock in (("client", self.csock), ("upstream", self.usock)):
            if sock is None or sock.fileno() < 0:
                continue
            info = read_tcp_info(sock)
            if info is None:
                continue
            self.tcp[leg] = info
            if info.rtt_s > 0:
                metrics.rtt[leg].observe(info.rtt_s)
                if leg == "client":
                    self.quality.latency(info.rtt_s, "tcp")
            delta = info.total_retrans - self._retrans_seen[leg]
            if delta > 0:
                metrics.retransmits[leg] += delta
                self._retrans_seen[leg] = info.total_retrans

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
            "client_eof": self.c2u.eof,
            "upstream_eof": self.u2c.eof,
            "connect_attempts": self.connect_attempts,
            "connect_ms": None if self.connect_s is None else round(self.connect_s * 1000, 3),
            "tcp": tcp,
            "quality": self.quality.report(self.reconnects),
            "observed": connection_facts(self.observation, now),
        }


async def _idle_watch(conn: Connection, timeout_s: float, scope: trio.CancelScope) -> None:
    last = (conn.c2u.bytes, conn.u2c.bytes)
    quiet_since = trio.current_time()
    while True:
        await trio.sleep(timeout_s / IDLE_CHECKS_PER_TIMEOUT)
        now = trio.current_time()
        seen = (conn.c2u.bytes, conn.u2c.bytes)
        if seen != last:
            last, quiet_since = seen, now
        elif now - quiet_since >= timeout_s:
            conn.end = "idle_timeout"
            scope.cancel()
            return


def _write_frame(sock: socket.socket, frame: bytes) -> bool:
    """Write a small frame whole, or not at all (never half a frame)."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT)
    if not poller.poll(0):
        return False
    try:
        return sock.send(frame) == len(frame)
    except OSError:
        return False


async def _ws_keepalive(conn: Connection, rt: "RouteRuntime", csock: socket.socket, usock: socket.socket,
                        scope: trio.CancelScope) -> None:
    """Ping both sides between frames; close a connection whose side stops answering."""
    observation = conn.observation
    assert observation is not None
    settings = rt.config.settings
    await observation.upgraded.wait()
    while True:
        await trio.sleep(settings.ws_ping_interval_s)
        now = trio.current_time()
        if observation.closing or observation.mode != "websocket":
            return  # closing, or observation gave up (or was shed): frame boundaries are unknown
        for side, sock, flow in (("client", csock, conn.u2c), ("upstream", usock, conn.c2u)):
            pending = observation.keepalive[side]
            if pending is not None:
                if now - pending[1] > settings.ws_ping_timeout_s:
                    conn.end = "ws_timeout"
                    log(logger, logging.WARNING, "websocket.zombie", route=conn.route, conn=conn.id, side=side,
                        silent_s=round(now - pending[1], 3))
                    scope.cancel()
                    return
                continue
            if flow.tail:
                continue  # a chunk is half delivered: not a frame boundary
            frame = observation.keepalive_frame(side, now)
            if frame is not None and not _write_frame(sock, frame):
                # Could not write it whole: the socket is full; try next time.
                observation.keepalive[side] = None


async def _forward(conn: Connection, rt: "RouteRuntime", csock: socket.socket, usock: socket.socket) -> set[str]:
    """Run both pumps; return the legs ("client"/"upstream") to abort with RST."""
    abort: set[str] = set()
    open_directions = 2
    use_splice = rt.config.settings.splice and HAVE_SPLICE
    protocol = rt.config.settings.protocol
    if protocol != "tcp":
        conn.observation = Observation(rt.observation, conn, protocol)
    observe = conn.observation

    async def leg(src: socket.socket, dst: socket.socket, flow: Flow, src_name: str, dst_name: str) -> None:
        nonlocal open_directions
        callback = None if observe is None else (
            observe.client_direction if src_name == "client" else observe.upstream_direction)
        try:
            await pump(src, dst, rt.scratch, flow, splice=use_splice, observe=callback)
        except LegFailed as exc:
            failed = src_name if exc.side == "src" else dst_name
            other = dst_name if failed == src_name else src_name
            if conn.end is None:
                conn.end = f"{failed}_reset"
            abort.add(other)
            nursery.cancel_scope.cancel()
            return
        open_directions -= 1
        if open_directions == 0:
            nursery.cancel_scope.cancel()  # stops the idle watcher

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leg, csock, usock, conn.c2u, "client", "upstream")
        nursery.start_soon(leg, usock, csock, conn.u2c, "upstream", "client")
        if rt.config.settings.idle_timeout_s > 0:
            nursery.start_soon(_idle_watch, conn, rt.config.settings.idle_timeout_s, nursery.cancel_scope)
        if observe is not None and rt.config.settings.ws_ping_interval_s > 0:
            nursery.start_soon(_ws_keepalive, conn, rt, csock, usock, nursery.cancel_scope)
    if conn.end is None and open_directions == 0:
        conn.end = "closed"
    return abort


def _client_gone(csock: socket.socket, protocol: str) -> bool:
    """Has the client left before its upstream connection was made?

    A reset, or a FIN with nothing sent (nothing to deliver), always; a FIN
    after an HTTP request too -- HTTP/1.1 clients do not half-close while
    they wait for an answer, a closed one abandoned its request.  On opaque
    TCP a FIN after data is a half-close, part of the stream: delivered.
    """
    try:
        head = csock.recv(8, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if not head:
        return True
    state = tcp_state(csock)
    if state == TCP_CLOSE:  # reset: the kernel may still hold the bytes it sent before
        return True
    if protocol == "tcp" or state != TCP_CLOSE_WAIT:
        return False
    return protocol == "http" or starts_like_request(head)


async def serve_connection(rt: "RouteRuntime", csock: socket.socket, client: str) -> None:
    """Handle one accepted client socket to the end; never raises OSError."""
    settings = rt.config.settings
    conn = Connection(rt.config.name, client, csock)
    conn.reconnects = rt.count_reconnect(client.rsplit(":", 1)[0], trio.current_time())
    rt.connections[conn.id] = conn
    usock: socket.socket | None = None
    abort: set[str] = set()
    try:
        sockopts.tune(csock, settings.tcp_keepalive_s)
        t0 = trio.current_time()
        try:
            usock, conn.connect_attempts = await rt.connector.connect(
                lambda: _client_gone(csock, settings.protocol))
        except ClientGone as exc:
            conn.end = "client_gone"
            conn.connect_attempts = exc.attempts
            log(logger, logging.DEBUG, "connection.client_gone", route=conn.route, conn=conn.id, client=client,
                attempts=exc.attempts)
            return
        except LocalResourceError as exc:
            conn.end = "local_resources"
            rt.exhaustion.record(exc.resource, exc.errno_name, "upstream_connect", trio.current_time())
            rt.breaker.release_probe()
            abort.add("client")
            log(logger, logging.ERROR, "connection.local_resources", route=conn.route, conn=conn.id,
                resource=exc.resource, error=exc.errno_name, detail=str(exc))
            return
        except UpstreamUnavailable as exc:
            conn.end = "upstream_unavailable"
            conn.connect_attempts = exc.attempts
            rt.connect_failures[exc.reason] = rt.connect_failures.get(exc.reason, 0) + 1
            if rt.breaker.record_failure(trio.current_time(), exc.reason):
                log(logger, logging.ERROR, "circuit.open", route=conn.route, reason=exc.reason,
                    open_s=rt.breaker.open_s, opened_total=rt.breaker.opened_total)
            abort.add("client")
            log(logger, logging.WARNING, "upstream.unavailable", route=conn.route, conn=conn.id,
                client=client, upstream=exc.upstream, reason=exc.reason, attempts=exc.attempts,
                detail=exc.detail)
            return
        conn.connect_s = trio.current_time() - t0
        rt.metrics.upstream_connect.observe(conn.connect_s)
        if rt.breaker.record_success():
            log(logger, logging.INFO, "circuit.closed", route=conn.route)
        conn.usock = usock
        conn.upstream = _peer(usock)
        sockopts.tune(usock, settings.tcp_keepalive_s)
        conn.sample_tcp(rt.metrics)  # the handshakes' RTT: quality has a figure from the start
        abort = await _forward(conn, rt, csock, usock)
    except OSError as exc:  # setsockopt on a socket the client already reset
        conn.end = conn.end or "client_reset"
        log(logger, logging.DEBUG, "connection.error", route=conn.route, conn=conn.id, error=str(exc))
    finally:
        if conn.end is None:
            conn.end = "drain_timeout" if rt.draining else "cancelled"
        if usock is None and conn.end not in ("upstream_unavailable", "local_resources"):
            rt.breaker.release_probe()  # went away before the upstream answered either way
        conn.sample_tcp(rt.metrics)  # the last sample, at close
        if conn.observation is not None:
            conn.observation.close()  # buffers given back at once, not when the cyclic GC runs
        sockopts.close(csock, abort="client" in abort)
        if usock is not None:
            sockopts.close(usock, abort="upstream" in abort)
        del rt.connections[conn.id]
        rt.connection_closed(conn)
        duration = trio.current_time() - conn.started
        rt.metrics.connection_duration.observe(duration)
        policy = settings.connection_log
        if policy == "all" or (policy == "sampled" and (
                conn.end != "closed" or (rt.ended.get("closed", 1) - 1) % settings.connection_log_every == 0)):
            rtt = {f"rtt_{leg}_ms": round(info.rtt_s * 1000, 3) for leg, info in conn.tcp.items() if info}
            log(logger, logging.INFO, "connection.closed", unlimited=policy == "all",
                limit_key=f"connection.closed:{conn.end}", route=conn.route, conn=conn.id,
                client=client, upstream=conn.upstream, end=conn.end, duration_s=round(duration, 6),
                bytes_client_to_upstream=conn.c2u.bytes, bytes_upstream_to_client=conn.u2c.bytes, **rtt)
