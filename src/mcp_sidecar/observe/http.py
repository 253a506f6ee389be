"""HTTP/1.1 exchanges seen in-line, with h11 (sans-io).

A server-role ``h11.Connection`` reads the client's bytes, a client-role one
the upstream's; each is fed the other side's parsed events (``send``, output
discarded) so that h11 frames everything exactly as the peers do: HEAD
responses, chunked bodies, keep-alive cycles, pipelined requests (h11 pauses
until the cycle ends), ``101 Switching Protocols``.

Rules this module keeps:

* ``feed_client``/``feed_upstream`` take bytes and a timestamp and return
  events; the caller must feed client bytes before forwarding them (so a
  request is always seen before its response).
* Bodies are inspected only where MCP lives: JSON request/response bodies up
  to ``MAX_JSON_BYTES`` and ``text/event-stream`` responses (SSE parser,
  bounded lines).  Other bodies are counted, not kept.
* After a 101 the observer hands over: ``Upgraded`` carries the bytes that
  followed the handshake on each side, for the WebSocket scanner.
* Anything h11 rejects raises ``HttpObserverError``: the caller gives up on
  this connection (fail open); the bytes were forwarded regardless.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

import h11

from ..sse import Comment, SseError, SseEvent, SseParser

MAX_JSON_BYTES = 1024 * 1024
KNOWN_PATHS = ("/", "/mcp", "/sse", "/message", "/messages", "/stdio", "/health", "/config")
KNOWN_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class HttpObserverError(ValueError):
    pass


def path_label(target: bytes) -> str:
    """A bounded label for a request target: known MCP/Inspector paths, else ``other``."""
    path = target.split(b"?", 1)[0].decode("latin-1")
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/api/"):
        return "/api"
    return "other"


@dataclass
class Exchange:
    """One request/response pair, as it completes."""

    method: str
    path: str
    status: int | None = None
    started: float = 0.0
    headers_at: float | None = None
    ended: float | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    content_type: str = ""
    session: str | None = None
    mcp_method: str | None = None
    sse_events: int = 0
    #: JSON-RPC messages found in the request body (0: not parsed or not JSON-RPC).
    jsonrpc_requests: int = 0


@dataclass
class ExchangeDone:
    exchange: Exchange


@dataclass
class ResponseStarted:
    """Response headers arrived (the first byte of an answer)."""

    exchange: Exchange


@dataclass
class SseSeen:
    event: str
    at: float
    keepalive: bool = False


@dataclass
class JsonRpcSeen:
    """A JSON-RPC message; ``origin`` is the side that sent it."""

    origin: str  # "client" | "upstream"
    message: dict[str, Any]
    at: float
    session: str | None
    transport: str  # "http" | "sse" | "ws"


@dataclass
class SessionEndpoint:
    """Legacy HTTP+SSE: the stream announced its POST endpoint (session id)."""

    session: str


@dataclass
class Upgraded:
    client_trailing: bytes
    upstream_trailing: bytes
    at: float


@dataclass
class Tunneled:
    """Bytes after the upgrade, fed to this observer anyway (they belong to
    the new protocol: the caller hands them to its scanner)."""

    side: str
    data: bytes


def jsonrpc_messages(body: bytes) -> list[dict[str, Any]]:
    try:
        value = json.loads(body)
    except ValueError:
        return []
    items = value if isinstance(value, list) else [value]
    return [m for m in items if isinstance(m, dict) and m.get("jsonrpc") == "2.0"]


def _append_bounded(buffer: bytearray | None, data: bytes) -> bytearray | None:
    """Collect a JSON body up to MAX_JSON_BYTES; beyond that, stop (None)."""
    if buffer is None or len(buffer) + len(data) > MAX_JSON_BYTES:
        return None
    buffer += data
    return buffer


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


@dataclass
class _Current:
    exchange: Exchange
    request_json: bytearray | None
    #: The session the request named: its responses correlate under it (an
    #: initialize answer assigns a session id only for later requests).
    request_session: str | None = None
    response_json: bytearray | None = None
    sse: SseParser | None = None


class HttpObserver:
    def __init__(self) -> None:
        self.server = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        self.client = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self._queue: deque[_Current] = deque()
        self._upstream_current: _Current | None = None
        self._pending_upstream = bytearray()
        self.upgraded = False
        #: The legacy SSE stream's session, once its endpoint event was seen.
        self.stream_session: str | None = None

    # -- client side ----------------------------------------------------------------------

    def feed_client(self, data: bytes, now: float) -> list[Any]:
        if not data:  # (h11 would take b"" for EOF; EOF is not fed)
            return []
        if self.upgraded:
            return [Tunneled("client", bytes(data))]
        try:
            self.server.receive_data(data)
            return self._client_events(now)
        except h11.ProtocolError as exc:
            raise HttpObserverError(f"client: {exc}") from None

    def _client_events(self, now: float) -> list[Any]:
        out: list[Any] = []
        while True:
            event = self.server.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return out
            if isinstance(event, h11.Request):
                target = event.target
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(target.decode("latin-1")).query)
                session = _header(event.headers, b"mcp-session-id") or (query.get("sessionId") or [None])[0]
                method = event.method.decode("latin-1")
                exchange = Exchange(method if method in KNOWN_METHODS else "OTHER", path_label(target),
                                    started=now, session=session,
                                    mcp_method=_header(event.headers, b"mcp-method"))
                ctype = (_header(event.headers, b"content-type") or "").split(";")[0].strip().lower()
                current = _Current(exchange, bytearray() if ctype == "application/json" else None, session)
                self._queue.append(current)
                # The client-role side needs only what frames the response:
                # the method and the upgrade headers, not the body.
                self.client.send(h11.Request(method=event.method, target=event.target, headers=[
                    (k, v) for k, v in event.headers if k in (b"host", b"upgrade", b"connection")]))
            elif isinstance(event, h11.Data):
                current = self._queue[-1]
                current.exchange.request_bytes += len(event.data)
                current.request_json = _append_bounded(current.request_json, event.data)
            elif isinstance(event, h11.EndOfMessage):
                current = self._queue[-1]
                if self.client.our_state is h11.SEND_BODY:
                    self.client.send(event)
                if current.request_json:
                    for message in jsonrpc_messages(bytes(current.request_json)):
                        current.exchange.jsonrpc_requests += 1
                        out.append(JsonRpcSeen("client", message, now, current.exchange.session, "http"))
                current.request_json = None
                out += self._drain_upstream(now)
                out += self._maybe_next_cycle(now)
            elif isinstance(event, h11.ConnectionClosed):
                return out

    # -- upstream side --------------------------------------------------------------------

    def feed_upstream(self, data: bytes, now: float) -> list[Any]:
        if not data:
            return []
        if self.upgraded:
            return [Tunneled("upstream", bytes(data))]
        try:
            if self.client.our_state in (h11.IDLE,) and not self._queue:
                # Bytes before any request (or after the last one): buffer them.
                self._pending_upstream += data
                if len(self._pending_upstream) > 64 * 1024:
                    raise HttpObserverError("upstream sent a response with no request")
                return []
            self.client.receive_data(data)
            return self._upstream_events(now)
        except h11.ProtocolError as exc:
            raise HttpObserverError(f"upstream: {exc}") from None

    def _drain_upstream(self, now: float) -> list[Any]:
        if not self._pending_upstream:
            return []
        data = bytes(self._pending_upstream)
        self._pending_upstream.clear()
        self.client.receive_data(data)
        return self._upstream_events(now)

    def _upstream_events(self, now: float) -> list[Any]:
        out: list[Any] = []
        while True:
            event = self.client.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return out
            if not self._queue:
                raise HttpObserverError("upstream sent a response with no request")
            current = self._queue[0]
            exchange = current.exchange
            if isinstance(event, h11.InformationalResponse):
                self.server.send(event)
                if event.status_code == 101:
                    exchange.status = 101
                    exchange.headers_at = exchange.ended = now
                    out.append(ExchangeDone(exchange))
                    self.upgraded = True
                    out.append(Upgraded(self.server.trailing_data[0], self.client.trailing_data[0], now))
                    return out
            elif isinstance(event, h11.Response):
                exchange.status = event.status_code
                exchange.headers_at = now
                ctype = (_header(event.headers, b"content-type") or "").split(";")[0].strip().lower()
                exchange.content_type = ctype
                session = _header(event.headers, b"mcp-session-id")
                if session and not exchange.session:
                    exchange.session = session
                if ctype == "text/event-stream":
                    current.sse = SseParser()
                elif ctype == "application/json":
                    current.response_json = bytearray()
                out.append(ResponseStarted(exchange))
                # The server-role side only has to reach DONE: an empty response.
                self.server.send(h11.Response(status_code=event.status_code, headers=[
                    (k, v) for k, v in event.headers if k in (b"connection", b"upgrade")] + [(b"content-length", b"0")]))
            elif isinstance(event, h11.Data):
                exchange.response_bytes += len(event.data)
                if current.sse is not None:
                    out += self._sse(current, event.data, now)
                else:
                    current.response_json = _append_bounded(current.response_json, event.data)
            elif isinstance(event, h11.EndOfMessage):
                exchange.ended = now
                if current.response_json:
                    for message in jsonrpc_messages(bytes(current.response_json)):
                        out.append(JsonRpcSeen("upstream", message, now, current.request_session, "http"))
                self.server.send(event)
                self._queue.popleft()
                out.append(ExchangeDone(exchange))
                if h11.MUST_CLOSE in (self.server.our_state, self.client.their_state):
                    return out
                out += self._maybe_next_cycle(now)
            elif isinstance(event, h11.ConnectionClosed):
                return out

    def _maybe_next_cycle(self, now: float) -> list[Any]:
        """Both sides done with an exchange: start the next one (keep-alive)."""
        if (self.server.our_state is h11.DONE and self.server.their_state is h11.DONE
                and self.client.our_state is h11.DONE and self.client.their_state is h11.DONE):
            self.server.start_next_cycle()
            self.client.start_next_cycle()
            return self._client_events(now)
        return []

    def _sse(self, current: _Current, data: bytes, now: float) -> list[Any]:
        out: list[Any] = []
        try:
            events = current.sse.feed(data)  # type: ignore[union-attr]
        except SseError:
            current.sse = None
            return out
        for event in events:
            if isinstance(event, Comment):
                out.append(SseSeen("comment", now, keepalive=True))
                continue
            assert isinstance(event, SseEvent)
            current.exchange.sse_events += 1
            out.append(SseSeen(event.event, now))
            if event.event == "endpoint":
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(event.data).query)
                if query.get("sessionId"):
                    self.stream_session = query["sessionId"][0]
                    out.append(SessionEndpoint(self.stream_session))
            elif event.data[:1] in ("{", "["):
                session = current.request_session if current.request_session is not None else self.stream_session
                for message in jsonrpc_messages(event.data.encode()):
                    out.append(JsonRpcSeen("upstream", message, now, session, "sse"))
        return out
