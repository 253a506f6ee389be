"""What one connection's MCP messages mean: its sessions, its requests'
first response bytes, the tap, the correlation with answers.

Rules this module keeps:

* One per observed connection, created with it (observation.py); it holds
  nothing until the connection carries MCP (a shared read-only placeholder
  for the message counts).
* A message without a session of its own (streamable HTTP without
  ``Mcp-Session-Id``, a WebSocket) belongs to the connection's key,
  ``conn:ID``, which ends with the connection.
* The tap is offered a record only while somebody taps the route.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..observe.connection import transport_label
from ..observe.events import McpOutcome
from ..observe.jsonrpc import UNSET, Envelope, decode
from ..observe.mcp import method_label
from ..observe.mcphttp import trace_id
from ..observe.quality import Quality
from ..observe.tap import tap_record
from .routeobservation import RouteObservation

_NONE_YET: Mapping[str, int] = MappingProxyType({})


class McpRecords:
    """One connection's MCP: whether it carried any, its messages by how they
    travelled, its own session key, and the requests awaiting a first byte."""

    __slots__ = ("awaiting_first_byte", "client", "conn_id", "messages", "quality", "route", "seen", "session")

    def __init__(self, route: RouteObservation, conn_id: int, client: str, quality: Quality) -> None:
        self.route = route
        self.conn_id = conn_id
        self.client = client
        self.quality = quality
        #: The connection carried MCP JSON-RPC (counted in the route's gauge).
        self.seen = False
        #: JSON-RPC messages seen, by how they travelled: http (a body), sse (an event), ws (a frame).
        self.messages: Mapping[str, int] = _NONE_YET
        #: The correlation key of messages without a session (the connection's own).
        self.session: str | None = None
        #: Requests of the HTTP exchange under way (label, when): timed to the response's first byte.
        self.awaiting_first_byte: list[tuple[str, float]] = []

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
        if self.seen:
            self.route.mcp_connections -= 1
        if self.session is not None:  # a connection-scoped session ends with its connection
            self.route.stats.end_session(self.session)

    def notification(self, side: str, payload: bytes, progress: bool, now: float) -> None:
        """A WebSocket notification the observer did not decode (nothing to correlate)."""
        route = self.route
        if route.taps:  # somebody taps: the tap shows it, so it is decoded after all
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
    ) -> None:
        """A JSON-RPC message: counted, correlated (requests with their
        answers: outcomes, latencies, the request log), shown to the tap."""
        self.saw()
        counts: Any = self.messages
        if counts is _NONE_YET:
            counts = self.messages = {}
        counts[transport] = counts.get(transport, 0) + 1
        route = self.route
        label = None
        is_request = message.method is not UNSET and message.id is not UNSET
        if message.method is not UNSET:
            label = method_label(message.method)
            if is_request and origin == "client" and http:
                self.awaiting_first_byte.append((label, now))
        if session is None:
            session = self.session
            if session is None:
                session = self.session = f"conn:{self.conn_id}"
        transport_name = transport_label(transport)
        route.stats.message(session, self.client, transport_name, now, label if is_request else None)
        if is_request and trace is None and route.request_log is not None:
            trace = meta_trace(message)  # W3C trace context in params._meta (no headers on a WebSocket)
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

    def _tap(
        self,
        origin: str,
        message: Envelope,
        session: str,
        transport: str,
        size: int,
        label: str | None,
        outcomes: list[McpOutcome],
    ) -> None:
        """Somebody taps this route: hand them the message (never blocks)."""
        route = self.route
        answered = outcomes[0] if outcomes and message.method is UNSET else None
        record = tap_record(
            route.route,
            origin,
            message,
            at_unix=time.time(),
            transport=transport,
            session=session,
            size=size,
            method=label,
            answered=answered,
            max_bytes=route.tap_max_bytes,
        )
        for subscriber in route.taps:
            subscriber.offer(record)


def meta_trace(message: Envelope) -> str | None:
    """The trace id of ``params._meta.traceparent``, if the request carries one."""
    meta = message.param("_meta")
    if isinstance(meta, dict):
        value = meta.get("traceparent")
        if isinstance(value, str):
            return trace_id(value.encode("latin-1", "replace"))
    return None
