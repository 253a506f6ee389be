"""HTTP/1.1 exchanges seen in-line, with llhttp (httptools; sans-io).

One persistent llhttp request parser reads the client's bytes and one
persistent response parser the upstream's: llhttp frames keep-alive and
pipelined messages, chunked and close-delimited bodies, ``1xx`` and ``101``
in C, and calls back into Python only per message, per header and per body
piece.  What llhttp cannot know, because it depends on the request a response
answers, is read here: the response to a ``HEAD`` (no body, whatever its
``Content-Length`` says) and to a ``CONNECT`` (a tunnel after a ``2xx``) are
read head-only; an upgrade proposal pauses the client's side until its
answer shows which protocol the bytes that follow belong to.

Rules this module keeps:

* ``feed_client``/``feed_upstream`` take bytes and a timestamp and return
  events; the caller feeds a request's bytes before any of its response's
  (the pump observes each chunk right after sending it, so a response cannot
  overtake its request).
* Exchanges are answered in order; at most ``MAX_PIPELINE`` wait for an
  answer, at most ``MAX_BUFFERED_BYTES`` wait while a side is paused, and a
  message head is at most ``MAX_HEAD_BYTES``.  The events never depend on
  how the bytes were split.
* Bodies are inspected only where MCP lives: JSON request/response bodies up
  to ``MAX_JSON_BYTES`` (decoded as JSON-RPC envelopes, ``jsonrpc.py``) and
  ``text/event-stream`` responses (SSE parser, bounded lines).  Other bodies
  are counted, not kept.  What is buffered is charged to the worker's
  inspection budget after every step.
* After a ``101`` (or a ``2xx`` to ``CONNECT``) the observer hands over:
  ``Upgraded`` carries the bytes that followed the handshake on each side and
  whether the new protocol is WebSocket.
* Anything llhttp rejects (and any breach of the bounds above) raises
  ``HttpObserverError``, naming the fault but never quoting the peer's
  bytes; the caller gives up on this connection (fail open); the bytes were
  forwarded regardless.
"""

from __future__ import annotations

import urllib.parse
from collections import deque

import httptools

from ..errors import ObserverError
from .budget import UNBOUNDED, Allowance
from .events import (BodyTooLarge, Exchange, ExchangeDone, HttpEvent, JsonRpcSeen, ResponseStarted, SessionEndpoint, SseSeen,
                     Tunneled, Upgraded)
from .jsonrpc import Envelope, decode, decode_v2
from .sse import Comment, SseError, SseEvent, SseParser

MAX_JSON_BYTES = 1024 * 1024
#: Largest request or response head (request line or status line and headers).
MAX_HEAD_BYTES = 64 * 1024
#: Requests read but not yet answered (pipelining) before the observer gives up.
MAX_PIPELINE = 64
#: Bytes a paused side may hold: the client's after an upgrade proposal (until
#: its answer), the upstream's before the request they answer.
MAX_BUFFERED_BYTES = 64 * 1024
KNOWN_PATHS = ("/", "/mcp", "/sse", "/message", "/messages", "/stdio", "/health", "/config",
               # The Inspector v2 API (one origin for the page and its backend).
               "/api/config", "/api/mcp/connect", "/api/mcp/send", "/api/mcp/events", "/api/mcp/disconnect",
               "/api/servers/events")
#: Inspector v2 paths whose bodies or event streams carry its envelope around JSON-RPC.
V2_PATHS = (b"/api/mcp/send", b"/api/mcp/events")
KNOWN_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_METHOD_LABELS = {m.encode(): m for m in KNOWN_METHODS}
_HEAD_END = b"\r\n\r\n"
#: The lengths of the header names read (content-type 12, mcp-session-id 14,
#: mcp-method 10, upgrade 7, connection 10, traceparent 11): any other header
#: is passed over without lower-casing its name.
_REQUEST_HEADER_LENGTHS = frozenset({7, 10, 11, 12, 14})
_RESPONSE_HEADER_LENGTHS = frozenset({12, 14})
_JSON_TYPES: dict[bytes, bool] = {}
_PATH_LABELS: dict[bytes, str] = {}
#: Path labels and content types remembered (bounded: peers choose them).
_CACHE_BOUND = 1024


