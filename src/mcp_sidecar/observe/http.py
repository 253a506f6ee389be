"""HTTP/1.1 exchanges seen in-line, with h11 (sans-io).

h11 does all the parsing, one message at a time: a fresh server-role
``h11.Connection`` reads each request from the client's bytes, a fresh
client-role one each response from the upstream's.  The response reader is
first told the request it answers (``send`` of a minimal request: the method
and any ``Upgrade``, all that frames a response; output discarded), so h11
frames HEAD responses, chunked and close-delimited bodies, ``1xx`` and
``101 Switching Protocols`` exactly as the peers do.  What one message leaves
in its reader's buffer starts the next one.  A connection per message
instead of ``start_next_cycle`` spares the work of answering each request on
the server-role side and lets pipelined requests be read as they arrive
(with headers read in one pass, an exchange went from ~405 to ~180 us of
observation; h11's own parsing is most of what remains).

Rules this module keeps:

* ``feed_client``/``feed_upstream`` take bytes and a timestamp and return
  events; the caller feeds a request's bytes before any of its response's
  (the pump observes each chunk right after sending it, so a response cannot
  overtake its request).
* Exchanges are answered in order; at most ``MAX_PIPELINE`` wait for an
  answer, and at most ``MAX_BUFFERED_BYTES`` wait in a paused reader.
* Bodies are inspected only where MCP lives: JSON request/response bodies up
  to ``MAX_JSON_BYTES`` and ``text/event-stream`` responses (SSE parser,
  bounded lines).  Other bodies are counted, not kept.
* After a ``101`` (or a ``2xx`` to ``CONNECT``) the observer hands over:
  ``Upgraded`` carries the bytes that followed the handshake on each side and
  whether the new protocol is WebSocket.
* Anything h11 rejects (and any breach of the bounds above) raises
  ``HttpObserverError``: the caller gives up on this connection (fail open);
  the bytes were forwarded regardless.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

import h11

from ..errors import ObserverError
from .budget import UNBOUNDED, Allowance
from .events import (Exchange, ExchangeDone, HttpEvent, JsonRpcSeen, ResponseStarted, SessionEndpoint, SseSeen,
                     Tunneled, Upgraded)
from .sse import Comment, SseError, SseEvent, SseParser

MAX_JSON_BYTES = 1024 * 1024
#: Largest request or response head h11 may wait for (bytes).
MAX_HEAD_BYTES = 64 * 1024
#: Requests read but not yet answered (pipelining) before the observer gives up.
MAX_PIPELINE = 64
#: Bytes a paused reader may hold: a request proposing an upgrade waits for
#: its answer; upstream bytes wait for the request they answer.
MAX_BUFFERED_BYTES = 64 * 1024
KNOWN_PATHS = ("/", "/mcp", "/sse", "/message", "/messages", "/stdio", "/health", "/config")
KNOWN_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class HttpObserverError(ObserverError):
    """The peer's bytes are not HTTP/1.1 as h11 reads it (or breach a bound).

    The message names the fault, never the peer's bytes: they may carry a
    cookie or a token (a malformed ``Cookie`` line is still a cookie).
    """


def _describe(exc: h11.ProtocolError) -> str:
    """h11's reason without the bytes it quotes (``illegal header line: b'...'``)."""
    text = str(exc)
    cut = min((i for i in (text.find(m) for m in ("bytearray(", "b'", 'b"', "'", '"')) if i >= 0), default=len(text))
    return text[:min(cut, 120)].rstrip(": ") + f" (status hint {exc.error_status_hint})"


_REQUEST_METHODS = tuple(m.encode() + b" " for m in (*KNOWN_METHODS, "CONNECT", "TRACE"))


def starts_like_request(head: bytes) -> bool:
    """Whether ``head`` (a few first bytes) begins an HTTP/1.x request line."""
    return any(head.startswith(m) or m.startswith(head) for m in _REQUEST_METHODS)


