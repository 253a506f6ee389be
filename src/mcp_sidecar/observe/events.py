"""What the sans-io observers report: typed, immutable events.

Rules this module keeps:

* Events are slotted records that nobody mutates once returned; an observer
  returns a list of them (the ``HttpEvent`` union for the HTTP observer),
  never ``list[Any]``.  They are not ``frozen=True``: a frozen dataclass is
  built through ``object.__setattr__`` per field, 0.65 us against 0.17 us
  for five fields (measured), and several are built per exchange and per
  frame on the forwarding thread.
* ``Exchange`` is the one mutable record: the request/response pair being
  read, which ``ResponseStarted`` and ``ExchangeDone`` refer to (complete
  once ``ExchangeDone`` is out).
* No I/O, no clock, no metrics: the caller decides what an event means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
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
    #: The connection ended before the response did (a stream the client
    #: closed, a request never answered): ``ended`` is when it ended.
    aborted: bool = False
    #: How MCP travels on this exchange: ``http`` (streamable HTTP), ``legacy``
    #: (a 2024-11-05 POST naming ``?sessionId=``), ``inspector-v2`` (its API).
    transport: str = "http"
    #: The request's MCP headers as sent (``MCP-Protocol-Version``, ``Mcp-Name``;
    #: ``mcp_method`` above is ``Mcp-Method``), bounded in length.
    protocol_version: str | None = None
    mcp_name: str | None = None
    #: The request body held only notifications or responses (streamable HTTP
    #: answers those 202).
    notifications_only: bool = False
    #: The id of the ``subscriptions/listen`` request the body carried, if it did.
    listen_id: Any = None
    #: The response is a long-lived event stream, and which kind: ``listen``
    #: (a ``subscriptions/listen`` answered by a stream), ``legacy-sse``
    #: (the 2024-11-05 transport's ``GET``), ``get`` (streamable HTTP's
    #: standalone ``GET``), ``inspector-v2`` (its events); None otherwise.
    stream: str | None = None
    #: The request's ``Last-Event-ID`` (a stream resumed), bounded in length.
    last_event_id: str | None = None
    #: The MCP headers as a recording keeps them (tap.http_facts), once worked out.
    recorded_headers: dict[str, str] | None = None
    #: The ids of the JSON-RPC requests in the body, as the observer found them.
    request_ids: list[Any] | None = None


@dataclass(slots=True)
class ExchangeDone:
    """A request and its response are complete (or the connection switched protocols)."""

    exchange: Exchange


@dataclass(slots=True)
class ResponseStarted:
    """Response headers arrived (the first byte of an answer)."""

    exchange: Exchange


@dataclass(slots=True)
class SseSeen:
    """A server-sent event (or a comment, ``keepalive``) in a response."""

    event: str
    at: float
    keepalive: bool = False


@dataclass(slots=True)
class JsonRpcSeen:
    """A JSON-RPC message; ``origin`` is the side that sent it."""

    origin: str  # "client" | "upstream"
    message: Any  # a jsonrpc.Envelope
    at: float
    session: str | None
    #: How it travelled: "http" (a JSON body), "sse" (an event stream of
    #: streamable HTTP), "legacy" (the 2024-11-05 HTTP+SSE transport: a POST
    #: naming ``?sessionId=``, or an event of the stream that announced it),
    #: "ws" (a frame), "inspector-v2" (inside the Inspector v2 API's envelope).
    transport: str
    #: Bytes of the body, event or frame that carried it (a batch's messages share it).
    size: int = 0
    #: The request's W3C ``traceparent`` header (mcphttp.trace_context), if it had one.
    trace: str | None = None
    #: The HTTP exchange that carried it (its MCP headers), if any.
    exchange: Exchange | None = None
    #: When its first byte arrived (an event or a body spanning chunks); None: at ``at``.
    began: float | None = None


@dataclass(slots=True)
class BodyTooLarge:
    """A JSON body went past ``MAX_JSON_BYTES``: counted, not parsed (its
    messages go uncorrelated; the bytes were forwarded regardless)."""

    origin: str  # "client" | "upstream"


@dataclass(slots=True)
class SessionEndpoint:
    """Legacy HTTP+SSE: the stream announced its POST endpoint (session id)."""

    session: str


@dataclass(slots=True)
class Upgraded:
    """The connection switched protocols; the bytes that followed the handshake on each side."""

    client_trailing: bytes
    upstream_trailing: bytes
    at: float
    #: False for anything but WebSocket (CONNECT, h2c, ...): opaque from here on.
    websocket: bool = True


@dataclass(slots=True)
class Tunneled:
    """Bytes after the upgrade, fed to this observer anyway (they belong to
    the new protocol: the caller hands them to its scanner)."""

    side: str
    data: bytes


#: Everything ``HttpObserver.feed_client``/``feed_upstream`` may return.
HttpEvent = (
    ExchangeDone | ResponseStarted | SseSeen | JsonRpcSeen | SessionEndpoint | Upgraded | Tunneled | BodyTooLarge
)


# --- what ConnectionObserver adds (observe/connection.py) -----------------------------------


@dataclass(slots=True)
class HttpDetected:
    """The client's first bytes are an HTTP/1.x request line (``protocol =
    "auto"``): HTTP events follow."""


@dataclass(slots=True)
class Opaque:
    """The connection is not HTTP (or switched to a protocol other than
    WebSocket): no more observation, the bytes flow as they are."""


@dataclass(slots=True)
class WebSocketOpened:
    """A 101 switched the connection to WebSocket: frames from here on."""


@dataclass(slots=True)
class FramesCounted:
    """WebSocket frames of one chunk of ``side``, by opcode: [frames, payload bytes]."""

    side: str
    counts: dict[str, list[int]]


@dataclass(slots=True)
class NotificationSeen:
    """A WebSocket text message that is a JSON-RPC notification (no ``id``):
    nothing to correlate, so not decoded; ``payload`` for whoever wants it."""

    side: str
    payload: bytes
    progress: bool


@dataclass(slots=True)
class PingAnswered:
    """A peer's ping met its pong (same payload, the other side)."""

    rtt_s: float


