"""MCP over HTTP: which transport era a request, a body or an event belongs to (sans-io).

The HTTP framer (http.py) knows HTTP/1.1; what a request or an event means
for MCP is decided here, once:

* streamable HTTP (2025-03-26 and later): JSON bodies, and the event stream
  that answers a POST (transport ``http`` for a body, ``sse`` for an event);
* the 2024-11-05 HTTP+SSE transport (``legacy``): POSTs that name
  ``?sessionId=`` (or ``?session_id=``, the Python SDK's), answered on the ``GET`` event stream that announced that
  session in its ``endpoint`` event;
* the Inspector v2 API (``inspector-v2``): JSON-RPC wrapped in its own
  envelope on ``/api/mcp/send`` and ``/api/mcp/events``.

Rules this module keeps:

* Labels derived from what peers send are bounded: ``path_label`` knows
  the MCP and Inspector paths, everything else is ``other`` (or ``/api``);
  the caches are bounded too.
* No I/O, no clock: bytes in, values out.
"""

from __future__ import annotations

import urllib.parse

from .jsonrpc import Envelope, MetaFacts, bounded_text, decode, decode_v2

KNOWN_PATHS = (
    "/",
    "/mcp",
    "/sse",
    "/message",
    "/messages",
    "/stdio",
    "/health",
    "/config",
    # The Inspector v2 API (one origin for the page and its backend).
    "/api/config",
    "/api/mcp/connect",
    "/api/mcp/send",
    "/api/mcp/events",
    "/api/mcp/disconnect",
    "/api/servers/events",
)
#: Inspector v2 paths whose bodies or event streams carry its envelope around JSON-RPC.
V2_PATHS = (b"/api/mcp/send", b"/api/mcp/events")
_PATH_LABELS: dict[bytes, str] = {}
#: Path labels remembered, for targets up to ``_CACHED_TARGET_BYTES`` (bounded in
#: number and in size: peers choose them, as long as a head).
_CACHE_BOUND = 1024
_CACHED_TARGET_BYTES = 256


def path_label(target: bytes) -> str:
    """A bounded label for a request target: known MCP/Inspector paths, else ``other``."""
    label = _PATH_LABELS.get(target)
    if label is not None:
        return label
    path = target.split(b"?", 1)[0].decode("latin-1")
    label = path if path in KNOWN_PATHS else "/api" if path.startswith("/api/") else "other"
    if len(_PATH_LABELS) < _CACHE_BOUND and len(target) <= _CACHED_TARGET_BYTES:
        _PATH_LABELS[target] = label
    return label


def is_inspector_v2(target: bytes) -> bool:
    """The request is the Inspector v2 API's (its JSON-RPC is inside an envelope)."""
    return target.startswith(V2_PATHS)


#: The query parameter a 2024-11-05 endpoint URI names its session with: the
#: TypeScript SDK and the Inspector say ``sessionId``, the Python SDK ``session_id``
#: (the spec leaves the URI to the server).
LEGACY_SESSION_PARAMS = ("sessionId", "session_id")


def _named_session(query: str) -> str | None:
    values = urllib.parse.parse_qs(query)
    for name in LEGACY_SESSION_PARAMS:
        found = values.get(name)
        if found:
            return bounded_text(found[0])
    return None


def legacy_session(target: bytes) -> str | None:
    """The session a 2024-11-05 HTTP+SSE POST names (``?sessionId=`` or ``?session_id=``), if any."""
    if b"?" not in target:
        return None
    return _named_session(target.split(b"?", 1)[1].decode("latin-1"))


def endpoint_session(data: str) -> str | None:
    """The session an ``endpoint`` event of the legacy stream announces."""
    return _named_session(urllib.parse.urlsplit(data).query)


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


#: A ``tracestate`` kept with its ``traceparent``: the W3C limit (32 members, 512 characters).
MAX_TRACESTATE_CHARS = 512


def trace_context(traceparent: bytes, tracestate: bytes | None = None) -> str | None:
    """A W3C ``traceparent`` whose trace id is valid, lower-cased and bounded
    (the request's trace context: its trace id for the request log, its span
    id and flags for a span's parent), then, after one space, its
    ``tracestate`` (bounded; a traceparent holds no space), or None."""
    if trace_id(traceparent) is None:
        return None
    context = traceparent.strip()[:128].lower().decode("ascii", "replace")
    if tracestate:
        state = tracestate.strip()[:MAX_TRACESTATE_CHARS].decode("ascii", "replace")
        if state.isprintable():
            context += " " + state
    return context


def meta_trace(meta: MetaFacts | None) -> str | None:
    """The trace context a message carries in ``params._meta`` (as ``trace_context`` keeps it)."""
    if meta is None or not isinstance(meta.traceparent, str):
        return None
    state = meta.tracestate if isinstance(meta.tracestate, str) else None
    return trace_context(
        meta.traceparent.encode("latin-1", "replace"), state.encode("latin-1", "replace") if state is not None else None
    )


def trace_id_of(trace: str | None) -> str | None:
    """The trace id of what ``trace_context`` kept (or of a bare trace id)."""
    if trace is None or len(trace) == 32:
        return trace
    return trace[3:35]


def body_messages(body: bytes | bytearray, *, v2: bool, legacy: bool) -> tuple[str | None, list[Envelope], str]:
    """A JSON body's messages: (the session v2's envelope names, the
    messages, how they travelled)."""
    if v2:
        session, messages = decode_v2(body)
        return session, messages, "inspector-v2"
    return None, decode(body), "legacy" if legacy else "http"


def event_messages(
    data: bytes, *, v2: bool, request_session: str | None, stream_session: str | None, legacy: bool
) -> tuple[list[Envelope], str]:
    """An SSE event's messages and how they travelled: on the stream that
    answers a streamable HTTP request (``sse``), on the legacy stream
    (``legacy``), inside v2's envelope (``inspector-v2``)."""
    if v2:
        return decode_v2(data)[1], "inspector-v2"
    if request_session is not None and not legacy:
        return decode(data), "sse"
    return decode(data), "legacy" if stream_session is not None else "sse"


def jsonrpc_messages(body: bytes | bytearray | memoryview) -> list[Envelope]:
    """The JSON-RPC messages of a body (see ``jsonrpc.decode``)."""
    return decode(body)
