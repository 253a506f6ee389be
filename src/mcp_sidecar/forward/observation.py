"""Wiring the sans-io observers (observe/) to connections and metrics.

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
* ``protocol = "auto"`` decides on the first client bytes: an HTTP/1.x
  request line means HTTP observation, anything else (or the upstream
  speaking first) is opaque TCP.  ``"tcp"`` never observes.
* Everything here runs per chunk of observed connections only; opaque TCP
  pays one ``is not None`` test per chunk.
* Each observed chunk's cost is measured and charged to the worker's
  ``ObservationBudget`` (budget.py).  While the worker is saturated and the
  budget is spent, the connection is shed: mode ``shed``, counted in
  ``mcp_sidecar_observer_shed_total{route}``, forwarded opaque from then on
  (never while the keepalive may still rewrite a chunk); new connections are
  shed at birth.  Whatever stops observation also stops the keepalive.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from time import perf_counter
from typing import Any, Callable

import trio

from ..errors import ObserverError
from ..logs import log
from ..observe.budget import UNBOUNDED, InspectionMemoryExhausted, MemoryBudget, ObservationBudget
from ..observe.events import (BodyTooLarge, ExchangeDone, Frame, HttpEvent, JsonRpcSeen, McpOutcome, ResponseStarted, SessionEndpoint,
                              SseSeen, Tunneled, Upgraded)
from ..observe.http import HttpObserver, jsonrpc_messages, trace_id
from ..observe.jsonrpc import UNSET, Envelope
from ..observe.mcp import McpTracker, method_label
from ..observe.mcpstats import McpStats
from ..observe.quality import Quality
from ..observe.requestlog import RequestLogPolicy, request_line
from ..observe.tap import DEFAULT_MAX_BYTES, tap_record
from ..observe.websocket import FrameScanner
from ..redact import redact_text
from .metrics import Metrics

logger = logging.getLogger(__name__)

_REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|CONNECT|TRACE) ")
_SNIFF_BYTES = 8
MAX_OUTSTANDING_PINGS = 16
#: The proxy's keepalive pings carry 32 bytes: "mcp-sidecar:" + 20 random hex.
KEEPALIVE_PAYLOAD_LEN = 32


#: What a peer's bytes can make an observer raise: its own protocol errors,
#: malformed values (JSON, UTF-8) and JSON nested past the recursion limit.
#: Anything else is a bug of ours: raised under tests (``STRICT``), counted
#: and logged with a traceback in production.
PEER_FAULTS = (ObserverError, ValueError, UnicodeDecodeError, RecursionError)
#: Set in the test suite's environment (MCP_SIDECAR_STRICT=1): observer bugs
#: surface as failures instead of being counted.
STRICT = os.environ.get("MCP_SIDECAR_STRICT") == "1"
#: Bug kinds already logged with a traceback (once each per process).
_BUGS_LOGGED: set[str] = set()


class Mode(StrEnum):
    """What observation does with a connection now."""

    SNIFF = "sniff"  # protocol "auto": waiting for the client's first bytes
    HTTP = "http"
    WEBSOCKET = "websocket"  # after a 101
    TCP = "tcp"  # opaque, by choice or because the bytes are not HTTP
    FAILED = "failed"  # gave up: the peer's bytes broke a parser, or the inspection memory ran out
    SHED = "shed"  # over the CPU budget
    CLOSED = "closed"  # the connection ended


#: Shared read-only placeholders until a connection needs its own (see Observation).
_NONE_YET: Mapping[str, int] = MappingProxyType({})
_NO_HTTP_STATS: Mapping[str, Any] = MappingProxyType({"exchanges": 0, "last": None})
_NO_SSE_STATS: Mapping[str, Any] = MappingProxyType({"events": 0, "keepalives": 0, "max_gap_s": 0.0, "started": None,
                                                     "last_at": None})
_NO_REQUESTS: list[tuple[str, float]] = []  # never appended to: HTTP connections get their own
_NO_KEEPALIVE: Mapping[str, tuple[bytes, float] | None] = MappingProxyType({"client": None, "upstream": None})
_NOTHING_HELD: Mapping[str, bytes] = MappingProxyType({"client": b"", "upstream": b""})
_NO_PINGS: Mapping[str, dict[bytes, float]] = MappingProxyType({"client": MappingProxyType({}),  # type: ignore[dict-item]
                                                               "upstream": MappingProxyType({})})

#: Modes in which chunks are still observed (tested by identity on the hot
#: path: ``in`` on a set of enum members calls Enum.__hash__ in Python).
_HTTP, _WEBSOCKET, _SNIFF = Mode.HTTP, Mode.WEBSOCKET, Mode.SNIFF


class ObservedDirection:
    """What the pump holds for one direction: ``feed`` and ``rewriting``."""

    __slots__ = ("observation", "side")

    def __init__(self, observation: "Observation", side: str) -> None:
        self.observation = observation
        self.side = side

    @property
    def rewriting(self) -> bool:
        observation = self.observation
        mode = observation.mode
        if mode is _HTTP or mode is _SNIFF:  # only a WebSocket's keepalive rewrites or holds bytes
            return False
        return observation.rewriting

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
    """One connection's observers; the pump's callbacks.

    Slotted, and what only HTTP or WebSocket traffic needs is created when
    the connection turns out to carry it: until then those attributes are
    shared read-only placeholders (a write to one is a bug and raises).  An
    idle connection holds only what it must.
    """

    __slots__ = ("route", "conn_id", "client", "quality", "protocol", "clock", "mode", "_sniffed", "http", "ws",
                 "_pings", "_mcp", "mcp_messages", "_session", "on_websocket", "_long", "closing", "http_stats",
                 "sse_stats", "close_frame", "_open_stream", "_exchange_requests", "keepalive", "_held",
                 "client_direction", "upstream_direction", "__weakref__")

    def __init__(self, route: RouteObservation, conn_id: int, quality: Quality, mode: str,
                 clock: Callable[[], float] = trio.current_time, *, client: str = "") -> None:
        self.route = route
        self.conn_id = conn_id
        #: The client's address (host:port), for the sessions it carries.
        self.client = client
        #: The connection's quality record: fed with the latencies and outcomes seen.
        self.quality = quality
        #: What the connection carries, as far as observation has seen: tcp, http, sse, websocket.
        self.protocol = "tcp"
        self.clock = clock
        self.mode = Mode.SNIFF if mode == "auto" else Mode(mode)
        self._sniffed = b""
        self.http: HttpObserver | None = None
        self.ws: dict[str, FrameScanner] | None = None
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
        #: A close frame passed: no more keepalive pings (RFC 6455 5.5.1).
        self.closing = False
        #: Facts for /api/connections.
        self.http_stats: Mapping[str, Any] = _NO_HTTP_STATS
        self.sse_stats: Mapping[str, Any] = _NO_SSE_STATS
        self.close_frame: dict[str, Any] | None = None
        #: A GET answered with an event stream is open (a long stream: a gauge, not a latency).
        self._open_stream = False
        self._exchange_requests: list[tuple[str, float]] = _NO_REQUESTS
        #: The proxy's own keepalive ping outstanding towards each side: (payload, sent at).
        self.keepalive: Mapping[str, tuple[bytes, float] | None] = _NO_KEEPALIVE
        #: Bytes withheld from forwarding per source side (a pong header whose
        #: payload decides whether it answers our keepalive), at most 14 + 32.
        self._held: Mapping[str, bytearray | bytes] = _NOTHING_HELD
        #: Pings seen per side, by payload, awaiting their pong.
        self._pings: Mapping[str, dict[bytes, float]] = _NO_PINGS
        self.client_direction = ObservedDirection(self, "client")
        self.upstream_direction = ObservedDirection(self, "upstream")
        if self.mode is not Mode.TCP and not route.budget.admit(perf_counter()):
            self._shed()
        elif self.mode is Mode.HTTP:
            self._begin_http()

    def _begin_http(self) -> None:
        """The connection carries HTTP: its observer and records."""
        self.mode = Mode.HTTP
        self.protocol = "http"
        self.http = self._http_observer()
        self.http_stats = {"exchanges": 0, "last": None}
        self.sse_stats = {"events": 0, "keepalives": 0, "max_gap_s": 0.0, "started": None, "last_at": None}
        self.mcp_messages = {}
        self._exchange_requests = []

    def _http_observer(self) -> HttpObserver:
        return HttpObserver(self.route.memory.allowance())

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
        if self.http is not None and self.mode is _HTTP:
            try:  # exchanges still under way end "aborted" (an event stream the client closed)
                now = self.clock()
                self._apply(self.http.abort(now), now)
            except Exception as exc:  # noqa: BLE001 - closing must not fail
                if STRICT:
                    raise
                self._bug(exc)
        if self._mcp:
            self.route.mcp_connections -= 1
        if self._session is not None:  # a connection-scoped session ends with its connection
            self.route.stats.end_session(self._session)
        if self.http is not None and self.http.stream_session is not None:  # the legacy stream that announced it
            self.route.stats.end_session(self.http.stream_session)
        self._stream(False)
        if self.http is not None:
            self.http.close()
        for scanner in (self.ws or {}).values():
            scanner.close()
        self._held = _NOTHING_HELD
        self._sniffed = b""
        if self.http_stats is not _NO_HTTP_STATS:
            self.http_stats["last"] = None  # type: ignore[index]
        self.on_websocket = None
        self.client_direction.observation = self.upstream_direction.observation = None  # type: ignore[assignment]
        self.mode = Mode.CLOSED

    @property
    def rewriting(self) -> bool:
        """True while chunks may have to change before they are forwarded
        (a keepalive ping is outstanding, or bytes are held back)."""
        ka, held = self.keepalive, self._held
        return ka["client"] is not None or ka["upstream"] is not None or bool(held["client"] or held["upstream"])


    def facts(self, now: float) -> dict[str, Any]:
        """What /api/connections shows of the connection's observed traffic."""
        facts: dict[str, Any] = {"mode": self.mode, "mcp": self.mcp, "mcp_messages": dict(self.mcp_messages)}
        if self.http_stats["exchanges"] or self.mode is Mode.HTTP:
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
        if self.ws is not None:
            facts["websocket"] = {"close": self.close_frame,
                                  "keepalive_outstanding": [s for s, v in self.keepalive.items() if v]}
        return facts

    # -- fed by the pump (through ObservedDirection) ------------------------------------------

    def _feed(self, side: str, data: Any) -> bool | bytes:
        mode = self.mode
        if mode is not _HTTP and mode is not _WEBSOCKET and mode is not _SNIFF:
            return self._release(side, data)  # no more observation (the other direction may have given up)
        if not data:  # EOF: release anything withheld
            held = self._held[side]
            if not held:
                return True
            out = bytes(held)
            held.clear()  # type: ignore[union-attr]
            return out
        started = perf_counter()
        try:
            if mode is _HTTP:  # the usual step, inlined
                http = self.http
                assert http is not None
                now = self.clock()
                self._apply(http.feed_client(data, now) if side == "client" else http.feed_upstream(data, now), now)
                result: bool | bytes = True
            else:
                result = self._observe(side, data)
        except InspectionMemoryExhausted:
            self._out_of_memory()
            return self._release(side, data)
        except PEER_FAULTS as exc:
            self._fail(exc)
            return self._release(side, data)
        except Exception as exc:  # a bug of ours, not the peer's
            if STRICT:
                raise
            self._bug(exc)
            return self._release(side, data)
        ended = perf_counter()
        route = self.route
        route.observe_s += ended - started
        if not route.budget.spend(ended - started, ended) and result is True and not self.rewriting:
            self._shed()
            return False
        return result

    def _observe(self, side: str, data: Any) -> bool | bytes:
        mode = self.mode
        if mode is _SNIFF:
            if side == "client":
                self._sniff(data)
            else:  # a server that speaks first is not HTTP
                self.mode = Mode.TCP
                self._sniffed = b""
            if self.mode is Mode.TCP:
                self._long_lived()
            # Decided opaque (or the upstream spoke first): no more chunks, so
            # the pump runs exactly as with protocol "tcp", splice included.
            return self.mode is not Mode.TCP
        now = self.clock()
        if mode is _HTTP:
            assert self.http is not None
            events = self.http.feed_client(data, now) if side == "client" else self.http.feed_upstream(data, now)
            self._apply(events, now)
        elif mode is _WEBSOCKET:
            if self.keepalive[side] is not None or self._held[side]:
                return self._rewrite(side, data, now)
            self._frames(side, data, now)
        return True

    def _release(self, side: str, data: Any) -> bool | bytes:
        """No more observation: forward anything withheld, then this chunk."""
        held = self._held[side]
        if not held:
            return False
        out = bytes(held) + bytes(data)
        held.clear()
        return out

    def _sniff(self, data: Any) -> bool:
        """Decide the mode from the first client bytes; True once decided."""
        self._sniffed += bytes(data)
        head = self._sniffed[:_SNIFF_BYTES]
        if _REQUEST_LINE.match(head):
            self._begin_http()
            buffered, self._sniffed = self._sniffed, b""
            now = self.clock()
            assert self.http is not None
            self._apply(self.http.feed_client(buffered, now), now)
            return True
        if len(self._sniffed) >= _SNIFF_BYTES or not any(
                m.startswith(head) for m in (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ",
                                             b"OPTIONS ", b"CONNECT ", b"TRACE ")):
            self.mode = Mode.TCP
            self._sniffed = b""
            return True
        return False  # a prefix of a method: wait for more bytes

    def _long_lived(self) -> None:
        if not self._long:
            self._long = True
            hook = self.route.stream_opened
            if hook is not None:
                hook(self.conn_id)

    def _shed(self) -> None:
        """Over the CPU budget: this connection is forwarded opaque from now on."""
        protocol = self.mode
        self.mode = Mode.SHED
        self.route.shed += 1
        self.route.budget.shed += 1
        log(logger, logging.INFO, "observer.shed", route=self.route.route, conn=self.conn_id, protocol=protocol,
            budget=self.route.budget.share)

    def _out_of_memory(self) -> None:
        """The worker's inspection buffers are full: stop observing this
        connection (a local limit, counted apart from peer faults)."""
        protocol = self.mode
        self.mode = Mode.FAILED
        self.route.memory_exhausted += 1
        self._drop_observers()
        log(logger, logging.INFO, "observer.memory_exhausted", route=self.route.route, conn=self.conn_id,
            protocol=protocol, limit_bytes=self.route.memory.limit)

    def _drop_observers(self) -> None:
        if self.http is not None:
            self.http.close()
        for scanner in (self.ws or {}).values():
            scanner.close()

    def _bug(self, exc: Exception) -> None:
        """A defect in the observation code met this connection: fail open
        (the bytes keep flowing), count it apart from peer garbage, and log
        the first of each kind with its traceback."""
        protocol = self.mode
        self.mode = Mode.FAILED
        self.route.bugs += 1
        kind = type(exc).__name__
        if kind not in _BUGS_LOGGED:
            _BUGS_LOGGED.add(kind)
            logger.error("observer.bug", exc_info=exc, extra={"sidecar_fields": {
                "route": self.route.route, "conn": self.conn_id, "protocol": protocol, "error": kind}})
        try:
            self._drop_observers()
        except Exception:  # noqa: BLE001 - already failing open
            pass

    def _fail(self, exc: BaseException) -> None:
        protocol = self.mode
        self.mode = Mode.FAILED
        self._drop_observers()
        self.route.metrics.observer_errors.labels(self.route.route, protocol).inc()
        log(logger, logging.INFO, "observer.gave_up", route=self.route.route, conn=self.conn_id, protocol=protocol,
            error=str(exc)[:200])

    # -- events -----------------------------------------------------------------------------

    def _apply(self, events: list[HttpEvent], now: float) -> None:
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
            self.sse_stats["started"] = now
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
        stats["exchanges"] += 1
        stats["last"] = ex  # rendered when asked (facts)
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
        stats = self.sse_stats
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

    def _on_upgraded(self, event: Upgraded, now: float) -> None:
        if not event.websocket:  # a tunnel of another protocol: opaque from here on
            self.mode = Mode.TCP
            self.http = None
            return
        self.mode = Mode.WEBSOCKET
        self.protocol = "websocket"
        self._long_lived()
        self.keepalive = {"client": None, "upstream": None}
        self._held = {"client": bytearray(), "upstream": bytearray()}
        self._pings = {"client": {}, "upstream": {}}
        memory = self.route.memory
        self.ws = {"client": FrameScanner(memory=memory.allowance()),
                   "upstream": FrameScanner(memory=memory.allowance())}
        if self.on_websocket is not None:
            self.on_websocket()
            self.on_websocket = None
        if event.client_trailing:
            self._frames("client", event.client_trailing, now)
        if event.upstream_trailing:
            self._frames("upstream", event.upstream_trailing, now)

    def _jsonrpc(self, origin: str, message: Envelope, now: float, session: str | None, transport: str,
                 size: int = 0, trace: str | None = None) -> None:
        if not self._mcp:
            self._saw_mcp()
        counts = self.mcp_messages
        counts[transport] = counts.get(transport, 0) + 1
        route = self.route
        label = None
        is_request = message.method is not UNSET and message.id is not UNSET
        if message.method is not UNSET:
            label = method_label(message.method)
            if is_request and origin == "client" and self.mode is _HTTP:
                self._exchange_requests.append((label, now))
        if session is None:
            session = self._session
            if session is None:
                session = self._session = f"conn:{self.conn_id}"
        transport_label = _TRANSPORT_LABELS[transport]
        route.stats.message(session, self.client, transport_label, now, label if is_request else None)
        if is_request and trace is None and route.request_log is not None:
            trace = _meta_trace(message)  # W3C trace context in params._meta (no headers on a WebSocket)
        outcomes = route.tracker.message(origin, message, now, session, transport_label, size, trace)
        if outcomes:
            quality = self.quality
            for outcome in outcomes:
                if outcome.duration_s is not None and outcome.status != "cancelled":
                    quality.latency(outcome.duration_s, "mcp")
                quality.outcome(outcome.status == "ok")
            route.outcomes(outcomes, now)
        if route.taps:
            self._tap(origin, message, session, transport_label, size, label, outcomes)

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

    # -- the proxy's own keepalive (connection.py sends, this side matches) -----------------

    def keepalive_frame(self, side: str, now: float) -> bytes | None:
        """A ping frame to write to ``side`` now, or None if the stream towards it
        is not at a frame boundary (or a ping is still unanswered, or the
        scanners stopped: without them no boundary is known)."""
        if self.mode is not Mode.WEBSOCKET or self.ws is None or self.keepalive[side] is not None or self.closing:
            return None
        source = "upstream" if side == "client" else "client"  # frames towards side come from there
        if not self.ws[source].at_boundary or self._held[source]:
            return None
        payload = b"mcp-sidecar:" + os.urandom(10).hex().encode()
        self.keepalive[side] = (payload, now)
        if side == "client":  # we speak as the server: unmasked
            return bytes([0x89, len(payload)]) + payload
        key = os.urandom(4)  # we speak as the client: masked
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return bytes([0x89, 0x80 | len(payload)]) + key + masked

    def _rewrite(self, side: str, data: Any, now: float) -> bytes:
        """Forward ``data`` minus our keepalive's pongs; withhold a pong that
        may be ours until its payload has arrived."""
        assert self.ws is not None
        scanner = self.ws[side]
        held = self._held[side]
        base = scanner.position - len(held)
        combined = bytes(held) + bytes(data)
        drops = self._frames(side, data, now)
        hold_from = None
        current = scanner.current
        expecting = self.keepalive[side] is not None
        if expecting and current is not None and current.opcode == "pong" and current.length == KEEPALIVE_PAYLOAD_LEN:
            hold_from = current.start
        elif expecting and current is None and not scanner.at_boundary:
            hold_from = scanner.frame_start  # a header still incomplete: hold its few bytes
        out = bytearray()
        pos = base
        for start, end in drops:
            if start >= pos:
                out += combined[pos - base : start - base]
                pos = end
        stop = hold_from if hold_from is not None and hold_from >= pos else base + len(combined)
        out += combined[pos - base : stop - base]
        held.clear()
        held += combined[stop - base :]
        return bytes(out)

    def _frames(self, side: str, data: Any, now: float) -> list[tuple[int, int]]:
        """Scan, count and match frames; return the byte ranges of pongs that
        answer the proxy's keepalive (never forwarded)."""
        assert self.ws is not None
        drops: list[tuple[int, int]] = []
        # Counted per chunk, not per frame: a chunk often holds dozens of frames.
        counts: dict[str, list[int]] = {}
        for frame in self.ws[side].feed(data):
            opcode = frame.opcode
            count = counts.get(opcode)
            if count is None:
                count = counts[opcode] = [0, 0]
            payload = frame.payload
            if opcode == "text" or opcode == "continuation":
                count[0] += 1
                count[1] += frame.length
                if payload and (payload[:1] == b"{" or payload[:1] == b"["):
                    self._ws_message(side, payload, now)
            elif opcode == "binary":
                count[0] += 1
                count[1] += frame.length
            elif self._control_frame(side, frame, now):
                drops.append((frame.start, frame.end))
            else:
                count[0] += 1
                count[1] += frame.length
        if counts:
            children = self.route.ws_children
            for opcode, (frames, size) in counts.items():
                pair = children.get((side, opcode))
                if pair is None:
                    pair = self.route.ws_counters(side, opcode)
                pair[0].inc(frames)
                pair[1].inc(size)
        return drops

    def _ws_message(self, side: str, payload: bytes, now: float) -> None:
        """A complete text message that looks like JSON: MCP over WebSocket."""
        if payload[:1] == b"{" and b'"id"' not in payload and not self.route.taps:
            # A notification: no correlation needed, skip the JSON parse
            # (unless somebody taps: the tap shows it).
            if not self._mcp:
                self._saw_mcp()
            counts = self.mcp_messages
            counts["ws"] = counts.get("ws", 0) + 1  # type: ignore[index]
            if b'"notifications/progress"' in payload:
                self.route.tracker.progress += 1
            return
        for message in jsonrpc_messages(payload):
            self._jsonrpc(side, message, now, None, "ws", len(payload))

    def _control_frame(self, side: str, frame: Frame, now: float) -> bool:
        """Close, ping, pong: True if it is the pong of our own keepalive (dropped)."""
        opcode = frame.opcode
        payload = frame.payload
        child, metrics = self.route.child, self.route.metrics
        if opcode == "pong":
            ours = self.keepalive[side]
            if ours is not None and payload == ours[0]:
                self.keepalive[side] = None  # type: ignore[index]
                child(metrics.ws_keepalive_rtt, side).observe(now - ours[1])
                self.quality.latency(now - ours[1], "ws_ping")
                return True
            if payload is not None:
                sent = self._pings["upstream" if side == "client" else "client"].pop(payload, None)
                if sent is not None:
                    child(metrics.ws_ping_rtt).observe(now - sent)
                    self.quality.latency(now - sent, "ws_ping")
        elif opcode == "ping":
            if payload is not None:
                pings = self._pings[side]
                if len(pings) < MAX_OUTSTANDING_PINGS:
                    pings[payload] = now
        elif opcode == "close":
            self.closing = True
            if self.close_frame is None:
                self.close_frame = {"code": frame.close_code, "reason": redact_text((frame.close_reason or "")[:123]),
                                    "from": side}
        return False


