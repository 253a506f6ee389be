"""What one connection's MCP messages mean: its sessions, its requests'
first response bytes, the tap, the correlation with answers.

Rules this module keeps:

* One per observed connection, created with it (observation.py); it holds
  nothing until the connection carries MCP (a shared read-only placeholder
  for the message counts).
* Requests and answers are correlated within their session when the
  protocol has one (``Mcp-Session-Id``, the legacy ``sessionId``), else
  within the connection (``conn:ID``): a WebSocket connection is a session,
  traffic without one (2026-07-28, stateless servers) is counted by client.
* Each request is labelled with its protocol version and its target
  (observe/mcpmeta.py); a request over streamable HTTP is checked against its
  revision's header rules in passing (``mcp_conformance_total``).
* The tap is offered a record only while somebody taps the route; a
  recording gets what the message's line is made of (shared by the route's
  recordings, built in the recording's batch: forward/tap.py) only while
  one records it.
* A request posted is timed to its response's first byte; at most
  ``MAX_AWAITING_FIRST_BYTE`` per connection are (a 1 MiB batch holds
  25,000 requests, 64 of them may be pipelined: the rest go untimed).
* Who was slow: an answer seen on the connection its request came by is
  split (observe/slowness.py) from this connection's legs -- their RTTs
  (read at most once a second), the pump's wait for the client since the
  previous answer, and the client's unacknowledged bytes (asked of the
  kernel only after a large answer or a wait).  Answers correlated by the
  supervisor (two connections in two workers) are not split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from ..net.tcpinfo import delivery_rate, read_tcp_info, unacked_bytes
from ..observe.connection import transport_label
from ..observe.events import Exchange, McpOutcome
from ..observe.jsonrpc import UNSET, Envelope, ParamFacts, decode, params_facts
from ..observe.mcp import method_label
from ..observe.mcphttp import meta_trace
from ..observe.mcpmeta import (
    TARGET_METHODS,
    UNKNOWN,
    Conformance,
    answer_conformance,
    header_text,
    request_conformance,
    request_version,
    target_name,
    version_label,
)
from ..observe.quality import Quality
from ..observe.slowness import SLOW_CLIENT_S, LatencySplit, split_latency
from ..observe.tap import shown_names, tap_record
from .drainwatch import WATCH_BYTES
from .mcpstreams import stream_end
from .otelexport import Tracer
from .routeobservation import RouteObservation, Waiting

_NONE_YET: Mapping[str, int] = MappingProxyType({})
#: Transports whose request and answer travel on two connections (correlated
#: by the supervisor when several workers share the route).
REMOTE_TRANSPORTS = frozenset({"legacy-sse", "inspector-v2"})
#: A connection's RTTs are read again after this long (seconds): "at that moment".
RTT_REFRESH_S = 1.0
#: Answers at least this large (bytes) have the client's queue read at their end.
LARGE_ANSWER_BYTES = 16 * 1024
#: Requests of one connection timed to their response's first byte at a time.
MAX_AWAITING_FIRST_BYTE = 256


class McpRecords:
    """One connection's MCP: whether it carried any, its messages by how they
    travelled, its own session key, and the requests awaiting a first byte."""

    __slots__ = (
        "awaiting_first_byte",
        "blocked_mark",
        "client",
        "conn_id",
        "legs",
        "messages",
        "quality",
        "route",
        "rtts",
        "rtts_at",
        "scope",
        "seen",
        "slow_answers",
    )

    def __init__(self, route: RouteObservation, conn_id: int, client: str, quality: Quality) -> None:
        self.route = route
        self.conn_id = conn_id
        self.client = client
        self.quality = quality
        #: The connection carried MCP JSON-RPC (counted in the route's gauge).
        self.seen = False
        #: JSON-RPC messages seen, by how they travelled: http (a body), sse (an event), ws (a frame).
        self.messages: Mapping[str, int] = _NONE_YET
        #: The correlation key of messages without a session: the connection's own.
        self.scope = f"conn:{conn_id}"
        #: Requests of the HTTP exchange under way (label, when): timed to the response's first byte.
        self.awaiting_first_byte: list[tuple[str, float]] = []
        #: The connection (its sockets and flows: state.Connection), for the
        #: latency split; None when built alone (tests of the sink).
        self.legs: Any = None
        #: The answer direction's backpressure already charged to an answer.
        self.blocked_mark = 0.0
        #: Both legs' RTT (client, upstream), read at most every RTT_REFRESH_S.
        self.rtts = (0.0, 0.0)
        self.rtts_at = -RTT_REFRESH_S
        #: Answers the client was slow to take (slowness.SLOW_CLIENT_S).
        self.slow_answers = 0

    def saw(self) -> None:
        if not self.seen:
            self.seen = True
            self.route.mcp_connections += 1

    def first_byte(self, now: float) -> None:
        """The response to the requests under way started."""
        if self.awaiting_first_byte:
            child, metric = self.route.child, self.route.metrics.mcp_first_byte
            for label, at in self.awaiting_first_byte:
                child(metric, label).observe(now - at)
            self.awaiting_first_byte.clear()

    def close(self) -> None:
        self.legs = None  # (the connection refers to this record: no cycle outlives it)
        if self.seen:
            self.route.mcp_connections -= 1
        # A WebSocket's session is its connection: it ends with it.
        self.route.sink.end_session(self.scope)

    def notification(self, side: str, payload: bytes, progress: bool, now: float) -> None:
        """A WebSocket notification the observer did not decode (nothing to correlate)."""
        route = self.route
        tracer = route.tracer
        if route.taps or route.recorders or (tracer is not None and (progress or tracer.config.notifications)):
            # Somebody taps or records, or it is a span or its request's span event: it is decoded after all.
            for message in decode(payload):
                self.message(side, message, now, None, "ws", len(payload), None, False)
            return
        self.saw()
        counts: Any = self.messages
        if counts is _NONE_YET:
            counts = self.messages = {}
        counts["ws"] = counts.get("ws", 0) + 1
        if progress:
            route.tracker.progress += 1

    def message(
        self,
        origin: str,
        message: Envelope,
        now: float,
        session: str | None,
        transport: str,
        size: int,
        trace: str | None,
        http: bool,
        exchange: Exchange | None = None,
        began: float | None = None,
    ) -> None:
        """A JSON-RPC message: counted, labelled, correlated (requests with
        their answers: outcomes, latencies, the request log), shown to the tap."""
        self.saw()
        counts: Any = self.messages
        if counts is _NONE_YET:
            counts = self.messages = {}
        counts[transport] = counts.get(transport, 0) + 1
        route = self.route
        scope = session if session is not None else self.scope
        label = None
        version = None
        target = ""
        is_request = message.method is not UNSET and message.id is not UNSET
        if message.method is not UNSET:
            label = method_label(message.method)
            if is_request:
                facts = params_facts(message)
                version, target = self._labels(label, facts, exchange, scope)
                if trace is None and facts.meta is not None:
                    trace = meta_trace(facts.meta)
                if origin == "client" and http and len(self.awaiting_first_byte) < MAX_AWAITING_FIRST_BYTE:
                    self.awaiting_first_byte.append((label, now))
        transport_name = transport_label(transport)
        relay = route.relay if route.correlate_remotely and transport_name in REMOTE_TRANSPORTS else None
        remote = relay is not None
        if route.tracer is not None and label is not None:
            if not is_request:
                self._trace_notification(route.tracer, label, origin, message, scope, transport, session, trace, remote)
            elif not remote:  # (the supervisor makes the spans of what it correlates)
                self._trace_progress_token(route.tracer, facts, message.id, scope)
        if session is not None or transport == "ws":
            route.sink.message(scope, self.client, transport_name, now, label if is_request else None, version)
        else:
            route.sink.client(self.client, transport_name, now, label if is_request else None, version)
        if relay is not None:
            # Its two connections may be in two workers: the supervisor correlates it.
            relay.correlate(origin, message, now, scope, transport_name, size, trace, version or UNKNOWN, target)
            outcomes = []
        else:
            outcomes = route.tracker.message(
                origin, message, now, scope, transport_name, size, trace, version or UNKNOWN, target
            )
        if outcomes:
            self._outcomes(outcomes, now, exchange, scope, began, size)
        if route.taps or route.recorders:
            # What the tap and a recording show of it (observe/tap.py's ``tap_record`` arguments).
            shown: dict[str, Any] = {
                "at_unix": time.time(),
                "transport": transport_name,
                "session": scope if session is not None or transport == "ws" else None,
                "size": size,
                "method": label,
                "answered": outcomes[0] if outcomes and message.method is UNSET else None,
                "protocol_version": version,
                "target": target,
                "client": self.client,
                "exchange": exchange,
            }
            if route.taps:
                self._tap(origin, message, shown)
            if route.recorders:
                self._record(origin, message, shown)

    def _labels(self, label: str, facts: ParamFacts, exchange: Exchange | None, scope: str) -> tuple[str, str]:
        """A request's version and target labels; its conformance, on streamable HTTP."""
        route = self.route
        session_version = route.session_version(scope)
        http = exchange if exchange is not None and exchange.transport == "http" else None
        version = request_version(http.protocol_version if http is not None else None, facts, session_version, label)
        name, _ = target_name(label, facts, http.mcp_name if http is not None else None)
        target = (
            ""
            if name is None or (label == "resources/read" and not route.target_resources)
            else route.targets.label(name)
        )
        if http is not None:
            for kind in request_conformance(
                label,
                facts,
                method_header=http.mcp_method,
                name_header=http.mcp_name,
                version_header=http.protocol_version,
                session_version=session_version,
            ):
                route.nonconforming(kind)
        return version, target

    def _outcomes(
        self,
        outcomes: list[McpOutcome],
        now: float,
        exchange: Exchange | None,
        scope: str,
        began: float | None = None,
        size: int = 0,
    ) -> None:
        route = self.route
        quality = self.quality
        reported = []
        for outcome in outcomes:
            if outcome.duration_s is not None and outcome.status != "cancelled":
                quality.latency(outcome.duration_s, "mcp")
            quality.outcome(outcome.status == "ok")
            if outcome.negotiated is not None:  # an initialize answered: the session's version from now on
                key = exchange.session if exchange is not None and exchange.session is not None else scope
                route.negotiated(key, outcome.negotiated)
            if self.legs is not None:
                outcome.upstream = self.legs.upstream
            if (
                self.legs is not None
                and outcome.origin == "client"
                and outcome.duration_s is not None
                and outcome.status != "cancelled"
                and self._split(outcome, outcome.duration_s, now, began, size)
            ):
                continue  # reported once the client took it (drainwatch.py)
            reported.append(outcome)
        if reported:
            route.outcomes(reported, now)

    def _split(self, outcome: McpOutcome, duration: float, now: float, began: float | None, size: int) -> bool:
        """Who was slow on this answer (observe/slowness.py), from this connection's
        legs: the client's backpressure since the last answer, what it has yet
        to take (asked of the kernel only when it may matter: a large answer,
        or one the pump had to wait for), both legs' RTT.  True when the
        answer is reported later, once the client took it (drainwatch.py)."""
        conn = self.legs
        flow = conn.u2c
        blocked = flow.blocked_s - self.blocked_mark
        self.blocked_mark = flow.blocked_s
        if now - self.rtts_at >= RTT_REFRESH_S:
            self.rtts_at = now
            client_info, upstream_info = read_tcp_info(conn.csock), read_tcp_info(conn.usock)
            self.rtts = (
                client_info.rtt_s if client_info is not None else 0.0,
                upstream_info.rtt_s if upstream_info is not None else 0.0,
            )
        first_byte = None if began is None else began - (now - duration)
        queued = unacked_bytes(conn.csock) if blocked > 0 or size >= LARGE_ANSWER_BYTES else 0
        route = self.route
        if queued >= WATCH_BYTES and route.drains is not None:

            def taken(seconds: float, at: float) -> None:
                self._report(
                    outcome,
                    split_latency(
                        duration, first_byte, blocked_s=blocked, rtt_client_s=self.rtts[0], rtt_upstream_s=self.rtts[1]
                    ),
                    seconds,
                    at,
                )

            if route.drains.watch(conn.csock, queued, now, taken):
                return True
        parts = split_latency(
            duration,
            first_byte,
            blocked_s=blocked,
            rtt_client_s=self.rtts[0],
            rtt_upstream_s=self.rtts[1],
            queued_bytes=queued,
            delivery_rate=delivery_rate(conn.csock) if queued else 0.0,
        )
        self._judge(outcome, parts)
        return False

    def _report(self, outcome: McpOutcome, parts: LatencySplit, taken_s: float, now: float) -> None:
        """A watched answer was taken ``taken_s`` after its last byte: reported now."""
        self._judge(outcome, replace(parts, client=parts.client + taken_s))
        self.route.outcomes([outcome], now)

    def _judge(self, outcome: McpOutcome, parts: LatencySplit) -> None:
        outcome.parts = parts.as_tuple()
        if parts.client >= SLOW_CLIENT_S:
            self.slow_answers += 1
            self.route.slow_answer()

    def exchange_done(self, exchange: Exchange, status: int, now: float) -> None:
        """An HTTP exchange completed: a notification's answer checked (202),
        a request known only by its headers counted."""
        if exchange.transport == "http" and answer_conformance(exchange.status, exchange.notifications_only):
            self.route.nonconforming(Conformance.NOTIFICATION_NOT_202)
        if exchange.mcp_method and not exchange.jsonrpc_requests and exchange.method == "POST":
            # 2026-07-28: the Mcp-Method header labels a request whose body was not parsed.
            self.route.outcomes([header_outcome(self.route, exchange, status, now)], now)

    def exchange_cut(self, exchange: Exchange, connection_end: tuple[str | None, str | None]) -> None:
        """An HTTP exchange cut short (``connection_end``: the connection's end
        and the side that closed first): while tracing, the requests it still
        owed an answer get a span event."""
        tracer = self.route.tracer
        if tracer is None or not exchange.request_ids:
            return
        end, first_eof = connection_end
        abandoned = end == "client_reset" or (end in ("closed", None) and first_eof == "client")
        scope = exchange.session if exchange.session is not None else self.scope
        for request_id in exchange.request_ids:
            if self.route.tracker.awaits(scope, request_id):
                tracer.stream_ended(self.route.route, scope, request_id, stream_end(end, first_eof), abandoned)

    def _trace_progress_token(self, tracer: Tracer, facts: ParamFacts, request_id: Any, scope: str) -> None:
        """A request, while tracing: the token its progress notifications will name."""
        meta = facts.meta
        if meta is not None and meta.progressToken is not None:
            tracer.request(self.route.route, scope, request_id, meta.progressToken)

    def _trace_notification(
        self,
        tracer: Tracer,
        label: str,
        origin: str,
        message: Envelope,
        scope: str,
        transport: str,
        session: str | None,
        trace: str | None,
        remote: bool,
    ) -> None:
        """A notification, while tracing: progress is its request's event; a span if asked."""
        facts = None
        if label == "notifications/progress" and not remote:
            facts = params_facts(message)
            tracer.progress(self.route.route, scope, facts.progressToken, facts.progress, facts.total)
        if tracer.config.notifications:
            if trace is None:
                trace = meta_trace((facts or params_facts(message)).meta)
            version = self.route.session_version(scope)
            shown = scope if session is not None or transport == "ws" else None
            tracer.notification(self.route.route, label, origin, transport_label(transport), shown, version, trace)

    def stream_answered(self, exchange: Exchange, now: float) -> None:
        """A ``subscriptions/listen`` was answered by a stream: the request is done."""
        scope = exchange.session if exchange.session is not None else self.scope
        outcomes = self.route.tracker.answered_by_stream(scope, exchange.listen_id, now)
        if outcomes:
            self._outcomes(outcomes, now, exchange, scope)

    def _tap(self, origin: str, message: Envelope, shown: dict[str, Any]) -> None:
        """Somebody taps this route: hand them the message's record (never blocks)."""
        route = self.route
        record = tap_record(route.route, origin, message, max_bytes=route.tap_bound, at_mono=time.monotonic(), **shown)
        for subscriber in route.taps:
            subscriber.offer(record)

    def _record(self, origin: str, message: Envelope, shown: dict[str, Any]) -> None:
        """Somebody records this route: what the message's line is made of,
        shared by the route's recordings, built when one takes it (never blocks).
        Only a recording that asked for a method or a target needs the
        message's names now."""
        route = self.route
        exchange = shown["exchange"]
        names: tuple[str | None, str | None] | None = None
        target = ""
        if not route.record_all:
            answered = shown["answered"]
            names = shown_names(message, shown["method"], answered)
            target = answered.target if answered is not None else shown["target"]
        session = None if exchange is None else exchange.session
        waiting: Waiting = (route, origin, message, shown, time.monotonic(), route.record_bound, names, session)
        for recorder in route.recorders:
            if names is None or recorder.filter.wants_message(route.route, names[0], names[1], target):
                recorder.put_waiting(waiting)


def header_outcome(route: RouteObservation, exchange: Exchange, status: int, now: float) -> McpOutcome:
    """A request whose body was not read (too large, not JSON), counted by
    its 2026-07-28 headers: ``Mcp-Method``, ``Mcp-Name``, ``MCP-Protocol-Version``."""
    method = method_label(exchange.mcp_method)
    target = ""
    if method in TARGET_METHODS and (method != "resources/read" or route.target_resources):
        name = header_text(exchange.mcp_name)
        if isinstance(name, str):
            target = route.targets.label(name.split("?", 1)[0].split("#", 1)[0] if method == "resources/read" else name)
    return McpOutcome(
        method,
        "ok" if 200 <= status < 300 else "other_error",
        (exchange.ended or now) - exchange.started,
        "client",
        session=exchange.session,
        request_bytes=exchange.request_bytes,
        response_bytes=exchange.response_bytes,
        protocol_version=version_label(exchange.protocol_version),
        target=target,
    )
