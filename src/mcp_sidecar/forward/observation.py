"""What one connection's observation means: metrics, quality, the tap, the request log.

``observe/connection.py`` (sans-io) reads the bytes and says what happened;
this module is the sink that turns its events into the operator's figures,
and the policy around it.

Rules this module keeps:

* The pump calls ``ObservedDirection.feed`` with each chunk right after
  handing it to the kernel (before, only while the WebSocket keepalive may
  rewrite it); False means no more bytes of that direction are wanted (the
  pump then stops calling and may splice).  They never raise: an observer
  that the peer's bytes defeat (``PEER_FAULTS``) is dropped for this
  connection and counted in ``mcp_sidecar_observer_errors_total`` --
  forwarding goes on unchanged (fail open).  A defect of our own is counted
  apart (``mcp_sidecar_observer_bugs_total``) and logged once with its
  traceback; under the test suite (``STRICT``) it is raised.
* ``protocol = "tcp"`` never observes; ``"auto"`` lets the observer sniff.
  Opaque TCP pays one ``is not None`` test per chunk.
* Each observed chunk's cost (the observer's and this sink's) is measured
  and charged to the worker's ``ObservationBudget`` (budget.py).  While the
  worker is saturated and the budget is spent, the connection is shed: mode
  ``shed``, counted in ``mcp_sidecar_observer_shed_total{route}``, forwarded
  opaque from then on (never while the keepalive may still rewrite a
  chunk); new connections are shed at birth.  Whatever stops observation
  also stops the keepalive.
* Metric children are looked up once per label set (``RouteObservation.child``):
  an exchange or a frame costs dictionary lookups and additions, no lock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from time import perf_counter
from typing import Any, Callable

import trio

from ..logs import log
from ..observe.budget import UNBOUNDED, InspectionMemoryExhausted, MemoryBudget, ObservationBudget
from ..observe.connection import PEER_FAULTS, ConnectionObserver, Mode, transport_label
from ..observe.events import (BodyTooLarge, ExchangeDone, FramesCounted, HttpDetected, JsonRpcSeen, KeepaliveAnswered, McpOutcome,
                              NotificationSeen, Opaque, PingAnswered, ResponseStarted, SessionEndpoint, SseSeen,
                              Tunneled, WebSocketClosing, WebSocketOpened)
from ..observe.http import trace_id
from ..observe.jsonrpc import UNSET, Envelope, decode
from ..observe.mcp import McpTracker, method_label
from ..observe.mcpstats import McpStats
from ..observe.quality import Quality
from ..observe.requestlog import RequestLogPolicy, request_line
from ..observe.tap import DEFAULT_MAX_BYTES, tap_record
from ..redact import redact_text
from .metrics import Metrics

__all__ = ["Mode", "Observation", "ObservedDirection", "RouteObservation", "STRICT"]

logger = logging.getLogger(__name__)

#: Set in the test suite's environment (MCP_SIDECAR_STRICT=1): observer bugs
#: surface as failures instead of being counted.
STRICT = os.environ.get("MCP_SIDECAR_STRICT") == "1"
#: Bug kinds already logged with a traceback (once each per process).
_BUGS_LOGGED: set[str] = set()

#: Shared read-only placeholders until a connection needs its own (see Observation).
_NONE_YET: Mapping[str, int] = MappingProxyType({})
_NO_HTTP_STATS: Mapping[str, Any] = MappingProxyType({"exchanges": 0, "last": None})
_NO_SSE_STATS: Mapping[str, Any] = MappingProxyType({"events": 0, "keepalives": 0, "max_gap_s": 0.0, "started": None,
                                                     "last_at": None})
_NO_REQUESTS: list[tuple[str, float]] = []  # never appended to: HTTP connections get their own

#: Modes tested by identity on the hot path.
_HTTP, _WEBSOCKET, _SNIFF = Mode.HTTP, Mode.WEBSOCKET, Mode.SNIFF


class ObservedDirection:
    """What the pump holds for one direction: ``feed`` and ``rewriting``."""

    __slots__ = ("observation", "side")

    def __init__(self, observation: "Observation", side: str) -> None:
        self.observation: Observation = observation
        self.side = side

    @property
    def rewriting(self) -> bool:
        observer = self.observation.observer
        if observer.mode is not _WEBSOCKET:  # only a WebSocket's keepalive rewrites or holds bytes
            return False
        return observer.rewriting

    def feed(self, data: Any) -> bool | bytes:
        return self.observation._feed(self.side, data)


@dataclass
class RouteObservation:
    """Route-level state shared by its connections: MCP correlation, metrics."""

    route: str
    metrics: Metrics
    tracker: McpTracker
    #: Shared by the worker's routes (proxy.py); unlimited when built alone (tests).
    budget: ObservationBudget = field(default_factory=lambda: ObservationBudget(1.0, 0.0))
    #: The worker's inspection buffers (budget.py); unbounded when built alone.
    memory: MemoryBudget = UNBOUNDED
    #: Seconds spent observing this route's chunks; connections shed over the budget.
    observe_s: float = 0.0
    shed: int = 0
    #: Observers that gave up because the inspection buffers were full.
    memory_exhausted: int = 0
    #: Observers stopped by a defect of ours (not the peer's bytes).
    bugs: int = 0
    #: JSON bodies past the observer's bound: counted, not parsed.
    bodies_too_large: int = 0
    #: Open connections that carried MCP; GET event streams open now (kept
    #: here as they change, so that a scrape never walks the connections).
    mcp_connections: int = 0
    open_streams: int = 0
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    #: (side, opcode) -> (frames counter, bytes counter): one lookup per chunk.
    ws_children: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    #: Per method and transport, sessions (observe/mcpstats.py): what /api/mcp shows.
    stats: McpStats = field(default_factory=McpStats)
    #: The request log's sampling and rate cap; None while it is off.
    request_log: RequestLogPolicy | None = None
    #: The tap's subscribers that want this route (forward/tap.py); empty: nobody taps.
    taps: tuple[Any, ...] = ()
    tap_max_bytes: int = DEFAULT_MAX_BYTES
    #: Called with a connection's id once it turns out to be long-lived
    #: (state.py counts its reconnect then); one per route, not per connection.
    stream_opened: Callable[[int], None] | None = None

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(route, *labels)``, cached (labels() takes a lock and
        builds a key on every call; this runs per frame and per exchange)."""
        key = (id(metric), *labels)
        try:
            return self._children[key]
        except KeyError:
            child = self._children[key] = metric.labels(self.route, *labels)
            return child

    def ws_counters(self, side: str, opcode: str) -> tuple[Any, Any]:
        """The frame and byte counters of one direction and opcode (cached)."""
        direction = "client_to_upstream" if side == "client" else "upstream_to_client"
        pair = self.ws_children[(side, opcode)] = (self.child(self.metrics.ws_frames, direction, opcode),
                                                   self.child(self.metrics.ws_bytes, direction, opcode))
        return pair

    def outcomes(self, outcomes: list[McpOutcome], now: float) -> None:
        """What came of requests: metrics, the operator's figures, the request log."""
        stats, policy = self.stats, self.request_log
        for outcome in outcomes:
            self.child(self.metrics.mcp_requests, outcome.method, outcome.status, outcome.transport).inc()
            if outcome.duration_s is not None and outcome.status != "cancelled":
                self.child(self.metrics.mcp_duration, outcome.method, outcome.transport).observe(outcome.duration_s)
            stats.outcome(outcome, now)
            if policy is not None and policy.admit(now):
                log(logger, logging.INFO, "mcp.request", unlimited=True, **request_line(self.route, outcome))


