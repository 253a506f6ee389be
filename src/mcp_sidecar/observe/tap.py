"""What the tap shows of one MCP message (sans-io).

Rules this module keeps:

* A record is built only when somebody taps the route (the caller checks);
  it holds plain values ready to be written as one JSON line.
* ``params``, ``result`` and ``error`` are shown as JSON text, redacted
  first (``redact.redact_json``: the decoded value is walked, so no cut can
  leave half a secret), then cut to ``max_bytes`` (``truncated`` says so).
  The session is its hash; ids are truncated.
* Filters are a route name, a method (its name, or its metrics label:
  ``other``) and a target (tool, prompt or resource label); a response
  matches the method and target of the request it answers.  A subscriber
  may ask for more of each body than ``tap_max_bytes`` (a recording:
  ``max_bytes``); the route's records are then cut at the largest bound
  its subscribers asked for.
* A record carries what a recording keeps (observe/recording.py): the
  monotonic time, the era, the client (hashed), and for HTTP the exchange's
  method, path label, status and the MCP headers (the session's hashed).
* A request or notification shows its own method name, escaped and cut to
  ``MAX_METHOD_CHARS`` (``label`` then says how the metrics count it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..redact import redact_json, redact_string
from .events import Exchange, McpOutcome
from .jsonrpc import UNSET, Envelope
from .mcp import SPEC_METHODS
from .mcpmeta import KNOWN_VERSIONS
from .mcpstats import client_ref, session_ref
from .requestlog import outcome_kind, request_id_text

#: How much of params/result/error a record shows by default.
DEFAULT_MAX_BYTES = 2048
#: A record's members that carry the message's bodies (JSON text, redacted, cut at the bound).
BODIES = ("params", "result", "error")
DIRECTIONS = {"client": "client_to_upstream", "upstream": "upstream_to_client"}


@dataclass(frozen=True, slots=True)
class TapFilter:
    """What one subscriber wants: a route, a method (its name or label) and a
    target (None: all), and how much of each body (None: the route's bound)."""

    route: str | None = None
    method: str | None = None
    target: str | None = None
    max_bytes: int | None = None
    #: A recording: it gets the messages it wants as their encoded lines
    #: (recording.line_body; forward/tap.py's LineSubscriber), not as records.
    lines: bool = False

    def wants_route(self, route: str) -> bool:
        return self.route is None or self.route == route

    def wants(self, record: dict[str, Any]) -> bool:
        return self.wants_message(record["route"], record["method"], record.get("label"), record.get("target"))

    def wants_all_of(self, route: str) -> bool:
        """Every message of ``route`` (no method or target asked)."""
        return self.wants_route(route) and self.method is None and self.target is None

    def wants_message(self, route: str, method: str | None, label: str | None, target: str | None) -> bool:
        """A message of ``route`` shown as ``method`` (counted as ``label``), for ``target``."""
        return (
            self.wants_route(route)
            and (self.method is None or method == self.method or label == self.method)
            and (self.target is None or target == self.target)
        )


#: A method name as the tap shows it: at most this many characters.
MAX_METHOD_CHARS = 128


def shown_method(name: str) -> str:
    """A method name a peer sent, as the tap shows it: control characters
    escaped, cut to ``MAX_METHOD_CHARS`` (a label elsewhere stays bounded)."""
    cut = name[:MAX_METHOD_CHARS]
    if cut.isprintable():
        return cut
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in cut)


@dataclass(frozen=True, slots=True)
class AnyOf:
    """What several subscribers want together (a worker relaying for its supervisor's)."""

    filters: tuple[TapFilter, ...]
    #: (records, never lines: the relay encodes the lines its filters want)
    lines = False

    def wants_route(self, route: str) -> bool:
        return any(f.wants_route(route) for f in self.filters)

    def wants(self, record: dict[str, Any]) -> bool:
        return any(f.wants(record) for f in self.filters)

    def wants_all_of(self, route: str) -> bool:
        return any(f.wants_all_of(route) for f in self.filters)

    def wants_message(self, route: str, method: str | None, label: str | None, target: str | None) -> bool:
        return any(f.wants_message(route, method, label, target) for f in self.filters)

    @property
    def max_bytes(self) -> int | None:
        wanted = [f.max_bytes for f in self.filters if f.max_bytes is not None]
        return max(wanted) if wanted else None


#: The era of each transport label (observe/connection.py's); streamable
#: HTTP's depends on the protocol version (``era``).
_ERAS = {"legacy-sse": "2024-11-05-sse", "websocket": "websocket", "inspector-v2": "inspector-v2"}
#: Streamable HTTP without sessions or initialize: this revision on.
STATELESS_VERSION = "2026-07-28"


