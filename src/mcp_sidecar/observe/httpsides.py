"""llhttp's callbacks for one HTTP/1.1 connection: the request and the
response being read, and the bounds of the HTTP observer (http.py).

Rules this module keeps:

* The callbacks only record what llhttp reports on the ``HttpObserver``
  that owns them; the observer decides the events.  A header is passed over
  unless its name has the length of one that is read (no lower-casing for
  the rest).
* Nothing derived from a peer is unbounded: pipelined requests
  (``MAX_PIPELINE``), heads (``MAX_HEAD_BYTES``), what a paused side holds
  (``MAX_BUFFERED_BYTES``), JSON bodies (``MAX_JSON_BYTES``).
"""

from __future__ import annotations

from typing import Any

from ..errors import ObserverError
from .events import Exchange, JsonRpcSeen
from .jsonrpc import UNSET, bounded_text
from .mcphttp import body_messages, is_inspector_v2, legacy_session, path_label, trace_context
from .sse import SseParser

MAX_JSON_BYTES = 1024 * 1024
#: Largest request or response head (request line or status line and headers).
MAX_HEAD_BYTES = 64 * 1024
#: Requests read but not yet answered (pipelining) before the observer gives up.
MAX_PIPELINE = 64
#: Bytes a paused side may hold: the client's after an upgrade proposal (until
#: its answer), the upstream's before the request they answer.
MAX_BUFFERED_BYTES = 64 * 1024
#: Bytes of a response's Content-Type kept: the peer's header may be as long as a
#: head, a legal ``type/subtype`` is at most 127 + 1 + 127 (RFC 6838).
MAX_MEDIA_TYPE = 255
KNOWN_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_METHOD_LABELS = {m.encode(): m for m in KNOWN_METHODS}
HEAD_END = b"\r\n\r\n"
#: The lengths of the header names read (content-type 12, mcp-session-id 14,
#: mcp-method 10, mcp-name 8, mcp-protocol-version 20, upgrade 7, connection
#: 10, tracestate 10, traceparent 11, last-event-id 13; in responses content-type, mcp-session-id,
#: content-length 14 and transfer-encoding 17): any other header is passed
#: over without lower-casing its name.
_REQUEST_HEADER_LENGTHS = frozenset({7, 8, 10, 11, 12, 13, 14, 20})
_RESPONSE_HEADER_LENGTHS = frozenset({12, 14, 17})
#: Longest MCP header value kept (Mcp-Name, MCP-Protocol-Version): longer ones are cut.
MAX_MCP_HEADER_CHARS = 1024
_JSON_TYPES: dict[bytes, bool] = {}
#: Content types remembered (bounded: peers choose them).
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


class Current:
    """An exchange whose response has not ended yet."""

    __slots__ = (
        "answered_at",
        "chunked",
        "close_delimited",
        "exchange",
        "head_only",
        "informational",
        "legacy",
        "method",
        "request_ids",
        "request_json",
        "request_session",
        "response_json",
        "sse",
        "sse_began",
        "switch",
        "trace",
        "upgrade",
        "v2",
    )

    def __init__(
        self, exchange: Exchange, method: bytes, switch: bool, upgrade: bytes, json: bool, session: str | None
    ) -> None:
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
        #: When the event being assembled began (None: between events).
        self.sse_began: float | None = None
        self.informational = False
        #: An Inspector v2 API exchange: its JSON-RPC is inside v2's envelope.
        self.v2 = False
        #: The legacy HTTP+SSE transport: the session was named by ``?sessionId=``.
        self.legacy = False
        #: The request's trace context headers (mcphttp.trace_context), if valid.
        self.trace: str | None = None
        #: The ids of the JSON-RPC requests in the body (an error with a null
        #: id answers the one request of its exchange).
        self.request_ids: list[Any] = []
        exchange.request_ids = self.request_ids
        #: The response's body runs until the upstream closes (neither
        #: Content-Length nor chunked): its end is the upstream's EOF.
        self.close_delimited = False
        #: When the last answer the request awaited arrived on its event stream.
        self.answered_at: float | None = None
        #: The response's body is chunked (Transfer-Encoding: chunked).
        self.chunked = False