class Observation:
    """One connection's observation: its ``ConnectionObserver`` and what the
    events mean for this connection (its records for /api/connections, its
    quality, its MCP sessions); the pump's callbacks.

    Slotted, and what only HTTP traffic needs is created when the connection
    turns out to carry it: until then those attributes are shared read-only
    placeholders (a write to one is a bug and raises).  An idle connection
    holds only what it must.
    """

    __slots__ = ("route", "conn_id", "client", "quality", "protocol", "clock", "observer", "_mcp", "mcp_messages",
                 "_session", "on_websocket", "_long", "http_stats", "sse_stats", "close_frame", "_open_stream",
                 "_exchange_requests", "client_direction", "upstream_direction", "__weakref__")

    def __init__(self, route: RouteObservation, conn_id: int, quality: Quality, mode: str,
                 clock: Callable[[], float] = trio.current_time, *, client: str = "", keepalive: bool = False) -> None:
        self.route = route
        self.conn_id = conn_id
        #: The client's address (host:port), for the sessions it carries.
        self.client = client
        #: The connection's quality record: fed with the latencies and outcomes seen.
        self.quality = quality
        #: What the connection carries, as far as observation has seen: tcp, http, sse, websocket.
        self.protocol = "tcp"
        self.clock = clock
        #: The protocol machine (observe/connection.py): reads the bytes.
        self.observer = ConnectionObserver(mode, route.memory, keepalive=keepalive)
        self._mcp = False
        #: JSON-RPC messages seen, by how they travelled: http (a body), sse (an event), ws (a frame).
        self.mcp_messages: Mapping[str, int] = _NONE_YET
        #: The correlation key of messages without a session (the connection's own).
        self._session: str | None = None
        #: Called once a 101 switched the connection to WebSocket (connection.py
        #: starts the keepalive then).
        self.on_websocket: Callable[[], None] | None = None
        #: Told the route (``RouteObservation.stream_opened``) that the connection
        #: is long-lived (an event stream, a WebSocket, opaque TCP): reconnects
        #: are counted then, not for each short HTTP request (state.py).
        self._long = False
        #: Facts for /api/connections.
        self.http_stats: Mapping[str, Any] = _NO_HTTP_STATS
        self.sse_stats: Mapping[str, Any] = _NO_SSE_STATS
        self.close_frame: dict[str, Any] | None = None
        #: A GET answered with an event stream is open (a long stream: a gauge, not a latency).
        self._open_stream = False
        self._exchange_requests: list[tuple[str, float]] = _NO_REQUESTS
        self.client_direction = ObservedDirection(self, "client")
        self.upstream_direction = ObservedDirection(self, "upstream")
        if self.observer.mode is not Mode.TCP and not route.budget.admit(perf_counter()):
            self._shed()
        elif self.observer.mode is Mode.HTTP:
            self._begin_http()

    @property
    def mode(self) -> Mode:
        return self.observer.mode

    @property
    def closing(self) -> bool:
        """A close frame passed: the keepalive sends no more pings."""
        return self.observer.closing

    def _begin_http(self) -> None:
        """The connection carries HTTP: its records."""
        self.protocol = "http"
        self.http_stats = {"exchanges": 0, "last": None}
        self.sse_stats = {"events": 0, "keepalives": 0, "max_gap_s": 0.0, "started": None, "last_at": None}
        self.mcp_messages = {}
        self._exchange_requests = []

    @property
    def mcp(self) -> bool:
        """The connection carried MCP JSON-RPC."""
        return self._mcp

    def _saw_mcp(self) -> None:
        if not self._mcp:
            self._mcp = True
            self.route.mcp_connections += 1

    @property
    def open_stream(self) -> bool:
        return self._open_stream

    def _stream(self, is_open: bool) -> None:
        if is_open != self._open_stream:
            self._open_stream = is_open
            self.route.open_streams += 1 if is_open else -1

    def close(self) -> None:
        """The connection ended: give back every buffer and the route's gauges,
        and drop the references a closed connection must not keep alive."""
        observer = self.observer
        try:  # exchanges still under way end "aborted" (an event stream the client closed)
            now = self.clock()
            self._apply(observer.abort(now), now)
        except Exception as exc:  # noqa: BLE001 - closing must not fail
            if STRICT:
                raise
            self._bug(exc)
        if self._mcp:
            self.route.mcp_connections -= 1
        if self._session is not None:  # a connection-scoped session ends with its connection
            self.route.stats.end_session(self._session)
        if observer.http is not None and observer.http.stream_session is not None:  # the legacy stream that announced it
            self.route.stats.end_session(observer.http.stream_session)
        self._stream(False)
        observer.stop(Mode.CLOSED)
        observer.release("client", b"")
        observer.release("upstream", b"")
        if self.http_stats is not _NO_HTTP_STATS:
            self.http_stats["last"] = None  # type: ignore[index]
        self.on_websocket = None
        self.client_direction.observation = self.upstream_direction.observation = None  # type: ignore[assignment]

    def facts(self, now: float) -> dict[str, Any]:
        """What /api/connections shows of the connection's observed traffic."""
        observer = self.observer
        facts: dict[str, Any] = {"mode": observer.mode, "mcp": self.mcp, "mcp_messages": dict(self.mcp_messages)}
        if self.http_stats["exchanges"] or observer.mode is Mode.HTTP:
            last = self.http_stats["last"]
            facts["http"] = {"exchanges": self.http_stats["exchanges"], "last": None if last is None else {
                "method": last.method, "path": last.path, "status": last.status,
                "first_byte_ms": None if last.headers_at is None else round((last.headers_at - last.started) * 1000, 3),
                "total_ms": None if last.ended is None else round((last.ended - last.started) * 1000, 3),
                "request_bytes": last.request_bytes, "response_bytes": last.response_bytes,
                "content_type": last.content_type}}
        sse = self.sse_stats
        if sse["events"] or sse["keepalives"]:
            facts["sse"] = {"events": sse["events"], "keepalives": sse["keepalives"],
                            "max_gap_s": round(sse["max_gap_s"], 3),
                            "since_last_s": None if sse["last_at"] is None else round(now - sse["last_at"], 3),
                            "stream_s": None if sse["started"] is None else round(now - sse["started"], 3)}
        if observer.ws is not None:
            facts["websocket"] = {"close": self.close_frame,
                                  "keepalive_outstanding": [s for s in ("client", "upstream")
                                                            if observer.outstanding(s) is not None]}
        return facts

    # -- fed by the pump (through ObservedDirection) ------------------------------------------

    def _feed(self, side: str, data: Any) -> bool | bytes:
        observer = self.observer
        mode = observer.mode
        if mode is not _HTTP and mode is not _WEBSOCKET and mode is not _SNIFF:
            return self._release(side, data)  # no more observation (the other direction may have given up)
        if not data:  # EOF: release anything withheld
            return observer.release(side, b"") if observer.holding(side) else True
        started = perf_counter()
        now = self.clock()
        result: bool | bytes = True
        try:
            if mode is _HTTP:  # the usual step, inlined
                http = observer.http
                assert http is not None
                events: Any = (http.feed_client(data, now) if side == "client" else observer.upstream(data, now))
            elif mode is _WEBSOCKET and observer.rewriting:
                result, events = observer.rewrite(side, data, now)
            else:
                events = observer.feed(side, data, now)
            if events:
                self._apply(events, now)
        except InspectionMemoryExhausted:
            self._out_of_memory()
            return self._release(side, data, result)
        except PEER_FAULTS as exc:
            self._fail(exc)
            return self._release(side, data, result)
        except Exception as exc:  # a bug of ours, not the peer's
            if STRICT:
                raise
            self._bug(exc)
            return self._release(side, data, result)
        if not observer.observing:
            # Decided opaque (or the upstream spoke first): no more chunks, so
            # the pump runs exactly as with protocol "tcp", splice included.
            return False if result is True else result
        ended = perf_counter()
        route = self.route
        route.observe_s += ended - started
        if not route.budget.spend(ended - started, ended) and result is True and not observer.rewriting:
            self._shed()
            return False
        return result

    def _release(self, side: str, data: Any, rewritten: bool | bytes = True) -> bool | bytes:
        """No more observation: forward anything withheld, then this chunk
        (unless a rewrite already accounted for it); False when there is
        nothing to give back."""
        observer = self.observer
        if rewritten is not True and rewritten is not False:
            return observer.release(side, b"") + rewritten  # (held bytes, then what the rewrite let through)
        if not observer.holding(side):
            return False
        return observer.release(side, data)

    def _long_lived(self) -> None:
        if not self._long:
            self._long = True
            hook = self.route.stream_opened
            if hook is not None:
                hook(self.conn_id)

    def _shed(self) -> None:
        """Over the CPU budget: this connection is forwarded opaque from now on."""
        protocol = self.observer.mode
        self.observer.stop(Mode.SHED)
        self.route.shed += 1
        self.route.budget.shed += 1
        log(logger, logging.INFO, "observer.shed", route=self.route.route, conn=self.conn_id, protocol=protocol,
            budget=self.route.budget.share)

    def _out_of_memory(self) -> None:
        """The worker's inspection buffers are full: stop observing this
        connection (a local limit, counted apart from peer faults)."""
        protocol = self.observer.mode
        self.observer.stop(Mode.FAILED)
        self.route.memory_exhausted += 1
        log(logger, logging.INFO, "observer.memory_exhausted", route=self.route.route, conn=self.conn_id,
            protocol=protocol, limit_bytes=self.route.memory.limit)

    def _bug(self, exc: Exception) -> None:
        """A defect in the observation code met this connection: fail open
        (the bytes keep flowing), count it apart from peer garbage, and log
        the first of each kind with its traceback."""
        protocol = self.observer.mode
        self.route.bugs += 1
        kind = type(exc).__name__
        if kind not in _BUGS_LOGGED:
            _BUGS_LOGGED.add(kind)
            logger.error("observer.bug", exc_info=exc, extra={"sidecar_fields": {
                "route": self.route.route, "conn": self.conn_id, "protocol": protocol, "error": kind}})
        try:
            self.observer.stop(Mode.FAILED)
        except Exception:  # noqa: BLE001 - already failing open
            self.observer.mode = Mode.FAILED

    def _fail(self, exc: BaseException) -> None:
        protocol = self.observer.mode
        self.observer.stop(Mode.FAILED)
        self.route.child(self.route.metrics.observer_errors, protocol).inc()
        log(logger, logging.INFO, "observer.gave_up", route=self.route.route, conn=self.conn_id, protocol=protocol,
            error=str(exc)[:200])

    # -- the proxy's own keepalive (connection.py sends, the observer builds and matches) ------

    def keepalive_frame(self, side: str, now: float) -> bytes | None:
        """A ping frame to write to ``side`` now (see ConnectionObserver.keepalive_ping)."""
        return self.observer.keepalive_ping(side, now)

    # -- events -----------------------------------------------------------------------------

    def _apply(self, events: Any, now: float) -> None:
        handlers = _HANDLERS
        for event in events:
            handlers[type(event)](self, event, now)

    def _on_response_started(self, event: ResponseStarted, now: float) -> None:
        ex = event.exchange
        if self._exchange_requests:  # MCP time to first response byte
            child, metric = self.route.child, self.route.metrics.mcp_first_byte
            for label, at in self._exchange_requests:
                child(metric, label).observe(now - at)
            self._exchange_requests.clear()
        if ex.method == "GET" and ex.content_type == "text/event-stream":
            self._stream(True)
            self.sse_stats["started"] = now  # type: ignore[index]
            self._long_lived()

    def _on_exchange_done(self, event: ExchangeDone, now: float) -> None:
        ex = event.exchange
        route = self.route
        if self._open_stream:
            self._stream(False)
        if ex.aborted:  # counted apart: not a response, not an error of the upstream
            route.child(route.metrics.http_duration, "aborted").observe((ex.ended or now) - ex.started)
            return
        route.child(route.metrics.http_duration, "complete").observe((ex.ended or now) - ex.started)
        if ex.method == "DELETE" and ex.session is not None:  # streamable HTTP: the client ended its session
            route.stats.end_session(ex.session)
        stats = self.http_stats
        stats["exchanges"] += 1  # type: ignore[index]
        stats["last"] = ex  # type: ignore[index]  # rendered when asked (facts)
        status = ex.status or 0
        if ex.mcp_method and not ex.jsonrpc_requests and ex.method == "POST":
            # 2026-07-28: the Mcp-Method header labels a request whose body was not parsed.
            duration = (ex.ended or now) - ex.started
            route.outcomes([McpOutcome(method_label(ex.mcp_method), "ok" if 200 <= status < 300 else "other_error",
                                       duration, "client", session=ex.session, request_bytes=ex.request_bytes,
                                       response_bytes=ex.response_bytes)], now)
        child, metrics = route.child, route.metrics
        child(metrics.http_requests, ex.method, _STATUS_LABELS.get(status) or str(status)).inc()
        if ex.headers_at is not None:
            first_byte = ex.headers_at - ex.started
            child(metrics.http_response).observe(first_byte)
            if status != 101 and ex.content_type != "text/event-stream":
                self.quality.latency(first_byte, "http")
        self.quality.outcome(status < 500)

    def _on_sse(self, event: SseSeen, now: float) -> None:
        stats: Any = self.sse_stats
        if event.keepalive:
            stats["keepalives"] += 1
        else:
            self.route.child(self.route.metrics.sse_events).inc()
            stats["events"] += 1
        if stats["last_at"] is not None:
            stats["max_gap_s"] = max(stats["max_gap_s"], event.at - stats["last_at"])
        stats["last_at"] = event.at
        self.protocol = "sse"

    def _on_jsonrpc(self, event: JsonRpcSeen, now: float) -> None:
        self._jsonrpc(event.origin, event.message, event.at, event.session, event.transport, event.size,
                      event.trace)

    def _on_body_too_large(self, event: BodyTooLarge, now: float) -> None:
        self.route.bodies_too_large += 1

    def _on_session_endpoint(self, event: SessionEndpoint, now: float) -> None:
        self._saw_mcp()

    def _on_http(self, event: HttpDetected, now: float) -> None:
        self._begin_http()

    def _on_opaque(self, event: Opaque, now: float) -> None:
        self._long_lived()

    def _on_websocket_opened(self, event: WebSocketOpened, now: float) -> None:
        self.protocol = "websocket"
        self._long_lived()
        if self.on_websocket is not None:
            self.on_websocket()
            self.on_websocket = None

    def _on_frames(self, event: FramesCounted, now: float) -> None:
        route = self.route
        children = route.ws_children
        side = event.side
        for opcode, (frames, size) in event.counts.items():
            pair = children.get((side, opcode))
            if pair is None:
                pair = route.ws_counters(side, opcode)
            pair[0].inc(frames)
            pair[1].inc(size)

    def _on_notification(self, event: NotificationSeen, now: float) -> None:
        route = self.route
        if route.taps:  # somebody taps: the tap shows it, so it is decoded after all
            for message in decode(event.payload):
                self._jsonrpc(event.side, message, now, None, "ws", len(event.payload))
            return
        self._saw_mcp()
        counts: Any = self.mcp_messages
        counts["ws"] = counts.get("ws", 0) + 1
        if event.progress:
            route.tracker.progress += 1

    def _on_ping_answered(self, event: PingAnswered, now: float) -> None:
        self.route.child(self.route.metrics.ws_ping_rtt).observe(event.rtt_s)
        self.quality.latency(event.rtt_s, "ws_ping")

    def _on_keepalive_answered(self, event: KeepaliveAnswered, now: float) -> None:
        self.route.child(self.route.metrics.ws_keepalive_rtt, event.side).observe(event.rtt_s)
        self.quality.latency(event.rtt_s, "ws_ping")

    def _on_closing(self, event: WebSocketClosing, now: float) -> None:
        if self.close_frame is None:
            self.close_frame = {"code": event.code, "reason": redact_text((event.reason or "")[:123]),
                                "from": event.side}

    def _jsonrpc(self, origin: str, message: Envelope, now: float, session: str | None, transport: str,
                 size: int = 0, trace: str | None = None) -> None:
        if not self._mcp:
            self._saw_mcp()
        counts: Any = self.mcp_messages
        if counts is _NONE_YET:
            counts = self.mcp_messages = {}
        counts[transport] = counts.get(transport, 0) + 1
        route = self.route
        label = None
        is_request = message.method is not UNSET and message.id is not UNSET
        if message.method is not UNSET:
            label = method_label(message.method)
            if is_request and origin == "client" and self.observer.mode is _HTTP:
                self._exchange_requests.append((label, now))
        if session is None:
            session = self._session
            if session is None:
                session = self._session = f"conn:{self.conn_id}"
        transport_name = transport_label(transport)
        route.stats.message(session, self.client, transport_name, now, label if is_request else None)
        if is_request and trace is None and route.request_log is not None:
            trace = _meta_trace(message)  # W3C trace context in params._meta (no headers on a WebSocket)
        outcomes = route.tracker.message(origin, message, now, session, transport_name, size, trace)
        if outcomes:
            quality = self.quality
            for outcome in outcomes:
                if outcome.duration_s is not None and outcome.status != "cancelled":
                    quality.latency(outcome.duration_s, "mcp")
                quality.outcome(outcome.status == "ok")
            route.outcomes(outcomes, now)
        if route.taps:
            self._tap(origin, message, session, transport_name, size, label, outcomes)

    def _tap(self, origin: str, message: Envelope, session: str, transport: str, size: int, label: str | None,
             outcomes: list[McpOutcome]) -> None:
        """Somebody taps this route: hand them the message (never blocks)."""
        route = self.route
        answered = outcomes[0] if outcomes and message.method is UNSET else None
        record = tap_record(route.route, origin, message, at_unix=time.time(), transport=transport,
                            session=session, size=size, method=label, answered=answered,
                            max_bytes=route.tap_max_bytes)
        for subscriber in route.taps:
            subscriber.offer(record)