#: The event handlers of ``Observation._apply``, by event type.
_HANDLERS: dict[type, Callable[[Observation, Any, float], None]] = {
    ResponseStarted: Observation._on_response_started,
    ExchangeDone: Observation._on_exchange_done,
    SseSeen: Observation._on_sse,
    JsonRpcSeen: Observation._on_jsonrpc,
    SessionEndpoint: Observation._on_session_endpoint,
    Upgraded: Observation._on_upgraded,
    Tunneled: lambda observation, event, now: None,  # the scanners read those bytes
    BodyTooLarge: Observation._on_body_too_large,
}
#: Status labels of the usual codes (str() of the others).
_STATUS_LABELS = {code: str(code) for code in (0, 101, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405,
                                                406, 409, 413, 429, 500, 502, 503, 504)}
#: How a message travelled (JsonRpcSeen.transport) -> the metrics' bounded transport label.
_TRANSPORT_LABELS = {"http": "http", "sse": "http", "legacy": "legacy-sse", "ws": "websocket",
                     "inspector-v2": "inspector-v2"}


def _meta_trace(message: Envelope) -> str | None:
    """The trace id of ``params._meta.traceparent``, if the request carries one."""
    meta = message.param("_meta")
    if isinstance(meta, dict):
        value = meta.get("traceparent")
        if isinstance(value, str):
            return trace_id(value.encode("latin-1", "replace"))
    return None