def era(transport: str, protocol_version: str | None) -> str:
    """Which MCP era a message belongs to: ``2024-11-05-sse`` (HTTP+SSE),
    ``streamable-http-2025`` (2025-03-26 .. 2025-11-25), ``streamable-http-2026``
    (2026-07-28 and later: stateless), ``websocket``, ``inspector-v2``."""
    known = _ERAS.get(transport)
    if known is not None:
        return known
    if protocol_version is not None and protocol_version[:4].isdigit() and protocol_version >= STATELESS_VERSION:
        return "streamable-http-2026"
    return "streamable-http-2025"


def http_facts(exchange: Exchange, origin: str, session: str | None) -> dict[str, Any]:
    """What a recording keeps of the HTTP exchange that carried a message:
    method, path label, status (on the answer's side) and the MCP headers
    the request sent (``Mcp-Session-Id`` hashed; a peer's free text redacted,
    a spec method or a released version kept as it is).  The headers are
    worked out once per exchange (its request and its answers share them);
    the session's is added each time: ``session``, the exchange's when the
    message was seen (an ``initialize`` answer names one)."""
    headers = exchange.recorded_headers
    if headers is None:
        headers = exchange.recorded_headers = _recorded_headers(exchange)
    if session is not None:
        headers = {"mcp-session-id": session_ref(session), **headers}
    return {
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status if origin == "upstream" else None,
        "headers": headers,
    }


def _recorded_headers(exchange: Exchange) -> dict[str, str]:
    headers: dict[str, str] = {}
    version, method = exchange.protocol_version, exchange.mcp_method
    if version is not None:
        headers["mcp-protocol-version"] = version if version in KNOWN_VERSIONS else redact_string(version)
    if method is not None:
        headers["mcp-method"] = method if method in SPEC_METHODS else redact_string(method)
    if exchange.mcp_name is not None:
        headers["mcp-name"] = redact_string(exchange.mcp_name)
    if exchange.last_event_id is not None:
        headers["last-event-id"] = redact_string(exchange.last_event_id)
    return headers


def shown_body(value: Any) -> bytes:
    """A message's params, result or error as JSON text, redacted."""
    return redact_json(bytes(value) if isinstance(value, msgspec.Raw) else msgspec.json.encode(value))


def _shown(value: Any, max_bytes: int) -> tuple[str, bool]:
    raw = shown_body(value)
    return raw[:max_bytes].decode("utf-8", "ignore"), len(raw) > max_bytes


def message_kind(message: Envelope) -> str:
    if message.method is not UNSET:
        return "request" if message.id is not UNSET else "notification"
    return "error" if message.error is not UNSET else "response"


def shown_names(message: Envelope, method: str | None, answered: McpOutcome | None) -> tuple[str | None, str | None]:
    """A record's ``method`` and ``label``: the message's own name (or, for an
    answer, its request's), and how the metrics count it when that differs
    (``other`` for a method outside the spec; None when the same)."""
    counted = method if method is not None else (answered.method if answered is not None else None)
    own = message.method if isinstance(message.method, str) else (answered.name if answered is not None else None)
    if own is not None:
        name = shown_method(own)
        if name != counted:
            return name, counted
    return counted, None


def tap_record(
    route: str,
    origin: str,
    message: Envelope,
    *,
    at_unix: float,
    transport: str,
    session: str | None,
    size: int,
    method: str | None,
    answered: McpOutcome | None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    protocol_version: str | None = None,
    target: str = "",
    at_mono: float = 0.0,
    client: str = "",
    exchange: Exchange | None = None,
) -> dict[str, Any]:
    """One message as the tap streams it.  ``method`` is the message's own
    label (requests, notifications); ``answered`` the outcome a response
    completed (its method and latency), if the request was seen."""
    shown, label = shown_names(message, method, answered)
    record: dict[str, Any] = {
        "t": at_unix,
        "mono": round(at_mono, 6),
        "route": route,
        "direction": DIRECTIONS[origin],
        "kind": message_kind(message),
        "method": shown,
        "id": request_id_text(message.id) if message.id is not UNSET else None,
        "transport": transport,
        "session": None if session is None else session_ref(session),
        "size": size,
    }
    if label is not None:
        record["label"] = label
    if answered is not None:  # a response: the labels its request was counted under
        protocol_version, target = answered.protocol_version, answered.target
    if protocol_version is not None:
        record["protocol_version"] = protocol_version
    # (a notification has no version of its own: the HTTP request that carried it says it)
    record["era"] = era(
        transport, protocol_version if protocol_version is not None or exchange is None else exchange.protocol_version
    )
    if client:
        record["client"] = client_ref(client)
    if exchange is not None:
        record["http"] = http_facts(exchange, origin, exchange.session)
    if target:
        record["target"] = target
    if answered is not None:
        record["latency_ms"] = None if answered.duration_s is None else round(answered.duration_s * 1000, 3)
        record["outcome"] = outcome_kind(answered.status)
    truncated = False
    for name in BODIES:
        value = getattr(message, name)
        if value is not UNSET:
            record[name], cut = _shown(value, max_bytes)
            truncated = truncated or cut
    record["truncated"] = truncated
    return record