#: The event handlers of ``Observation._apply``, by event type.
_HANDLERS: dict[type, Callable[[Observation, Any, float], None]] = {
    ResponseStarted: Observation._on_response_started,
    ExchangeDone: Observation._on_exchange_done,
    SseSeen: Observation._on_sse,
    JsonRpcSeen: Observation._on_jsonrpc,
    SessionEndpoint: Observation._on_session_endpoint,
    Tunneled: lambda observation, event, now: None,  # (the observer hands these to its scanners)
    BodyTooLarge: Observation._on_body_too_large,
    HttpDetected: Observation._on_http,
    Opaque: Observation._on_opaque,
    WebSocketOpened: Observation._on_websocket_opened,
    FramesCounted: Observation._on_frames,
    NotificationSeen: Observation._on_notification,
    PingAnswered: Observation._on_ping_answered,
    KeepaliveAnswered: Observation._on_keepalive_answered,
    WebSocketClosing: Observation._on_closing,
}
#: Status labels of the usual codes (str() of the others).
_STATUS_LABELS = {code: str(code) for code in (0, 101, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405,
                                                406, 409, 413, 429, 500, 502, 503, 504)}


def _meta_trace(message: Envelope) -> str | None:
    """The trace id of ``params._meta.traceparent``, if the request carries one."""
    meta = message.param("_meta")
    if isinstance(meta, dict):
        value = meta.get("traceparent")
        if isinstance(value, str):
            return trace_id(value.encode("latin-1", "replace"))
    return None
