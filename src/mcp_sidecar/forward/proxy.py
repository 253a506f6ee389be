"""The forwarding worker: accept loops for every route, connections, drain.

Task tree (every task has one owner)::

    Proxy.serve
      connections nursery        -- one task per connection (connection.py)
        acceptors nursery        -- one accept loop per listening socket, the
                                    upstream checkers, the TCP_INFO sampler

Shutdown is cancellation: ``begin_drain()`` cancels the acceptors (no new
connections), the listening sockets are closed, and the connections nursery
gets a deadline of ``drain_timeout``; connections that finish earlier end
the drain earlier.  ``stop_now()`` cancels the connections at once.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

import trio

from .. import logs
from ..config.addresses import format_sockaddr
from ..config.model import ProxyConfig, RouteConfig
from ..config.tls import TlsSettingsError, client_context, server_context
from ..health.breaker import CircuitBreaker
from ..health.checks import route_health, run_checks
from ..logs import log
from ..net import sockopts
from ..net.exhaustion import DescriptorBudget, LocalExhaustion
from ..net.listeners import BoundListener
from ..net.upstream import Connector, local_resource_error
from ..observe.budget import LOAD_INTERVAL_S, MemoryBudget, ObservationBudget
from ..observe.mcp import McpTracker
from ..observe.mcpmeta import TargetLabels
from ..observe.requestlog import RequestLogPolicy
from . import faultcontrol, memtrim
from .connection import serve_connection
from .drainwatch import DrainWatch
from .limits import SharedCounts
from .metrics import Metrics
from .observation import RouteObservation
from .observequeue import ObservationQueue
from .otelsinks import otel_sinks
from .pump import Pipe, ScratchBuffer
from .refuse import refuse
from .state import Connection, RouteControl, RouteState
from .statsrelay import StatsRelay
from .tap import TapHub

logger = logging.getLogger(__name__)

#: An operator's drained or disabled route tells clients to come back after this.
OPERATOR_RETRY_AFTER_S = 30
#: Accepts in a row before yielding to the scheduler during an accept storm.
ACCEPTS_PER_CHECKPOINT = 64
#: Pause after EMFILE/ENFILE/ENOBUFS before accepting again (as trio does).
ACCEPT_RESOURCE_BACKOFF_S = 0.1
#: How long a worker holding more than an even share of a route's connections
#: leaves a new one to the other workers before taking it itself; after
#: ``BALANCE_IN_VAIN`` such waits in a row that none took (stopped, or busy),
#: how long it then accepts without leaving any.
BALANCE_WAIT_S = 0.003
BALANCE_IN_VAIN = 2
BALANCE_QUIET_S = 0.5
#: A constant task name (trio would format one per connection).
_CONNECTION_TASK = "mcp_sidecar.forward.connection.serve_connection"


@dataclass(frozen=True)
class Cooperation:
    """How a worker shares its routes with the other workers of its
    supervisor (the defaults: alone)."""

    #: Workers serving the routes at once (the upstream connect cap is shared out).
    workers: int = 1
    #: The routes' connection counts, shared (max_connections holds for all).
    counts: SharedCounts | None = None
    #: The supervisor keeps the MCP figures and serves the views: relay them.
    relay_stats: bool = False
    #: The supervisor runs the health checks and sends their results.
    checks_elsewhere: bool = False
    #: The supervisor correlates the messages of transports spanning connections.
    correlate_remotely: bool = False


class Proxy:
    """The forwarding worker's engine: one ``RouteState`` per route, the
    accept loops, the connections, the health checks and the housekeeping,
    all owned by ``serve``'s nurseries.

    Shared by every route: the scratch receive buffer (the hot path reads
    into it), the observation CPU and memory budgets, the local-exhaustion
    record and the descriptor budget -- one worker, one thread, one of each.
    """

    def __init__(
        self, config: ProxyConfig, listeners: list[BoundListener], cooperation: Cooperation = Cooperation()
    ) -> None:
        self.config = config
        self.cooperation = cooperation
        self.started_unix = time.time()
        self.metrics = Metrics()
        size = max(r.settings.buffer_bytes for r in config.routes)
        self._scratch = ScratchBuffer(size)
        self.routes: list[RouteState] = []
        #: One budget for the whole worker: observation shares its one thread.
        self.observe_budget = ObservationBudget(config.observe_cpu_share, time.perf_counter())
        #: One byte budget for every inspection buffer of the worker.
        self.observe_memory = MemoryBudget(config.observe_memory_bytes)
        #: One queue of chunks to observe, drained once per scheduler pass.
        self.observe_queue = ObservationQueue()
        #: Large answers on their way to slow clients (who was slow's client part).
        self.drains = DrainWatch()
        #: Every observed MCP request as an OpenTelemetry span and duration; None while [otel] is off.
        self.otel = otel_sinks(config.otel, self.metrics)
        self.tracer = self.otel.tracer if self.otel is not None else None
        self.exhaustion = LocalExhaustion()
        self.descriptors = DescriptorBudget.for_this_process()
        for route in config.routes:
            s = route.settings
            health = route_health(route)
            tls_server, tls_client, unusable = self._tls(route)
            self.routes.append(
                RouteState(
                    config=route,
                    listeners=[item for item in listeners if item.route is route],
                    connector=Connector(
                        route.upstreams,
                        s.connect_timeout_s,
                        s.connect_retry_window_s,
                        max(1, s.max_connecting // cooperation.workers),  # (shared out: the cap holds for all)
                        health.preferred,
                        tls=tls_client,
                        tls_name=s.upstream_tls.name,
                    ),
                    scratch=self._scratch.view(s.buffer_bytes),
                    metrics=self.metrics.for_route(route.name),
                    health=health,
                    breaker=CircuitBreaker(s.breaker.failures, s.breaker.open_s),
                    observation=RouteObservation(
                        route.name,
                        self.metrics,
                        McpTracker(s.observe.mcp_request_timeout_s),
                        budget=self.observe_budget,
                        memory=self.observe_memory,
                        queue=self.observe_queue,
                        drains=self.drains,
                        tracer=self.tracer,
                        otel=self.otel,
                        request_log=RequestLogPolicy(s.observe.request_log_sample, s.observe.request_log_rate)
                        if s.observe.request_log
                        else None,
                        tap_max_bytes=config.observe.tap_max_bytes,
                        tap_bound=config.observe.tap_max_bytes,
                        targets=TargetLabels(s.observe.target_label_limit),
                        target_resources=s.observe.target_label_resources,
                        relay=StatsRelay(route.name) if cooperation.relay_stats else None,
                        correlate_remotely=cooperation.correlate_remotely,
                    ),
                    exhaustion=self.exhaustion,
                    tls_server=tls_server,
                    allowed=tuple(ip_network(n) for n in s.allow),
                    unusable=unusable,
                    shared=cooperation.counts,
                    shared_index=len(self.routes),
                )
            )
        faultcontrol.install(self.routes, config.faults_enabled)
        #: Who watches the MCP messages (proxyctl tap, through the admin endpoint).
        self.taps = TapHub(rt.observation for rt in self.routes)
        #: Set by the worker when a supervisor runs it (see supervisor.py).
        self.supervisor_facts: Callable[[], dict[str, Any] | None] = lambda: None
        self.draining = False
        self._conn_scope: trio.CancelScope | None = None
        self._drain_requested = trio.Event()
        self.stopped = trio.Event()

    @staticmethod
    def _tls(route: RouteConfig) -> tuple[Any, Any, str | None]:
        """The route's TLS contexts, built from the bytes the configuration
        loaded (never the files: see config/tls.py); if even that fails, the
        route is unusable -- it refuses its clients, every other route serves."""
        try:
            return (
                server_context(route.settings, route.tls_material),
                client_context(route.settings, route.tls_material),
                None,
            )
        except TlsSettingsError as exc:
            reason = f"TLS unavailable ({exc.field}: {exc})"
            log(logger, logging.ERROR, "route.unusable", route=route.name, reason=reason)
            return None, None, reason

    def connection(self, conn_id: int) -> tuple[RouteState, Connection] | None:
        for rt in self.routes:
            conn = rt.connections.get(conn_id)
            if conn is not None:
                return rt, conn
        return None

    async def _sweep_mcp(self) -> None:
        """MCP requests that got no response in mcp_request_timeout: "timeout"."""
        while True:
            await trio.sleep(1.0)
            self.observe_queue.drain()  # answers already forwarded are not late
            now = trio.current_time()
            for rt in self.routes:
                rt.observation.outcomes(rt.observation.tracker.sweep(now), now)
                rt.observation.sink.expire(now)

    async def _watch_load(self) -> None:
        """The worker's CPU utilisation, for the observation budget (budget.py)."""
        budget = self.observe_budget
        while True:
            budget.load(time.process_time(), time.perf_counter())
            await trio.sleep(LOAD_INTERVAL_S)

    async def _maintain(self) -> None:
        """Housekeeping: the summaries of suppressed log lines (logs.py), and
        freed heap handed back to the kernel after connections end (memtrim.py)."""
        closed = self._closed_total()
        while True:
            await trio.sleep(memtrim.TRIM_INTERVAL_S)
            logs.flush_suppressed()
            now = self._closed_total()
            if now != closed:
                closed = now
                memtrim.trim()

    def _closed_total(self) -> int:
        return sum(rt.total - rt.active for rt in self.routes)

    async def _sample_tcp_stats(self) -> None:
        """Envoy's tcp_stats: TCP_INFO of every open connection, periodically."""
        while True:
            await trio.sleep(self.config.tcp_stats_interval_s)
            for rt in self.routes:
                for conn in list(rt.connections.values()):
                    conn.sample_tcp(rt.metrics)

    @property
    def listeners(self) -> list[BoundListener]:
        return [item for rt in self.routes for item in rt.listeners]

    def begin_drain(self) -> None:
        """Stop accepting; open connections get ``drain_timeout`` to finish."""
        if not self.draining:
            self.draining = True
            for rt in self.routes:
                rt.draining = True
            self._drain_requested.set()

    def stop_now(self) -> None:
        """Close every connection now (a second signal during drain)."""
        self.begin_drain()
        if self._conn_scope is not None:
            self._conn_scope.cancel()

    async def _accept_loop(self, rt: RouteState, lsock: socket.socket, conns: trio.Nursery) -> None:
        """Accept the route's clients.  Several workers share the listening
        socket and each is woken for every client: the first awake would take
        a whole burst (8 of 8 measured: long-lived connections then all on one
        core), so a worker holding more than an even share of the route's
        connections, and one more, leaves the next to the others for
        ``BALANCE_WAIT_S``, and takes it itself if none did; after
        ``BALANCE_IN_VAIN`` of those in a row (the others are stopped or busy)
        it accepts without leaving any for ``BALANCE_QUIET_S``: a client waits
        a few milliseconds at most, and accepting is never held to one client
        a wait."""
        accept = lsock.accept
        max_connections = rt.config.settings.max_connections
        workers = self.cooperation.workers if rt.shared is not None else 1
        burst = in_vain = 0
        quiet_until = 0.0
        while True:
            deferred = False
            elsewhere = rt.open_elsewhere()  # (read once: the balance, the limit and the route's peak)
            if (
                workers > 1
                and rt.active * workers > rt.active + elsewhere + workers  # (more than even + 1)
                and trio.current_time() >= quiet_until
            ):
                await trio.sleep(BALANCE_WAIT_S)
                deferred = True
                elsewhere = rt.open_elsewhere()
            try:
                csock, addr = accept()
            except BlockingIOError:
                burst = 0
                await trio.lowlevel.wait_readable(lsock)
                continue
            except OSError as exc:
                local = local_resource_error(exc)
                if local is not None:
                    self.exhaustion.record(local.resource, local.errno_name, "accept", trio.current_time())
                    log(
                        logger,
                        logging.ERROR,
                        "accept.resource_exhausted",
                        route=rt.config.name,
                        resource=local.resource,
                        error=local.errno_name,
                    )
                    await trio.sleep(ACCEPT_RESOURCE_BACKOFF_S)
                    continue
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # the client gave up before we accepted
                if exc.errno == errno.EINVAL:
                    return  # the supervisor shut the listening socket down: a stop
                raise
            if deferred:  # (left to the others, and none took it)
                in_vain += 1
                if in_vain >= BALANCE_IN_VAIN:
                    in_vain = 0
                    quiet_until = trio.current_time() + BALANCE_QUIET_S
            else:
                in_vain = 0
            csock.setblocking(False)
            if rt.unusable is not None:
                self._reject(rt, csock, addr, "route_unusable", detail=rt.unusable)
            elif not rt.allows(addr[0]):
                self._reject(rt, csock, addr, "not_allowed")
            elif rt.active + rt.refusing + elsewhere >= max_connections and not rt.shed_unadmitted():
                # (refusals hold a descriptor too; an unauthenticated client is shed for the newcomer)
                self._reject(rt, csock, addr, "max_connections", limit=max_connections)
            elif not self.descriptors.allows(sum(r.active + r.refusing for r in self.routes), Pipe.open):
                self.exhaustion.record("descriptors", "RLIMIT_NOFILE", "accept", trio.current_time())
                self._reject(rt, csock, addr, "descriptors", limit=self.descriptors.limit)
            elif rt.operator is not RouteControl.ENABLED:
                # Taken out by an operator: answered at once (a 503 that says so, or a reset).
                rt.reject("operator")
                rt.refusing += 1
                conns.start_soon(self._refuse_operator, rt, csock)
            elif rt.upstreams_known_down():
                # Every upstream failed its checks: answered now, not after the retry window.
                rt.reject("upstream_down")
                rt.refusing += 1
                conns.start_soon(self._refuse_down, rt, csock)
            elif not rt.breaker.allow(trio.current_time()):
                rt.reject("circuit_open")
                rt.refusing += 1
                conns.start_soon(self._refuse, rt, csock)
            elif rt.faults is not None and (down := rt.faults.refuse_connection(trio.current_time())) is not None:
                self._reject(rt, csock, addr, "fault", fault=down.spec.name)  # the route "down": a reset at once
            else:
                rt.opened(elsewhere)
                conns.start_soon(serve_connection, rt, csock, format_sockaddr(addr), name=_CONNECTION_TASK)
            burst += 1
            if burst >= ACCEPTS_PER_CHECKPOINT:
                burst = 0
                await trio.lowlevel.checkpoint()

    def _reject(self, rt: RouteState, csock: socket.socket, addr: Any, reason: str, **fields: Any) -> None:
        """Close a client at once with RST (a limit is reached), counted."""
        rt.reject(reason)
        sockopts.close(csock, abort=True)
        log(
            logger,
            logging.WARNING,
            "connection.rejected",
            route=rt.config.name,
            client=format_sockaddr(addr),
            reason=reason,
            **fields,
        )

    async def _refuse(self, rt: RouteState, csock: socket.socket) -> None:
        """The circuit is open: answer 503 (HTTP) or RST, counted against
        max_connections while it lasts."""
        breaker = rt.breaker
        reason = f"circuit open after {breaker.threshold} consecutive upstream failures ({breaker.last_reason})"
        try:
            await refuse(
                csock, rt.config.settings.protocol, rt.config.name, reason, breaker.retry_after_s(trio.current_time())
            )
        finally:
            rt.refusing -= 1

    async def _refuse_operator(self, rt: RouteState, csock: socket.socket) -> None:
        reason = f"route {rt.name} is {rt.operator} by an operator"
        try:
            await refuse(csock, rt.config.settings.protocol, rt.config.name, reason, OPERATOR_RETRY_AFTER_S)
        finally:
            rt.refusing -= 1

    def control_route(self, name: str, control: RouteControl, since_unix: float | None = None) -> bool:
        """An operator's ``drain``, ``disable`` or ``enable`` of route ``name``
        (False: no such route).  Disabling closes the route's open connections."""
        rt = next((r for r in self.routes if r.name == name), None)
        if rt is None:
            return False
        if rt.operator is not control:
            rt.operator = control
            rt.operator_since_unix = since_unix if since_unix is not None else time.time()
            log(logger, logging.WARNING, "route.operator", route=name, state=str(control))
        if control is RouteControl.DISABLED:
            for conn in list(rt.connections.values()):
                conn.close_now()
        return True

    async def _refuse_down(self, rt: RouteState, csock: socket.socket) -> None:
        """Every upstream is known down: 503 with Retry-After (HTTP) or RST, at once."""
        health = rt.health
        reason = f"upstream {rt.config.upstream_text} is down ({health.last_result})"
        retry_after = max(1, math.ceil(min(t.next_interval_s() for t in health.targets)))
        try:
            await refuse(csock, rt.config.settings.protocol, rt.config.name, reason, retry_after)
        finally:
            rt.refusing -= 1

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until drained; the listeners are closed on return."""
        try:
            async with trio.open_nursery() as observing:
                # Outlives the connections (each drains it as it closes), then cancelled.
                observing.start_soon(self.observe_queue.run)
                observing.start_soon(self.drains.run)
                if self.otel is not None:
                    observing.start_soon(self.otel.run)
                await self._serve_connections(task_status)
                observing.cancel_scope.cancel()
        finally:
            self._close_listeners()
            self.stopped.set()
        log(logger, logging.INFO, "proxy.stopped")

    async def _serve_connections(self, task_status: trio.TaskStatus[None]) -> None:
        """Accept until a drain is requested, then give the connections ``drain_timeout``."""
        async with trio.open_nursery() as conns:
            self._conn_scope = conns.cancel_scope
            async with trio.open_nursery() as acceptors:
                for rt in self.routes:
                    for listener in rt.listeners:
                        # Inherited by the accepted sockets (sockopts.py).
                        sockopts.tune_listener(
                            listener.sock, rt.config.settings.tcp_keepalive_s, rt.config.settings.user_timeout_s
                        )
                        acceptors.start_soon(self._accept_loop, rt, listener.sock, conns)
                    if rt.health.enabled and not self.cooperation.checks_elsewhere:
                        for target in rt.health.targets:
                            acceptors.start_soon(
                                run_checks, rt.name, rt.config.settings, target, rt.connector, rt.exhaustion
                            )
                acceptors.start_soon(self._sample_tcp_stats)
                acceptors.start_soon(self._maintain)
                acceptors.start_soon(self._sweep_mcp)
                if not self.observe_budget.unlimited:
                    acceptors.start_soon(self._watch_load)
                task_status.started()
                await self._drain_requested.wait()
                acceptors.cancel_scope.cancel()
            self._close_listeners()
            active = sum(rt.active for rt in self.routes)
            log(
                logger,
                logging.INFO,
                "proxy.draining",
                connections=active,
                drain_timeout_s=self.config.drain_timeout_s,
            )
            conns.cancel_scope.deadline = min(
                conns.cancel_scope.deadline, trio.current_time() + self.config.drain_timeout_s
            )

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            if listener.sock.fileno() >= 0:
                sockopts.close(listener.sock)