def path_label(target: bytes) -> str:
    """A bounded label for a request target: known MCP/Inspector paths, else ``other``."""
    path = target.split(b"?", 1)[0].decode("latin-1")
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/api/"):
        return "/api"
    return "other"


def jsonrpc_messages(body: bytes) -> list[dict[str, Any]]:
    try:
        value = json.loads(body)
    except ValueError:
        return []
    items = value if isinstance(value, list) else [value]
    return [m for m in items if isinstance(m, dict) and m.get("jsonrpc") == "2.0"]


@dataclass
class _Current:
    exchange: Exchange
    #: What frames the response: h11 is told this request before reading it.
    framing: h11.Request
    #: The request proposed a protocol switch (Upgrade header or CONNECT).
    switch: bool
    request_json: bytearray | None
    #: The session the request named: its responses correlate under it (an
    #: initialize answer assigns a session id only for later requests).
    request_session: str | None = None
    response_json: bytearray | None = None
    sse: SseParser | None = None
    upgrade: bytes = b""


#: Framing requests by method, reused (h11 events are immutable).
_FRAMING: dict[bytes, h11.Request] = {}


def _framing_request(method: bytes, upgrade: bytes) -> h11.Request:
    """The least h11 needs to frame a response: the method (HEAD, CONNECT)
    and whether an upgrade was proposed."""
    if upgrade:
        return h11.Request(method=method, target=b"/", headers=[(b"host", b"x"), (b"upgrade", upgrade)])
    try:
        return _FRAMING[method]
    except KeyError:
        request = h11.Request(method=method, target=b"/", headers=[(b"host", b"x")])
        if method.decode("latin-1") in KNOWN_METHODS:
            _FRAMING[method] = request
        return request


def _request_reader() -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)


def _response_reader(current: _Current) -> h11.Connection:
    reader = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
    reader.send(current.framing)
    if current.switch:  # h11 switches only once the proposing request has ended
        reader.send(h11.EndOfMessage())
    return reader


