"""What one connection's observation means: metrics, quality, the tap, the request log.

``observe/connection.py`` (sans-io) reads the bytes and says what happened;
this module is the sink that turns its events into the operator's figures,
and the policy around it.

Rules this module keeps:

* The pump calls ``ObservedDirection.feed`` with each chunk right after
  handing it to the kernel (before, only while the WebSocket keepalive may
  rewrite it); False means no more bytes of that direction are wanted (the
  pump then stops calling and may splice).  In a worker the chunk is queued
  and observed with the worker's batch (observequeue.py: same order, the
  time it was forwarded); built alone (tests), it is observed at once.
  Observing never raises: an observer
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

import os
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

import trio

from ..observe.budget import InspectionMemoryExhausted
from ..observe.connection import PEER_FAULTS, ConnectionObserver, Mode
from ..observe.events import (
    BodyTooLarge,
    ExchangeDone,
    FramesCounted,
    HttpDetected,
    JsonRpcSeen,
    KeepaliveAnswered,
    NotificationSeen,
    Opaque,
    PingAnswered,
    ResponseStarted,
    SessionEndpoint,
    SseSeen,
    Tunneled,
    WebSocketClosing,
    WebSocketOpened,
)
from ..observe.quality import Quality
from ..redact import redact_text
from .failopen import bug, out_of_memory, peer_fault, shed
from .mcprecords import McpRecords
from .mcpstreams import StreamSlot, stream_end
from .observequeue import ObservedDirection
from .routeobservation import RouteObservation
from .trafficfacts import TrafficFacts

__all__ = ["STRICT", "Mode", "Observation", "ObservedDirection", "RouteObservation"]

#: Set in the test suite's environment (MCP_SIDECAR_STRICT=1): observer bugs
#: surface as failures instead of being counted.
STRICT = os.environ.get("MCP_SIDECAR_STRICT") == "1"


#: Modes tested by identity on the hot path.
_HTTP, _WEBSOCKET, _SNIFF = Mode.HTTP, Mode.WEBSOCKET, Mode.SNIFF


class Observation:
    """One connection's observation: its ``ConnectionObserver`` and what the
    events mean for this connection (its records for /api/connections, its
    quality, its MCP sessions); the pump's callbacks.

    Slotted, and what only HTTP traffic needs (``traffic``, trafficfacts.py)
    is created when the connection turns out to carry it: an idle connection
    holds only what it must.
    """

    __slots__ = (
        "__weakref__",
        "_end",
        "_long",
        "_stream",
        "client",
        "client_direction",
        "clock",
        "close_frame",
        "conn_id",
        "observer",
        "on_event_stream",
        "on_websocket",
        "protocol",
        "quality",
        "queue",
        "records",
        "route",
        "traffic",
        "upstream_direction",
    )

    def __init__(
        self,
        route: RouteObservation,
        conn_id: int,
        quality: Quality,
        mode: str,
        clock: Callable[[], float] = trio.current_time,
        *,
        client: str = "",
        keepalive: bool = False,
    ) -> None:
        self.route = route
        self.conn_id = conn_id
        #: The client's address (host:port), for the sessions it carries.
        self.client = client
        #: The connection's quality record: fed with the latencies and outcomes seen.
        self.quality = quality
        #: What the connection carries, as far as observation has seen: tcp, http, sse, websocket.
        self.protocol = "tcp"
        self.clock = clock
        #: The worker's batch of chunks to observe (None: each chunk at once).
        self.queue = route.queue
        #: The protocol machine (observe/connection.py): reads the bytes.
        self.observer = ConnectionObserver(mode, route.memory, keepalive=keepalive)
        #: What its MCP messages mean (mcprecords.py).
        self.records = McpRecords(route, conn_id, client, quality)
        #: Called once a 101 switched the connection to WebSocket (connection.py
        #: starts the keepalive then).
        self.on_websocket: Callable[[], None] | None = None
        #: Called when an event-stream response begins (connection.py starts the SSE keepalive).
        self.on_event_stream: Callable[[], None] | None = None
        #: Told the route (``RouteObservation.stream_opened``) that the connection
        #: is long-lived (an event stream, a WebSocket, opaque TCP): reconnects
        #: are counted then, not for each short HTTP request (state.py).
        self._long = False
        #: Facts for /api/connections.
        self.traffic: TrafficFacts | None = None  # (once HTTP: _begin_http)
        self.close_frame: dict[str, Any] | None = None
        #: The long-lived MCP stream this connection holds open (mcpstreams.py).
        self._stream = StreamSlot(route)
        #: How the connection ended, while close() applies it: (end, the side that closed first).
        self._end: tuple[str | None, str | None] = (None, None)
        self.client_direction = ObservedDirection(self, "client", keepalive)
        self.upstream_direction = ObservedDirection(self, "upstream", keepalive)
        if self.observer.mode is not Mode.TCP and not route.budget.admit(perf_counter()):
            shed(self.observer, self.route, self.conn_id)
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
        self.traffic = TrafficFacts()

    @property
    def mcp(self) -> bool:
        """The connection carried MCP JSON-RPC."""
        return self.records.seen

    @property
    def mcp_messages(self) -> Mapping[str, int]:
        return self.records.messages

    @property
    def open_stream(self) -> str | None:
        """The kind of long-lived MCP stream open on this connection, if any."""
        return self._stream.kind

    def close(self, end: str | None = None, first_eof: str | None = None) -> None:
        """The connection ended (``end``: forward/state.End's value; ``first_eof``:
        the side that closed first): give back every buffer and the route's
        gauges, and drop the references a closed connection must not keep alive."""
        if self.queue is not None:
            self.queue.drain()  # its last chunks first
        observer = self.observer
        now = self.clock()
        self._end = (end, first_eof)
        try:  # exchanges still under way end "aborted" (an event stream the client closed)
            self._apply(observer.abort(now), now)
        except Exception as exc:
            if STRICT:
                raise
            bug(self.observer, self.route, self.conn_id, exc)
        self._stream.end(stream_end(end, first_eof), now)  # (if the observer gave up before its end)
        self.records.close()
        legacy_session = observer.http.stream_session if observer.http is not None else None
        if legacy_session is not None:  # the legacy stream that announced it
            self.route.sink.end_session(legacy_session)
        observer.stop(Mode.CLOSED)
        observer.release("client", b"")
        observer.release("upstream", b"")
        if self.traffic is not None:
            self.traffic.forget()
        self.on_websocket = self.on_event_stream = None
        # A closed connection's directions point nowhere (no cycle keeps it alive); never fed again.
        closed: Any = None
        self.client_direction.observation = self.upstream_direction.observation = closed

    def facts(self, now: float) -> dict[str, Any]:
        """What /api/connections shows of the connection's observed traffic."""
        observer = self.observer
        facts: dict[str, Any] = {"mode": observer.mode, "mcp": self.mcp, "mcp_messages": dict(self.mcp_messages)}
        if self.traffic is not None:
            facts.update(self.traffic.render(now, observer.mode is Mode.HTTP))
        if observer.ws is not None:
            facts["websocket"] = {
                "close": self.close_frame,
                "keepalive_outstanding": [s for s in ("client", "upstream") if observer.outstanding(s) is not None],
            }
        return facts

    # -- fed by the pump (through ObservedDirection) ------------------------------------------

    def observe(self, side: str, data: Any, at: float | None) -> bool | bytes:
        """Observe a chunk of ``side`` forwarded at ``at`` (None: now)."""
        observer = self.observer
        mode = observer.mode
        if mode is not _HTTP and mode is not _WEBSOCKET and mode is not _SNIFF:
            return self._release(side, data)  # no more observation (the other direction may have given up)
        if not data:  # EOF: what it completes, then release anything withheld
            self._eof(side, at)
            return observer.release(side, b"") if observer.holding(side) else True
        started = perf_counter()
        now = self.clock() if at is None else at
        result: bool | bytes = True
        try:
            if mode is _HTTP:  # the usual step, inlined
                http = observer.http
                assert http is not None
                events: Any = http.feed_client(data, now) if side == "client" else observer.upstream(data, now)
            elif mode is _WEBSOCKET and observer.rewriting:
                result, events = observer.rewrite(side, data, now)
            else:
                events = observer.feed(side, data, now)
            if events:
                self._apply(events, now)
        except InspectionMemoryExhausted:
            out_of_memory(self.observer, self.route, self.conn_id)
            return self._release(side, data, result)
        except PEER_FAULTS as exc:
            peer_fault(self.observer, self.route, self.conn_id, exc)
            return self._release(side, data, result)
        except Exception as exc:  # a bug of ours, not the peer's
            if STRICT:
                raise
            bug(self.observer, self.route, self.conn_id, exc)
            return self._release(side, data, result)
        if not observer.observing:
            # Decided opaque (or the upstream spoke first): no more chunks, so
            # the pump runs exactly as with protocol "tcp", splice included.
            return False if result is True else result
        ended = perf_counter()
        route = self.route
        route.observe_s += ended - started
        if not route.budget.spend(ended - started, ended) and result is True and not observer.rewriting:
            shed(self.observer, self.route, self.conn_id)
            return False
        return result

    def _eof(self, side: str, at: float | None) -> None:
        """``side`` closed its direction: what that completes (a response
        whose body ran until the upstream's close)."""
        now = self.clock() if at is None else at
        try:
            events = self.observer.eof(side, now)
            if events:
                self._apply(events, now)
        except PEER_FAULTS as exc:
            peer_fault(self.observer, self.route, self.conn_id, exc)
        except Exception as exc:  # a bug of ours, not the peer's
            if STRICT:
                raise
            bug(self.observer, self.route, self.conn_id, exc)

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

    # -- the proxy's own keepalive (connection.py sends, the observer builds and matches) ------

    def settle(self) -> None:
        """Observe every chunk already forwarded (the worker's queue) now."""
        if self.queue is not None:
            self.queue.drain()

    def sse_keepalive(self) -> bytes | None:
        """A comment line for the client's event stream now, if one may go
        there (ConnectionObserver.sse_keepalive), after every chunk already
        forwarded was observed."""
        self.settle()
        return self.observer.sse_keepalive()

    def keepalive_frame(self, side: str, now: float) -> bytes | None:
        """A ping frame to write to ``side`` now (see ConnectionObserver.keepalive_ping),
        built after every chunk already forwarded was observed."""
        self.settle()
        return self.observer.keepalive_ping(side, now)

    # -- events -----------------------------------------------------------------------------

    def _apply(self, events: Any, now: float) -> None:
        handlers = _HANDLERS
        for event in events:
            handlers[type(event)](self, event, now)

    def _on_response_started(self, event: ResponseStarted, now: float) -> None:
        ex = event.exchange
        self.records.first_byte(now)  # MCP time to first response byte
        if ex.content_type == "text/event-stream":
            traffic: Any = self.traffic  # (a record once HTTP: _begin_http)
            traffic.stream_began(now)  # (bursts: the silence before the first events counts from here)
            if self.on_event_stream is not None:
                self.on_event_stream()
        kind = ex.stream
        if kind is not None:  # a long-lived event stream: a gauge, not a latency
            self._stream.open(kind, ex, now)
            self.traffic.sse_started = now  # type: ignore[union-attr]  # (a record once HTTP: _begin_http)
            self._long_lived()
            if kind == "listen":  # the request is answered: the stream is its answer
                self.records.stream_answered(ex, now)

    def _on_exchange_done(self, event: ExchangeDone, now: float) -> None:
        ex = event.exchange
        route = self.route
        self._stream.exchange_done(ex, stream_end(*self._end), now)
        if ex.aborted:  # counted apart: not a response, not an error of the upstream
            self.records.exchange_cut(ex, self._end)
            route.child(route.metrics.http_duration, "aborted").observe((ex.ended or now) - ex.started)
            return
        route.child(route.metrics.http_duration, "complete").observe((ex.ended or now) - ex.started)
        if ex.method == "DELETE" and ex.session is not None:  # streamable HTTP: the client ended its session
            route.sink.end_session(ex.session)
        traffic: Any = self.traffic  # (a record once HTTP: _begin_http)
        traffic.exchange_done(ex)  # rendered when asked (facts)
        status = ex.status or 0
        self.records.exchange_done(ex, status, now)
        child, metrics = route.child, route.metrics
        child(metrics.http_requests, ex.method, _STATUS_LABELS.get(status) or str(status)).inc()
        if ex.headers_at is not None:
            first_byte = ex.headers_at - ex.started
            child(metrics.http_response).observe(first_byte)
            if status != 101 and ex.content_type != "text/event-stream":
                self.quality.latency(first_byte, "http")
        self.quality.outcome(status < 500)

    def _on_sse(self, event: SseSeen, now: float) -> None:
        traffic: Any = self.traffic  # (a record once HTTP: _begin_http)
        if traffic.event(event.at, event.keepalive):
            self.route.sse_burst()
        if not event.keepalive:
            self.route.child(self.route.metrics.sse_events).inc()
        self.protocol = "sse"

    def _on_jsonrpc(self, event: JsonRpcSeen, now: float) -> None:
        self.records.message(
            event.origin,
            event.message,
            event.at,
            event.session,
            event.transport,
            event.size,
            event.trace,
            self.observer.mode is _HTTP,
            event.exchange,
            event.began,
        )

    def _on_body_too_large(self, event: BodyTooLarge, now: float) -> None:
        self.route.bodies_too_large += 1

    def _on_session_endpoint(self, event: SessionEndpoint, now: float) -> None:
        self.records.saw()
        self._stream.announced_endpoint()

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
        self.records.notification(event.side, event.payload, event.progress, now)

    def _on_ping_answered(self, event: PingAnswered, now: float) -> None:
        self.route.child(self.route.metrics.ws_ping_rtt).observe(event.rtt_s)
        self.quality.latency(event.rtt_s, "ws_ping")

    def _on_keepalive_answered(self, event: KeepaliveAnswered, now: float) -> None:
        self.route.child(self.route.metrics.ws_keepalive_rtt, event.side).observe(event.rtt_s)
        self.quality.latency(event.rtt_s, "ws_ping")

    def _on_closing(self, event: WebSocketClosing, now: float) -> None:
        if self.close_frame is None:
            self.close_frame = {
                "code": event.code,
                "reason": redact_text((event.reason or "")[:123]),
                "from": event.side,
            }


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
_STATUS_LABELS = {
    code: str(code)
    for code in (
        0,
        101,
        200,
        201,
        202,
        204,
        301,
        302,
        304,
        400,
        401,
        403,
        404,
        405,
        406,
        409,
        413,
        429,
        500,
        502,
        503,
        504,
    )
}