def _is_json(ctype: bytes) -> bool:
    known = _JSON_TYPES.get(ctype)
    if known is None:
        known = ctype.split(b";", 1)[0].strip().lower() == b"application/json"
        if len(_JSON_TYPES) < _CACHE_BOUND:
            _JSON_TYPES[ctype] = known
    return known


class HttpObserverError(ObserverError):
    """The peer's bytes are not HTTP/1.1 as llhttp reads it (or breach a bound).

    The message names the fault, never the peer's bytes: they may carry a
    cookie or a token (a malformed ``Cookie`` line is still a cookie).
    """


def _describe(exc: BaseException) -> str:
    """A parser's reason without any bytes it might quote."""
    text = str(exc)
    cut = min((i for i in (text.find(m) for m in ("bytearray(", "b'", 'b"', "'", '"')) if i >= 0), default=len(text))
    return text[:min(cut, 120)].rstrip(": ") or type(exc).__name__


def path_label(target: bytes) -> str:
    """A bounded label for a request target: known MCP/Inspector paths, else ``other``."""
    label = _PATH_LABELS.get(target)
    if label is not None:
        return label
    path = target.split(b"?", 1)[0].decode("latin-1")
    label = path if path in KNOWN_PATHS else "/api" if path.startswith("/api/") else "other"
    if len(_PATH_LABELS) < _CACHE_BOUND:
        _PATH_LABELS[target] = label
    return label


def trace_id(traceparent: bytes) -> str | None:
    """The trace id of a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``),
    or None when the value is not one."""
    parts = traceparent.strip().split(b"-")
    if len(parts) < 4 or len(parts[1]) != 32:
        return None
    value = parts[1].lower()
    if value.strip(b"0123456789abcdef") or value == b"0" * 32:
        return None
    return value.decode("ascii")


def jsonrpc_messages(body: bytes | bytearray | memoryview) -> list[Envelope]:
    """The JSON-RPC messages of a body (see ``jsonrpc.decode``)."""
    return decode(body)


class _Current:
    """An exchange whose response has not ended yet."""

    __slots__ = ("exchange", "method", "head_only", "switch", "upgrade", "request_json", "request_session",
                 "response_json", "sse", "informational", "v2", "legacy", "trace")

    def __init__(self, exchange: Exchange, method: bytes, switch: bool, upgrade: bytes, json: bool,
                 session: str | None) -> None:
        self.exchange = exchange
        self.method = method
        #: The response is read head-only: HEAD (no body), CONNECT (a tunnel after a 2xx).
        self.head_only = method == b"HEAD" or method == b"CONNECT"
        #: The request proposed a protocol switch (Upgrade + Connection: upgrade, or CONNECT).
        self.switch = switch
        self.upgrade = upgrade
        self.request_json: bytearray | None = bytearray() if json else None
        #: The session the request named: its responses correlate under it (an
        #: initialize answer assigns a session id only for later requests).
        self.request_session = session
        self.response_json: bytearray | None = None
        self.sse: SseParser | None = None
        self.informational = False
        #: An Inspector v2 API exchange: its JSON-RPC is inside v2's envelope.
        self.v2 = False
        #: The legacy HTTP+SSE transport: the session was named by ``?sessionId=``.
        self.legacy = False
        #: The trace id of the request's ``traceparent`` header.
        self.trace: str | None = None


