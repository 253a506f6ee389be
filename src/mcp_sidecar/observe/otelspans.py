"""An observed MCP request as an OpenTelemetry span (sans-io): the caller's
trace context, the sampling decision, the span's name and attributes.

Rules this module keeps:

* Attributes follow the OpenTelemetry semantic conventions for MCP (the
  GenAI conventions): span name ``{mcp.method.name} {target}``,
  ``mcp.method.name``, ``gen_ai.tool.name`` (``tools/call``),
  ``gen_ai.prompt.name`` (``prompts/get``), ``mcp.resource.uri``
  (``resources/read``, only where the route labels resources: opt-in),
  ``mcp.session.id`` (hashed, as everywhere the sidecar shows one),
  ``mcp.protocol.version``, ``jsonrpc.request.id``, ``network.transport``,
  ``network.protocol.name``, ``error.type`` and ``rpc.response.status_code``
  (a JSON-RPC error's code), ``server.address``/``server.port`` (the upstream
  that answered); plus the sidecar's own ``mcp_sidecar.*``: the
  route, the era, the transport label, and who was slow.  Targets are the
  route's capped labels (``other`` past the cap): bounded like the metrics.
* The parent is the caller's ``traceparent`` (HTTP header or
  ``params._meta``): its trace id and span id, and its ``tracestate`` is
  the span's (W3C: an intermediary passes it on); without one the span is a
  root with a new trace id.  Its ``sampled`` flag decides for the
  parent-based samplers; ``traceidratio`` decides on the trace id alone, so
  every hop that uses it agrees.
* A ``tools/call`` also says ``gen_ai.operation.name = execute_tool`` (the
  conventions' GenAI operation).  Notifications (opt-in) are spans of no
  duration named after their method, with the direction they travelled.
* Span events (``SpanEvent``) are bounded per span (``MAX_SPAN_EVENTS``;
  past it they are counted in ``dropped_events``, as OTLP has it).
* No clock, no randomness of its own: the caller passes the times and the
  ids; nothing here imports protobuf (the exporter encodes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .events import McpOutcome
from .mcpstats import session_ref
from .slowness import PARTS

#: Span kinds as OTLP numbers them: the sidecar receives the request from the client.
SPAN_KIND_SERVER = 2
#: Events a span keeps (progress notifications, its stream's end); more are counted, not kept.
MAX_SPAN_EVENTS = 32
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_TARGET_ATTRIBUTES = {
    "tools/call": "gen_ai.tool.name",
    "prompts/get": "gen_ai.prompt.name",
    "resources/read": "mcp.resource.uri",
}
_PROTOCOL_NAMES = {"http": "http", "legacy-sse": "http", "inspector-v2": "http", "websocket": "websocket"}
_ERAS = {"legacy-sse": "2024-11-05-sse", "websocket": "websocket", "inspector-v2": "inspector-v2"}


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A W3C ``traceparent``: trace id (16 bytes), parent span id (8), sampled."""

    trace_id: bytes
    span_id: bytes
    sampled: bool


def split_trace(trace: str | None) -> tuple[TraceParent | None, str]:
    """What observe/mcphttp.trace_context kept: the parent, and its ``tracestate`` ("" if none)."""
    if not trace:
        return None, ""
    traceparent, _, tracestate = trace.partition(" ")
    parent = parse_traceparent(traceparent)
    return parent, tracestate if parent is not None else ""


#: ``version-traceid-parentid-flags``, lower or upper case hex; a later version may add fields.
_TRACEPARENT = re.compile(r"([0-9a-fA-F]{2})-([0-9a-fA-F]{32})-([0-9a-fA-F]{16})-([0-9a-fA-F]{2})(-.*)?")


def parse_traceparent(value: str | None) -> TraceParent | None:
    """``00-<32 hex>-<16 hex>-<2 hex>`` (a later version's extra fields ignored),
    or None: malformed, all-zero ids, version ff."""
    match = _TRACEPARENT.fullmatch(value.strip()) if value else None
    if match is None:
        return None
    version, trace, span, flags, extra = match.groups()
    if version.lower() == "ff" or (version == "00" and extra is not None):
        return None
    trace_id, span_id = bytes.fromhex(trace), bytes.fromhex(span)
    if not any(trace_id) or not any(span_id):
        return None
    return TraceParent(trace_id, span_id, bool(int(flags, 16) & 1))


class Sampler:
    """The OpenTelemetry samplers by name (config/otel.py's), decided here."""

    def __init__(self, name: str, ratio: float = 1.0) -> None:
        self.name = name
        self.bound = int(ratio * (1 << 64)) if ratio < 1.0 else 1 << 64

    def sampled(self, trace_id: bytes, parent: TraceParent | None) -> bool:
        name = self.name
        if name.startswith("parentbased_") and parent is not None:
            return parent.sampled
        root = name.removeprefix("parentbased_")
        if root == "always_on":
            return True
        if root == "always_off":
            return False
        # traceidratio: the trace id's last 8 bytes as a number, below the ratio's share.
        return int.from_bytes(trace_id[8:], "big") < self.bound