class RequestSide:
    """llhttp's callbacks for the client's bytes."""

    __slots__ = (
        "connection",
        "ctype",
        "last_event_id",
        "mcp_method",
        "mcp_name",
        "o",
        "protocol_version",
        "session",
        "traceparent",
        "tracestate",
        "upgrade",
        "url",
    )

    def __init__(self, observer: Any) -> None:
        self.o = observer
        self.url = b""
        self.ctype: bytes | None = None
        self.session: str | None = None
        self.mcp_method: str | None = None
        self.mcp_name: str | None = None
        self.protocol_version: str | None = None
        self.last_event_id: str | None = None
        self.upgrade: bytes | None = None
        self.connection: bytes | None = None
        #: The W3C trace context headers (observe/mcphttp.trace_context reads them once the head is in).
        self.traceparent: bytes | None = None
        self.tracestate: bytes | None = None

    def on_message_begin(self) -> None:
        if len(self.o._queue) >= MAX_PIPELINE:
            raise HttpObserverError(f"more than {MAX_PIPELINE} requests unanswered")
        self.url = b""
        self.ctype = self.session = self.mcp_method = self.upgrade = self.connection = self.traceparent = None
        self.mcp_name = self.protocol_version = self.last_event_id = self.tracestate = None
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
            self.session = bounded_text(value.decode("latin-1"))
        elif name == b"mcp-method":
            self.mcp_method = value[:MAX_MCP_HEADER_CHARS].decode("latin-1")
        elif name == b"mcp-name":
            self.mcp_name = value[:MAX_MCP_HEADER_CHARS].decode("latin-1")
        elif name == b"mcp-protocol-version":
            self.protocol_version = value[:MAX_MCP_HEADER_CHARS].decode("latin-1")
        elif name == b"upgrade":
            self.upgrade = value
        elif name == b"connection":
            self.connection = value.lower()
        elif name == b"traceparent":
            self.traceparent = value
        elif name == b"tracestate":
            self.tracestate = value
        elif name == b"last-event-id":
            self.last_event_id = value[:MAX_MCP_HEADER_CHARS].decode("latin-1")

    def on_headers_complete(self) -> None:
        o = self.o
        o._client_in_head = False
        o._client_head_bytes = 0
        method = o._requests.get_method()
        target = self.url
        session = self.session
        legacy = False
        if session is None:
            session = legacy_session(target)
            legacy = session is not None
        exchange = Exchange(
            _METHOD_LABELS.get(method, "OTHER"),
            path_label(target),
            None,
            o._now,
            None,
            None,
            0,
            0,
            "",
            session,
            self.mcp_method,
        )
        exchange.protocol_version = self.protocol_version
        exchange.mcp_name = self.mcp_name
        exchange.last_event_id = self.last_event_id
        v2 = is_inspector_v2(target)
        if legacy or v2:
            exchange.transport = "inspector-v2" if v2 else "legacy"
        upgrade = self.upgrade
        if upgrade is None:
            upgrade = b""
            switch = method == b"CONNECT"
        else:
            switch = method == b"CONNECT" or b"upgrade" in (self.connection or b"")
        ctype = self.ctype
        current = Current(exchange, method, switch, upgrade, ctype is not None and _is_json(ctype), session)
        if v2:
            current.v2 = True
        current.legacy = legacy
        if self.traceparent is not None:
            current.trace = trace_context(self.traceparent, self.tracestate)
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
            session, messages, transport = body_messages(buffer, v2=current.v2, legacy=current.legacy)
            if session is not None:
                current.request_session = current.exchange.session = session
            size, trace, exchange = len(buffer), current.trace, current.exchange
            requests = 0
            for message in messages:
                exchange.jsonrpc_requests += 1
                if message.method is not UNSET and message.id is not UNSET:
                    requests += 1
                    current.request_ids.append(message.id)
                    if message.method == "subscriptions/listen":
                        exchange.listen_id = message.id
                o._out.append(
                    JsonRpcSeen("client", message, o._now, exchange.session, transport, size, trace, exchange)
                )
            exchange.notifications_only = bool(messages) and not requests
            o._done_with(buffer)
        current.request_json = None


class ResponseSide:
    """llhttp's callbacks for the upstream's bytes."""

    __slots__ = ("chunked", "ctype", "framed", "o", "session")

    def __init__(self, observer: Any) -> None:
        self.o = observer
        self.ctype: bytes | None = None
        self.session: bytes | None = None
        #: The response named its framing (Content-Length or Transfer-Encoding), chunked or not.
        self.framed = False
        self.chunked = False

    def on_message_begin(self) -> None:
        o = self.o
        if not o._queue:
            raise HttpObserverError("upstream sent a response with no request")
        self.ctype = self.session = None
        self.framed = self.chunked = False
        o._in_response = True
        o._upstream_in_head = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) not in _RESPONSE_HEADER_LENGTHS:
            return
        name = name.lower()
        if name == b"content-type":
            self.ctype = value[:MAX_MEDIA_TYPE]
        elif name == b"mcp-session-id":
            self.session = value
        elif name == b"content-length":
            self.framed = True
        elif name == b"transfer-encoding":
            self.framed = True
            self.chunked = self.chunked or b"chunked" in value.lower()

    def on_chunk_header(self) -> None:
        self.o._in_chunk = True

    def on_chunk_complete(self) -> None:
        self.o._in_chunk = False

    def on_headers_complete(self) -> None:
        o = self.o
        o._upstream_in_head = False
        o._upstream_head_bytes = 0
        current = o._queue[0]
        status = o._responses.get_status_code()
        current.informational = 100 <= status < 200 and status != 101
        if current.informational:
            return
        current.close_delimited = not self.framed and status not in (204, 304) and status != 101
        current.chunked = self.chunked
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


class HeadOnly:
    """Callbacks for a response read by its head alone."""

    __slots__ = ("ctype", "session")

    def __init__(self) -> None:
        self.ctype: bytes | None = None
        self.session: bytes | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.ctype = value[:MAX_MEDIA_TYPE]
        elif name == b"mcp-session-id":
            self.session = value


def describe_fault(exc: BaseException) -> str:
    """A parser's reason without any bytes it might quote."""
    text = str(exc)
    cut = min((i for i in (text.find(m) for m in ("bytearray(", "b'", 'b"', "'", '"')) if i >= 0), default=len(text))
    return text[: min(cut, 120)].rstrip(": ") or type(exc).__name__


def keepalive_insert(current: Current, in_chunk: bool, tail: bytes) -> bytes | None:
    """What may go to the client between what the upstream sent of an event
    stream and what it sends next, changing no event: a comment line when the
    stream is between two events -- as a chunk of its own when chunked, and
    only between two chunks (not inside one, nor inside the next one's size
    line) -- and nothing when a Content-Length fixes the body."""
    sse = current.sse
    if sse is None or not sse.at_boundary:
        return None
    line = sse.comment_line()
    if current.chunked:
        if in_chunk or tail[-2:] != b"\r\n":
            return None
        return b"%x\r\n%s\r\n" % (len(line), line)
    return line if current.close_delimited else None