class _RequestSide:
    """llhttp's callbacks for the client's bytes."""

    __slots__ = ("o", "url", "ctype", "session", "mcp_method", "upgrade", "connection", "trace")

    def __init__(self, observer: "HttpObserver") -> None:
        self.o = observer
        self.url = b""
        self.ctype = self.session = self.mcp_method = self.upgrade = self.connection = self.trace = None

    def on_message_begin(self) -> None:
        if len(self.o._queue) >= MAX_PIPELINE:
            raise HttpObserverError(f"more than {MAX_PIPELINE} requests unanswered")
        self.url = b""
        self.ctype = self.session = self.mcp_method = self.upgrade = self.connection = self.trace = None
        self.o._client_in_head = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) not in _REQUEST_HEADER_LENGTHS:
            return
        name = name.lower()
        if name == b"content-type":
            self.ctype = value
        elif name == b"mcp-session-id":
            self.session = value.decode("latin-1")
        elif name == b"mcp-method":
            self.mcp_method = value.decode("latin-1")
        elif name == b"upgrade":
            self.upgrade = value
        elif name == b"connection":
            self.connection = value.lower()
        elif name == b"traceparent":
            self.trace = trace_id(value)

    def on_headers_complete(self) -> None:
        o = self.o
        o._client_in_head = False
        o._client_head_bytes = 0
        method = o._requests.get_method()
        target = self.url
        session = self.session
        legacy = False
        if session is None and b"?" in target:
            query = urllib.parse.parse_qs(target.split(b"?", 1)[1].decode("latin-1"))
            session = (query.get("sessionId") or [None])[0]
            legacy = session is not None
        exchange = Exchange(_METHOD_LABELS.get(method, "OTHER"), path_label(target), None, o._now, None, None, 0, 0,
                            "", session, self.mcp_method)
        upgrade = self.upgrade
        if upgrade is None:
            upgrade = b""
            switch = method == b"CONNECT"
        else:
            switch = method == b"CONNECT" or b"upgrade" in (self.connection or b"")
        ctype = self.ctype
        current = _Current(exchange, method, switch, upgrade, ctype is not None and _is_json(ctype), session)
        if target.startswith(V2_PATHS):
            current.v2 = True
        current.legacy = legacy
        current.trace = self.trace
        o._queue.append(current)
        o._last_request = current

    def on_body(self, body: bytes) -> None:
        current = self.o._last_request
        current.exchange.request_bytes += len(body)
        if current.request_json is not None:
            current.request_json = self.o._collect(current.request_json, body, "client")

    def on_message_complete(self) -> None:
        o = self.o
        current = o._last_request
        buffer = current.request_json
        if buffer:
            if current.v2:
                session, messages = decode_v2(buffer)
                transport = "inspector-v2"
                if session is not None:
                    current.request_session = current.exchange.session = session
            else:
                messages, transport = decode(buffer), "legacy" if current.legacy else "http"
            size, trace = len(buffer), current.trace
            for message in messages:
                current.exchange.jsonrpc_requests += 1
                o._out.append(JsonRpcSeen("client", message, o._now, current.exchange.session, transport, size,
                                          trace))
            o._done_with(buffer)
        current.request_json = None


class _ResponseSide:
    """llhttp's callbacks for the upstream's bytes."""

    __slots__ = ("o", "ctype", "session")

    def __init__(self, observer: "HttpObserver") -> None:
        self.o = observer
        self.ctype = self.session = None

    def on_message_begin(self) -> None:
        o = self.o
        if not o._queue:
            raise HttpObserverError("upstream sent a response with no request")
        self.ctype = self.session = None
        o._in_response = True
        o._upstream_in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) not in _RESPONSE_HEADER_LENGTHS:
            return
        name = name.lower()
        if name == b"content-type":
            self.ctype = value
        elif name == b"mcp-session-id":
            self.session = value

    def on_headers_complete(self) -> None:
        o = self.o
        o._upstream_in_head = False
        o._upstream_head_bytes = 0
        current = o._queue[0]
        status = o._responses.get_status_code()
        current.informational = 100 <= status < 200 and status != 101
        if current.informational:
            return
        o._response_head(current, status, self.ctype, self.session)

    def on_body(self, body: bytes) -> None:
        o = self.o
        current = o._queue[0]
        current.exchange.response_bytes += len(body)
        if current.sse is not None:
            o._sse(current, body)
        elif current.response_json is not None:
            current.response_json = o._collect(current.response_json, body, "upstream")

    def on_message_complete(self) -> None:
        o = self.o
        o._in_response = False
        current = o._queue[0]
        if current.informational:  # 100 Continue and the like: the answer is still to come
            current.informational = False
            return
        o._keep_alive = o._responses.should_keep_alive()
        o._response_done(current)