@dataclass(frozen=True, slots=True)
class SpanEvent:
    """Something that happened to a request while it was under way (Unix nanoseconds)."""

    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class SpanData:
    """One span, ready to encode: ids, name, times (Unix nanoseconds), attributes, status."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str = ""
    trace_state: str = ""
    events: tuple[SpanEvent, ...] = ()
    dropped_events: int = 0
    #: Attributes it shares with other spans (one dictionary, encoded once: otlpwire.py).
    shared: Mapping[str, Any] | None = None


def span_name(outcome: McpOutcome) -> str:
    return f"{outcome.method} {outcome.target}" if outcome.target else outcome.method


def mcp_attributes(route: str, outcome: McpOutcome) -> tuple[dict[str, Any], dict[str, Any], int, str]:
    """The span's attributes -- those its labels share with other requests
    (``static_attributes``: one dictionary for all of them, never changed), and
    its own -- its status code and message, from what came of the request."""
    shared, code, message = static_attributes(*labels_of(route, outcome))
    own: dict[str, Any] = {}
    if outcome.session is not None:
        own["mcp.session.id"] = session_ref(outcome.session)
    if outcome.request_id is not None and not isinstance(outcome.request_id, bool):
        own["jsonrpc.request.id"] = str(outcome.request_id)[:64]
    if outcome.parts is not None:
        for name, seconds in zip(_PART_NAMES, outcome.parts, strict=True):
            own[name] = round(seconds * 1000, 3)
    return shared, own, code, message


_PART_NAMES = tuple(f"mcp_sidecar.latency.{part}_ms" for part in PARTS)


def labels_of(route: str, outcome: McpOutcome) -> tuple[str, str, str, str, str, str | None, str]:
    """What ``static_attributes`` is computed from: the request's bounded labels."""
    return (
        route,
        outcome.method,
        outcome.target,
        outcome.transport,
        outcome.protocol_version,
        outcome.upstream,
        outcome.status,
    )


def _common(route: str, method: str, transport: str) -> dict[str, Any]:
    """Attributes of every span: the method, the network, the route."""
    return {
        "mcp.method.name": method,
        "network.transport": "tcp",
        "network.protocol.name": _PROTOCOL_NAMES.get(transport, "http"),
        "mcp_sidecar.route": route,
        "mcp_sidecar.transport": transport,
    }


@functools.lru_cache(maxsize=4096)
def static_attributes(
    route: str, method: str, target: str, transport: str, version: str, upstream: str | None, status: str
) -> tuple[dict[str, Any], int, str]:
    """The attributes every request of these labels shares (bounded labels: cached;
    the dictionary returned is shared, never to be changed), its status and message."""
    attributes = _common(route, method, transport)
    target_key = _TARGET_ATTRIBUTES.get(method)
    if target_key is not None and target:
        attributes[target_key] = target
    if method == "tools/call":
        attributes["gen_ai.operation.name"] = "execute_tool"
    if version not in ("unknown", ""):
        attributes["mcp.protocol.version"] = version
    attributes["mcp_sidecar.era"] = era_of(transport, version)
    host, _, port = (upstream or "").rpartition(":")
    if host and port.isdigit():  # (an intermediary's peer in the conventions: the server it forwarded to)
        attributes["server.address"] = host.strip("[]")
        attributes["server.port"] = int(port)
    if status == "ok":
        return attributes, STATUS_OK, ""
    attributes["error.type"] = status
    if status not in ("tool_error", "timeout", "cancelled", "other_error"):  # a JSON-RPC error code
        attributes["rpc.response.status_code"] = status
    return attributes, STATUS_ERROR, status


def era_of(transport: str, protocol_version: str) -> str:
    """The era a message travelled in, from its transport label and protocol version."""
    era = _ERAS.get(transport)
    if era is None:
        era = "streamable-http-2026" if protocol_version == "2026-07-28" else "streamable-http-2025"
    return era


def notification_attributes(
    route: str, method: str, origin: str, transport: str, session: str | None, version: str | None
) -> dict[str, Any]:
    """A notification's span attributes (``origin``: the side that sent it)."""
    attributes = _common(route, method, transport)
    attributes["mcp_sidecar.direction"] = "client_to_server" if origin == "client" else "server_to_client"
    attributes["mcp_sidecar.era"] = era_of(transport, version or "")
    if session is not None:
        attributes["mcp.session.id"] = session_ref(session)
    if version and version != "unknown":
        attributes["mcp.protocol.version"] = version
    return attributes


def progress_event(progress: Any, total: Any, time_ns: int) -> SpanEvent:
    """A ``notifications/progress`` about the span's request."""
    attributes: dict[str, Any] = {}
    for key, value in (("mcp_sidecar.progress", progress), ("mcp_sidecar.progress.total", total)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[key] = float(value)
    return SpanEvent("mcp.progress", time_ns, attributes)


def stream_end_event(end: str, abandoned: bool, time_ns: int) -> SpanEvent:
    """The request's own response stream ended before its answer: the client
    left (``abandoned``: it closed or reset its side) or the server's side or
    the proxy ended it (``cut``); ``end`` says how (mcpstreams.StreamEnd)."""
    name = "mcp_sidecar.stream.abandoned" if abandoned else "mcp_sidecar.stream.cut"
    return SpanEvent(name, time_ns, {"mcp_sidecar.stream.end": end})