@dataclass(slots=True)
class KeepaliveAnswered:
    """The proxy's own keepalive ping towards ``side`` was answered."""

    side: str
    rtt_s: float


@dataclass(slots=True)
class WebSocketClosing:
    """The first close frame, from ``side``: its code and reason (the peer's words, unredacted)."""

    side: str
    code: int | None
    reason: str | None


#: Everything ``ConnectionObserver`` may return.
ConnectionEvent = (
    ExchangeDone
    | ResponseStarted
    | SseSeen
    | JsonRpcSeen
    | SessionEndpoint
    | Upgraded
    | Tunneled
    | BodyTooLarge
    | HttpDetected
    | Opaque
    | WebSocketOpened
    | FramesCounted
    | NotificationSeen
    | PingAnswered
    | KeepaliveAnswered
    | WebSocketClosing
)


@dataclass(slots=True)
class FrameHeader:
    """A WebSocket frame whose header is read (its payload may still be
    arriving): what the keepalive needs to know where frames begin and end."""

    opcode: str
    fin: bool
    length: int
    masked: bool
    compressed: bool
    #: Stream offsets: where the frame's header starts and its payload ends.
    start: int
    end: int


@dataclass(slots=True)
class Frame:
    """A complete WebSocket frame, as ``FrameScanner`` reports it."""

    opcode: str
    fin: bool
    length: int
    masked: bool
    compressed: bool
    #: The unmasked payload for control frames; for a complete text message
    #: (fin, small enough, uncompressed) the whole message's text.
    payload: bytes | None = None
    close_code: int | None = None
    close_reason: str | None = None
    #: Stream offsets: where the frame's header starts and its payload ends.
    start: int = 0
    end: int = 0


@dataclass(slots=True)
class McpOutcome:
    """What came of one MCP request: its method label, status (ok, an error
    code, ``tool_error``, cancelled, timeout), latency and who asked."""

    method: str
    status: str
    duration_s: float | None
    origin: str
    #: How the request travelled (a bounded label): http, legacy-sse, websocket, inspector-v2.
    transport: str = "http"
    #: For the request log and the tap: the request's id, its session key,
    #: its error code, the sizes of request and response, its trace id.
    request_id: Any = None
    session: str | None = None
    error_code: Any = None
    request_bytes: int = 0
    response_bytes: int = 0
    trace: str | None = None
    #: Bounded labels (observe/mcpmeta.py): the protocol version the request
    #: was made under, and the tool, prompt or resource it was about ("" if none).
    protocol_version: str = "unknown"
    target: str = ""
    #: An ``initialize`` answered: the version the server chose (for the session).
    negotiated: str | None = None
    #: A method outside the spec (``method`` is then ``other``): its own name, cut
    #: to 128 characters, for the tap only (never a label).
    name: str | None = None
    #: Who was slow (observe/slowness.py): network, server, transfer and client
    #: seconds, when the answer was seen where its request was (None otherwise).
    parts: tuple[float, float, float, float] | None = None
    #: The upstream that answered (host:port), where the answer came on its request's connection.
    upstream: str | None = None
    #: A request that got no answer (``timeout``): how long it was waited for (its span's length).
    waited_s: float | None = None
