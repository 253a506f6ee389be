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
  ``params._meta``): its trace id and span id; without one the span is a
  root with a new trace id.  Its ``sampled`` flag decides for the
  parent-based samplers; ``traceidratio`` decides on the trace id alone, so
  every hop that uses it agrees.
* No clock, no randomness of its own: the caller passes the times and the
  ids; nothing here imports protobuf (the exporter encodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .events import McpOutcome
from .mcpstats import session_ref
from .slowness import PARTS

#: Span kinds as OTLP numbers them: the sidecar receives the request from the client.
SPAN_KIND_SERVER = 2
STATUS_OK, STATUS_ERROR = 1, 2
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


def parse_traceparent(value: str | None) -> TraceParent | None:
    """``00-<32 hex>-<16 hex>-<2 hex>`` (a later version's extra fields ignored),
    or None: malformed, all-zero ids, version ff."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    if parts[0].lower() == "ff" or (parts[0] == "00" and len(parts) != 4):
        return None
    try:
        trace_id, span_id, flags = bytes.fromhex(parts[1]), bytes.fromhex(parts[2]), int(parts[3], 16)
        int(parts[0], 16)
    except ValueError:
        return None
    if not any(trace_id) or not any(span_id):
        return None
    return TraceParent(trace_id, span_id, bool(flags & 1))


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


def span_name(outcome: McpOutcome) -> str:
    return f"{outcome.method} {outcome.target}" if outcome.target else outcome.method


def mcp_attributes(route: str, outcome: McpOutcome) -> tuple[dict[str, Any], int, str]:
    """The span's attributes, its status code and message, from what came of the request."""
    attributes: dict[str, Any] = {
        "mcp.method.name": outcome.method,
        "network.transport": "tcp",
        "network.protocol.name": _PROTOCOL_NAMES.get(outcome.transport, "http"),
        "mcp_sidecar.route": route,
        "mcp_sidecar.transport": outcome.transport,
    }
    target_key = _TARGET_ATTRIBUTES.get(outcome.method)
    if target_key is not None and outcome.target:
        attributes[target_key] = outcome.target
    if outcome.session is not None:
        attributes["mcp.session.id"] = session_ref(outcome.session)
    if outcome.protocol_version not in ("unknown", ""):
        attributes["mcp.protocol.version"] = outcome.protocol_version
    era = _ERAS.get(outcome.transport)
    if era is None:
        era = "streamable-http-2026" if outcome.protocol_version == "2026-07-28" else "streamable-http-2025"
    attributes["mcp_sidecar.era"] = era
    if outcome.request_id is not None and not isinstance(outcome.request_id, bool):
        attributes["jsonrpc.request.id"] = str(outcome.request_id)[:64]
    host, _, port = (outcome.upstream or "").rpartition(":")
    if host and port.isdigit():  # (an intermediary's peer in the conventions: the server it forwarded to)
        attributes["server.address"] = host.strip("[]")
        attributes["server.port"] = int(port)
    if outcome.parts is not None:
        for part, seconds in zip(PARTS, outcome.parts, strict=True):
            attributes[f"mcp_sidecar.latency.{part}_ms"] = round(seconds * 1000, 3)
    status = outcome.status
    if status == "ok":
        return attributes, STATUS_OK, ""
    if status in ("tool_error", "timeout", "cancelled", "other_error"):
        attributes["error.type"] = status
    else:  # a JSON-RPC error code
        attributes["error.type"] = status
        attributes["rpc.response.status_code"] = status
    return attributes, STATUS_ERROR, status