class HttpObserver:
    """The exchanges of one HTTP/1.1 connection, read from both directions.

    Owns the two llhttp parsers, the queue of exchanges awaiting their
    answer, the bytes held while a side waits, and the bodies being
    collected for JSON-RPC; what it buffers is charged to ``memory`` (the
    worker's inspection budget) after every step.
    """

    def __init__(self, memory: Allowance | None = None) -> None:
        self.memory = memory or UNBOUNDED.allowance()
        self._requests = httptools.HttpRequestParser(_RequestSide(self))
        self._responses = httptools.HttpResponseParser(_ResponseSide(self))
        #: Exchanges whose request has started and whose response has not ended.
        self._queue: deque[_Current] = deque()
        self._last_request: _Current | None = None
        #: Events of the step in progress (the callbacks append to it).
        self._out: list[HttpEvent] = []
        self._now = 0.0
        #: Bytes of the JSON bodies being collected (request and response).
        self._json_bytes = 0
        #: Client bytes after an upgrade proposal, until its answer (None: not paused).
        self._client_held: bytearray | None = None
        #: Upstream bytes not yet given to a parser (before their request, or a
        #: head read head-only that is not complete yet).
        self._upstream_held = bytearray()
        self._in_response = False
        self._client_in_head = False
        self._upstream_in_head = False
        self._client_head_bytes = 0
        self._upstream_head_bytes = 0
        #: Bytes fed one at a time to stop exactly at a response's end (see _feed_responses).
        self._careful_bytes = 0
        #: The exchange whose response ended last (what a 101 answered).
        self._answered: _Current | None = None
        #: The response ending now keeps the connection open; one did not: no more bytes.
        self._keep_alive = True
        self._upstream_closed = False
        self.upgraded = False
        #: The legacy SSE stream's session, once its endpoint event was seen.
        self.stream_session: str | None = None

    # -- client side ----------------------------------------------------------------------

    def feed_client(self, data: bytes, now: float) -> list[HttpEvent]:
        if not data:  # (EOF is not fed)
            return []
        if self.upgraded:
            return [Tunneled("client", bytes(data))]
        self._now = now
        self._out = out = []
        if self._client_held is not None:  # paused: the proposal's answer decides what this is
            self._client_held += data
            if len(self._client_held) > MAX_BUFFERED_BYTES:
                raise HttpObserverError("client kept sending while its upgrade was unanswered")
        else:
            self._feed_requests(data)
        self._account()
        return out

    def _feed_requests(self, data: bytes | bytearray | memoryview) -> None:
        in_head = self._client_in_head
        try:
            self._requests.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The proposal's head is read; what follows waits for its answer.
            self._client_held = bytearray(memoryview(data)[exc.args[0]:])
            if len(self._client_held) > MAX_BUFFERED_BYTES:
                raise HttpObserverError("client kept sending while its upgrade was unanswered") from None
        except httptools.HttpParserError as exc:
            raise self._parser_error("client", exc) from None
        if in_head and self._client_in_head:  # the whole chunk was (part of) one head
            self._client_head_bytes += len(data)
            if self._client_head_bytes > MAX_HEAD_BYTES:
                raise HttpObserverError("request head too large")

    # -- upstream side --------------------------------------------------------------------

    def feed_upstream(self, data: bytes, now: float) -> list[HttpEvent]:
        if not data:
            return []
        if self.upgraded:
            return [Tunneled("upstream", bytes(data))]
        self._now = now
        self._out = out = []
        self._feed_responses(data)
        self._account()
        return out

    def _feed_responses(self, data: bytes | bytearray | memoryview) -> None:
        queue = self._queue
        if (len(queue) == 1 and not queue[0].head_only and not self._upstream_held and not self._upstream_closed
                and not self._upstream_in_head):
            # The usual step: one exchange waiting, its response framed by llhttp.
            try:
                self._responses.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self._switched(memoryview(data)[exc.args[0]:])
            except httptools.HttpParserError as exc:
                raise self._parser_error("upstream", exc) from None
            else:
                if self._upstream_in_head:  # a head began and is not complete: count it
                    self._upstream_head_bytes += len(data)
                    if self._upstream_head_bytes > MAX_HEAD_BYTES:
                        raise HttpObserverError("response head too large")
            return
        if self._upstream_held:
            self._upstream_held += data
            data = bytes(self._upstream_held)
            self._upstream_held.clear()
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n and not self.upgraded:
            if self._upstream_closed:
                raise HttpObserverError("upstream: data after `Connection: close`")
            if not self._queue and not self._in_response:
                self._hold_upstream(view[pos:], "upstream sent a response with no request")
                return
            current = self._queue[0]
            if not self._in_response and current.head_only:
                pos = self._head_only(current, view, pos)
                if pos < 0:
                    return
                continue
            # llhttp frames it.  If the next exchange's response is to be read
            # head-only, stop exactly where this response ends: feed it a byte
            # at a time (pipelining of HEAD/CONNECT behind another response is
            # rare; bounded).
            careful = len(self._queue) > 1 and any(q.head_only for q in self._queue)
            if careful:
                self._careful_bytes += 1
                if self._careful_bytes > MAX_BUFFERED_BYTES:
                    raise HttpObserverError("a HEAD or CONNECT pipelined behind a large response")
            end = pos + 1 if careful else n
            in_head = self._upstream_in_head
            try:
                self._responses.feed_data(view[pos:end])
            except httptools.HttpParserUpgrade as exc:
                self._switched(view[pos + exc.args[0]:])
                return
            except httptools.HttpParserError as exc:
                raise self._parser_error("upstream", exc) from None
            if in_head and self._upstream_in_head:  # the whole piece was (part of) one head
                self._upstream_head_bytes += end - pos
                if self._upstream_head_bytes > MAX_HEAD_BYTES:
                    raise HttpObserverError("response head too large")
            pos = end

    def _head_only(self, current: _Current, view: memoryview, pos: int) -> int:
        """Read the response to a HEAD or CONNECT by its head alone; the
        position after it, or -1 when the head is not complete yet."""
        end = bytes(view[pos:pos + MAX_HEAD_BYTES + 4]).find(_HEAD_END)
        if end < 0:
            self._hold_upstream(view[pos:], "response head too large")
            return -1
        head = bytes(view[pos:pos + end + 4])
        side = _HeadOnly()
        parser = httptools.HttpResponseParser(side)
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # a 101 to a HEAD: the head is what is read either way
        except httptools.HttpParserError as exc:
            raise self._parser_error("upstream", exc) from None
        after = pos + end + 4
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return after  # informational: the answer is still to come
        self._keep_alive = parser.should_keep_alive()
        if current.method == b"CONNECT" and not 200 <= status < 300:
            current.head_only = False  # refused: a normal response, with a body
            return pos
        self._response_head(current, status, side.ctype, side.session)
        self._response_done(current)
        if current.method == b"CONNECT":
            self._switched(view[after:])
            return len(view)
        return after

    def _hold_upstream(self, data: memoryview, fault: str) -> None:
        self._upstream_held += data
        if len(self._upstream_held) > MAX_BUFFERED_BYTES:
            raise HttpObserverError(fault)

    # -- events ---------------------------------------------------------------------------

    def _response_head(self, current: _Current, status: int, ctype: bytes | None, session: bytes | None) -> None:
        exchange = current.exchange
        exchange.status = status
        exchange.headers_at = self._now
        if session is not None and not exchange.session:
            exchange.session = session.decode("latin-1")
        content_type = ctype.split(b";", 1)[0].strip().lower().decode("latin-1") if ctype else ""
        exchange.content_type = content_type
        if content_type == "text/event-stream":
            current.sse = SseParser()
        elif content_type == "application/json":
            current.response_json = bytearray()
        self._out.append(ResponseStarted(exchange))

    def _response_done(self, current: _Current) -> None:
        exchange = current.exchange
        exchange.ended = self._now
        buffer = current.response_json
        if buffer:
            messages, transport = (decode_v2(buffer)[1], "inspector-v2") if current.v2 else (
                decode(buffer), "legacy" if current.legacy else "http")
            size = len(buffer)
            for message in messages:
                self._out.append(JsonRpcSeen("upstream", message, self._now, current.request_session, transport,
                                             size))
            self._done_with(buffer)
        current.response_json = None
        self._queue.popleft()
        self._careful_bytes = 0
        if not self._keep_alive:
            self._upstream_closed = True
        self._keep_alive = True
        self._answered = current
        self._out.append(ExchangeDone(exchange))
        status = exchange.status or 0
        accepted = status == 101 or (current.method == b"CONNECT" and 200 <= status < 300)
        if current.switch and not accepted and self._client_held is not None:
            # The switch was declined: what the client sent meanwhile is the next request.
            held, self._client_held = self._client_held, None
            if held:
                self._feed_requests(held)

    def _switched(self, upstream_trailing: memoryview) -> None:
        """The connection is another protocol from here on: a WebSocket if the
        answered request proposed one (and got its 101), else a tunnel."""
        answered = self._answered
        websocket = (answered is not None and answered.exchange.status == 101
                     and answered.upgrade.lower() == b"websocket")
        self.upgraded = True
        client = bytes(self._client_held or b"")
        self._client_held = None
        self._out.append(Upgraded(client, bytes(upstream_trailing), self._now, websocket))

    def _parser_error(self, side: str, exc: httptools.HttpParserError) -> BaseException:
        cause = exc.__context__
        if isinstance(cause, HttpObserverError):
            return cause
        if cause is not None and not isinstance(cause, httptools.HttpParserError):
            return cause  # a defect in a callback of ours: not the peer's fault
        return HttpObserverError(f"{side}: {_describe(exc)}")

    def _sse(self, current: _Current, data: bytes) -> None:
        out = self._out
        try:
            events = current.sse.feed(data)  # type: ignore[union-attr]
        except SseError:
            current.sse = None
            return
        for event in events:
            if isinstance(event, Comment):
                out.append(SseSeen("comment", self._now, keepalive=True))
                continue
            assert isinstance(event, SseEvent)
            current.exchange.sse_events += 1
            out.append(SseSeen(event.event, self._now))
            if event.event == "endpoint":
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(event.data).query)
                if query.get("sessionId"):
                    self.stream_session = query["sessionId"][0]
                    out.append(SessionEndpoint(self.stream_session))
            elif event.data[:1] in ("{", "["):
                session = current.request_session if current.request_session is not None else self.stream_session
                data = event.data.encode()
                if current.v2:
                    for message in decode_v2(data)[1]:
                        out.append(JsonRpcSeen("upstream", message, self._now, session, "inspector-v2", len(data)))
                    continue
                transport = "sse" if current.request_session is not None and not current.legacy else (
                    "legacy" if self.stream_session is not None else "sse")
                for message in decode(data):
                    out.append(JsonRpcSeen("upstream", message, self._now, session, transport, len(data)))

    # -- bounded buffers --------------------------------------------------------------------

    def _collect(self, buffer: bytearray, data: bytes, origin: str) -> bytearray | None:
        """Collect a JSON body up to MAX_JSON_BYTES; beyond that, stop (None):
        the body is counted (``BodyTooLarge``), never parsed."""
        if len(buffer) + len(data) > MAX_JSON_BYTES:
            self._json_bytes -= len(buffer)
            self._out.append(BodyTooLarge(origin))
            return None
        buffer += data
        self._json_bytes += len(data)
        return buffer

    def _done_with(self, buffer: bytearray | None) -> None:
        if buffer:
            self._json_bytes -= len(buffer)

    def _account(self) -> None:
        """Charge what is buffered now to the inspection budget."""
        level = self._json_bytes
        if self._upstream_held:
            level += len(self._upstream_held)
        if self._client_held:
            level += len(self._client_held)
        queue = self._queue
        if queue and queue[0].sse is not None:
            level += queue[0].sse.buffered
        if level or self.memory.held:
            self.memory.hold(level)

    def abort(self, now: float) -> list[HttpEvent]:
        """The connection ended: the exchanges still under way (an event
        stream the client closed, a request never answered) end ``aborted``."""
        out: list[HttpEvent] = []
        for current in self._queue:
            exchange = current.exchange
            exchange.aborted = True
            exchange.ended = now
            out.append(ExchangeDone(exchange))
        self._queue.clear()
        return out

    def close(self) -> None:
        """Drop every buffer and give the budget back (the connection ended)."""
        self._queue.clear()
        self._last_request = self._answered = None
        # The parsers hold their callbacks, which hold this observer: cut the circle.
        self._requests = self._responses = None  # type: ignore[assignment]
        self._upstream_held = bytearray()
        self._client_held = None
        self._json_bytes = 0
        self.memory.release()


class _HeadOnly:
    """Callbacks for a response read by its head alone."""

    __slots__ = ("ctype", "session")

    def __init__(self) -> None:
        self.ctype = self.session = None

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.ctype = value
        elif name == b"mcp-session-id":
            self.session = value
