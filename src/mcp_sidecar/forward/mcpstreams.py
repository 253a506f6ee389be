"""Long-lived MCP streams: open now, how long they lived, how they ended.

A stream is an HTTP response that is an event stream meant to stay open:
the 2024-11-05 transport's ``GET`` (``legacy-sse``), streamable HTTP's
standalone ``GET`` (``get``), a 2026-07-28 ``subscriptions/listen`` answered
by a stream (``listen``), the Inspector v2 API's events (``inspector-v2``).
A ``POST`` answered by a request-scoped stream is not one: it ends with its
response and is a request's latency.

Rules this module keeps:

* A connection holds at most one open stream (HTTP/1.1 answers in order, and
  a stream's response never ends while it is open); the route's gauge moves
  only through ``opened`` and ``ended``, each called once per stream, so it
  is back to 0 when every stream's connection has closed, however they
  closed -- the stream's own end, the connection's, an observer that gave
  up on the bytes.
* How a stream ended is a bounded label (``StreamEnd``): the server ended it
  (its response completed, or it closed its side first), the client closed
  first, a reset on either leg, the proxy's drain, a timeout (idle or
  WebSocket keepalive), anything else ``other``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol


class StreamEnd(StrEnum):
    SERVER_CLOSED = "server_closed"
    CLIENT_CLOSED = "client_closed"
    RESET = "reset"
    DRAINED = "drained"
    TIMEOUT = "timeout"
    OTHER = "other"


#: The stream kinds, in display order.
STREAM_KINDS = ("legacy-sse", "get", "listen", "inspector-v2")

#: A connection's end (forward/state.End values) -> how its open stream ended.
_BY_CONNECTION_END = {
    "client_reset": StreamEnd.RESET,
    "upstream_reset": StreamEnd.RESET,
    "drain_timeout": StreamEnd.DRAINED,
    "cancelled": StreamEnd.DRAINED,
    "idle_timeout": StreamEnd.TIMEOUT,
    "ws_timeout": StreamEnd.TIMEOUT,
}


def stream_end(connection_end: str | None, first_eof: str | None) -> StreamEnd:
    """How a stream still open when its connection ended, ended."""
    if connection_end == "closed" or connection_end is None:
        if first_eof == "client":
            return StreamEnd.CLIENT_CLOSED
        if first_eof == "upstream":
            return StreamEnd.SERVER_CLOSED
        return StreamEnd.OTHER
    return _BY_CONNECTION_END.get(connection_end, StreamEnd.OTHER)


class RouteStreams:
    """A route's streams: how many are open now by kind, how many ended by
    kind and end (the lifetime histogram is written by the caller)."""

    __slots__ = ("ended", "open")

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.ended: dict[tuple[str, str], int] = {}

    @property
    def total_open(self) -> int:
        return sum(self.open.values())

    def opened(self, kind: str) -> None:
        self.open[kind] = self.open.get(kind, 0) + 1

    def closed(self, kind: str, end: str) -> None:
        self.open[kind] -= 1
        self.ended[(kind, end)] = self.ended.get((kind, end), 0) + 1

    def relabel(self, old: str, new: str) -> None:
        """An open stream turned out to be another kind (a ``GET`` stream that
        announced a legacy session endpoint)."""
        self.open[old] -= 1
        self.open[new] = self.open.get(new, 0) + 1

    def as_json(self) -> dict[str, Any]:
        ended: dict[str, dict[str, int]] = {}
        for (kind, end), count in sorted(self.ended.items()):
            ended.setdefault(kind, {})[end] = count
        return {"open": {k: v for k, v in self.open.items() if v}, "ended": ended}


class StreamCounts(Protocol):
    """What a connection's stream moves on its route (routeobservation.py)."""

    streams: RouteStreams

    def mcp_stream_opened(self, kind: str) -> None: ...

    def mcp_stream_ended(self, kind: str, end: str, lifetime_s: float) -> None: ...


class StreamSlot:
    """The one stream a connection may hold open: opened by its response's
    head, ended by its response's end or the connection's, once."""

    __slots__ = ("exchange", "kind", "opened", "route")

    def __init__(self, route: StreamCounts) -> None:
        self.route = route
        self.kind: str | None = None
        self.exchange: Any = None
        self.opened = 0.0

    def open(self, kind: str, exchange: Any, now: float) -> None:
        self.end(StreamEnd.OTHER, now)  # (never: HTTP/1.1 answers one exchange at a time)
        self.kind, self.exchange, self.opened = kind, exchange, now
        self.route.mcp_stream_opened(kind)

    def end(self, end: str, now: float) -> None:
        if self.kind is not None:
            kind, self.kind, self.exchange = self.kind, None, None
            self.route.mcp_stream_ended(kind, end, now - self.opened)

    def exchange_done(self, exchange: Any, aborted_end: str, now: float) -> None:
        """An exchange ended: if it was the stream's, so is the stream (the
        server ended it, or the connection did: ``aborted_end``)."""
        if self.kind is not None and self.exchange is exchange:
            self.end(aborted_end if exchange.aborted else StreamEnd.SERVER_CLOSED, now)

    def announced_endpoint(self) -> None:
        """A ``GET`` stream that announced a POST endpoint is the legacy transport's."""
        if self.kind == "get":
            self.route.streams.relabel("get", "legacy-sse")
            self.kind = "legacy-sse"