class HttpObserver:
    """The exchanges of one HTTP/1.1 connection, read from both directions.

    Owns the h11 readers, the queue of exchanges awaiting their answer and
    the bodies being collected for JSON-RPC; what it buffers is charged to
    ``memory`` (the worker's inspection budget) after every step.
    """

    def __init__(self, memory: Allowance | None = None) -> None:
        self.memory = memory or UNBOUNDED.allowance()
        #: Bytes of the JSON bodies being collected (request and response).
        self._json_bytes = 0
        self._requests = _request_reader()
        #: Reads the response to ``_queue[0]``; None until its first byte.
        self._responses: h11.Connection | None = None
        #: Exchanges whose request has started and whose response has not ended.
        self._queue: deque[_Current] = deque()
        self._pending_upstream = bytearray()
        self.upgraded = False
        #: The legacy SSE stream's session, once its endpoint event was seen.
        self.stream_session: str | None = None

    # -- client side ----------------------------------------------------------------------

    def feed_client(self, data: bytes, now: float) -> list[HttpEvent]:
        if not data:  # (h11 would take b"" for EOF; EOF is not fed)
            return []
        if self.upgraded:
            return [Tunneled("client", bytes(data))]
        try:
            self._requests.receive_data(data)
            events = self._client_events(now)
        except h11.ProtocolError as exc:
            raise HttpObserverError(f"client: {_describe(exc)}") from None
        self._account()
        return events

    def _collect(self, buffer: bytearray | None, data: bytes) -> bytearray | None:
        """Collect a JSON body up to MAX_JSON_BYTES; beyond that, stop (None)."""
        if buffer is None:
            return None
        if len(buffer) + len(data) > MAX_JSON_BYTES:
            self._json_bytes -= len(buffer)
            return None
        buffer += data
        self._json_bytes += len(data)
        return buffer

    def _done_with(self, buffer: bytearray | None) -> None:
        if buffer:
            self._json_bytes -= len(buffer)

    def _account(self) -> None:
        """Charge what is buffered now to the inspection budget."""
        level = self._json_bytes + len(self._pending_upstream)
        if self._queue and self._queue[0].sse is not None:
            level += self._queue[0].sse.buffered
        self.memory.hold(level)

    def close(self) -> None:
        """Drop every buffer and give the budget back (the connection ended)."""
        self._queue.clear()
        self._pending_upstream = bytearray()
        self._requests = self._responses = None  # type: ignore[assignment]  # their buffers, too
        self._json_bytes = 0
        self.memory.release()

    def _client_events(self, now: float) -> list[HttpEvent]:
        out: list[HttpEvent] = []
        reader = self._requests
        while True:
            event = reader.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                # PAUSED: a switch was proposed; its answer decides what follows.
                if event is h11.PAUSED and len(reader.trailing_data[0]) > MAX_BUFFERED_BYTES:
                    raise HttpObserverError("client kept sending while its upgrade was unanswered")
                return out
            if isinstance(event, h11.Data):
                current = self._queue[-1]
                current.exchange.request_bytes += len(event.data)
                if current.request_json is not None:
                    current.request_json = self._collect(current.request_json, event.data)
            elif isinstance(event, h11.Request):
                if len(self._queue) >= MAX_PIPELINE:
                    raise HttpObserverError(f"more than {MAX_PIPELINE} requests unanswered")
                self._queue.append(self._request(event, now))
            elif isinstance(event, h11.EndOfMessage):
                current = self._queue[-1]
                if current.request_json:
                    for message in jsonrpc_messages(bytes(current.request_json)):
                        current.exchange.jsonrpc_requests += 1
                        out.append(JsonRpcSeen("client", message, now, current.exchange.session, "http"))
                self._done_with(current.request_json)
                current.request_json = None
                if self._pending_upstream:
                    out += self._drain_upstream(now)
                if reader.their_state is h11.DONE:  # keep-alive: the next request starts here
                    leftover = reader.trailing_data[0]
                    reader = self._requests = _request_reader()
                    if not leftover:
                        return out
                    reader.receive_data(leftover)
                # (MUST_CLOSE: h11 rejects any further byte.  MIGHT_SWITCH_PROTOCOL: paused.)
            elif isinstance(event, h11.ConnectionClosed):
                return out

    def _request(self, event: h11.Request, now: float) -> _Current:
        session = mcp_method = None
        ctype = upgrade = b""
        for name, value in event.headers:
            if name == b"content-type":
                ctype = value
            elif name == b"mcp-session-id":
                session = value.decode("latin-1")
            elif name == b"mcp-method":
                mcp_method = value.decode("latin-1")
            elif name == b"upgrade":
                upgrade = value
        target = event.target
        if session is None and b"?" in target:
            query = urllib.parse.parse_qs(target.split(b"?", 1)[1].decode("latin-1"))
            session = (query.get("sessionId") or [None])[0]
        method = event.method.decode("latin-1")
        exchange = Exchange(method if method in KNOWN_METHODS else "OTHER", path_label(target), started=now,
                            session=session, mcp_method=mcp_method)
        json_body = ctype.split(b";", 1)[0].strip().lower() == b"application/json"
        return _Current(exchange, _framing_request(event.method, upgrade), bool(upgrade) or method == "CONNECT",
                        bytearray() if json_body else None, session, upgrade=upgrade)

    # -- upstream side --------------------------------------------------------------------

    def feed_upstream(self, data: bytes, now: float) -> list[HttpEvent]:
        if not data:
            return []
        if self.upgraded:
            return [Tunneled("upstream", bytes(data))]
        events = self._feed_upstream(data, now)
        self._account()
        return events

    def _feed_upstream(self, data: bytes, now: float) -> list[HttpEvent]:
        try:
            if self._responses is None:
                if not self._queue:
                    # Bytes before any request (or after the last answer): hold them.
                    self._pending_upstream += data
                    if len(self._pending_upstream) > MAX_BUFFERED_BYTES:
                        raise HttpObserverError("upstream sent a response with no request")
                    return []
                self._responses = _response_reader(self._queue[0])
            self._responses.receive_data(data)
            return self._upstream_events(now)
        except h11.ProtocolError as exc:
            raise HttpObserverError(f"upstream: {_describe(exc)}") from None

    def _drain_upstream(self, now: float) -> list[HttpEvent]:
        data = bytes(self._pending_upstream)
        self._pending_upstream.clear()
        return self._feed_upstream(data, now)

    def _upstream_events(self, now: float) -> list[HttpEvent]:
        out: list[HttpEvent] = []
        reader = self._responses
        assert reader is not None
        while True:
            event = reader.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return out
            current = self._queue[0]
            exchange = current.exchange
            if isinstance(event, h11.Data):
                exchange.response_bytes += len(event.data)
                if current.sse is not None:
                    out += self._sse(current, event.data, now)
                elif current.response_json is not None:
                    current.response_json = self._collect(current.response_json, event.data)
            elif isinstance(event, h11.Response):
                self._response(current, event, now, out)
                if reader.their_state is h11.SWITCHED_PROTOCOL:  # a 2xx to CONNECT: a tunnel now
                    exchange.ended = now
                    out.append(ExchangeDone(exchange))
                    return self._switched(reader, now, out, websocket=False)
            elif isinstance(event, h11.EndOfMessage):
                exchange.ended = now
                if current.response_json:
                    for message in jsonrpc_messages(bytes(current.response_json)):
                        out.append(JsonRpcSeen("upstream", message, now, current.request_session, "http"))
                self._done_with(current.response_json)
                current.response_json = None
                self._queue.popleft()
                out.append(ExchangeDone(exchange))
                if current.switch and self._requests.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    # The switch was declined: what the client sent meanwhile is the next request.
                    leftover = self._requests.trailing_data[0]
                    self._requests = _request_reader()
                    if leftover:
                        self._requests.receive_data(leftover)
                        out += self._client_events(now)
                if reader.their_state is h11.MUST_CLOSE:
                    return out  # h11 rejects any further byte
                leftover = reader.trailing_data[0]
                self._responses = None
                if leftover:
                    out += self._feed_upstream(leftover, now)
                return out
            elif isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    exchange.status = 101
                    exchange.headers_at = exchange.ended = now
                    self._queue.popleft()
                    out.append(ExchangeDone(exchange))
                    websocket = current.upgrade.lower() == b"websocket"
                    return self._switched(reader, now, out, websocket)
            elif isinstance(event, h11.ConnectionClosed):
                return out

    def _response(self, current: _Current, event: h11.Response, now: float, out: list[HttpEvent]) -> None:
        exchange = current.exchange
        exchange.status = event.status_code
        exchange.headers_at = now
        ctype = b""
        for name, value in event.headers:
            if name == b"content-type":
                ctype = value
            elif name == b"mcp-session-id" and not exchange.session:
                exchange.session = value.decode("latin-1")
        exchange.content_type = ctype.split(b";", 1)[0].strip().lower().decode("latin-1")
        if exchange.content_type == "text/event-stream":
            current.sse = SseParser()
        elif exchange.content_type == "application/json":
            current.response_json = bytearray()
        out.append(ResponseStarted(exchange))

    def _switched(self, reader: h11.Connection, now: float, out: list[HttpEvent], websocket: bool) -> list[HttpEvent]:
        self.upgraded = True
        out.append(Upgraded(self._requests.trailing_data[0], reader.trailing_data[0], now, websocket))
        return out

    def _sse(self, current: _Current, data: bytes, now: float) -> list[HttpEvent]:
        out: list[HttpEvent] = []
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
