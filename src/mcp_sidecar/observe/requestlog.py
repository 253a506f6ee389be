"""The MCP request log (sans-io): which completed requests get a line, and
what the line says.

Rules this module keeps:

* Off unless the route's ``request_log`` is on.  Sampling is deterministic
  (an accumulator, not a random draw: a ``0.25`` sample logs every fourth
  request exactly); the rate cap is a token bucket (``rate`` lines per
  second, a burst of one second's worth).  Requests sampled out or over the
  cap are counted, never silently lost.
* A line carries no secret: the session is its hash (``session_ref``), the
  id is redacted as the tap redacts and truncated, params and results are
  never in it (the tap shows them).
"""

from __future__ import annotations

from typing import Any

from ..redact import redact_string
from .events import McpOutcome
from .mcphttp import trace_id_of
from .mcpstats import session_ref
from .slowness import PARTS

#: Longest request id written (ids are the peer's choice).
MAX_ID_CHARS = 64


class RequestLogPolicy:
    """Sampling and the rate cap of one route's request log."""

    __slots__ = ("_at", "_credit", "_tokens", "over_rate", "rate", "sample", "sampled_out", "written")

    def __init__(self, sample: float, rate_per_s: float) -> None:
        self.sample = sample
        self.rate = rate_per_s
        self._credit = 0.0
        self._tokens = rate_per_s
        self._at: float | None = None
        self.sampled_out = 0
        self.over_rate = 0
        self.written = 0

    def admit(self, now: float) -> bool:
        self._credit += self.sample
        if self._credit < 1.0 - 1e-9:
            self.sampled_out += 1
            return False
        self._credit -= 1.0
        if self._at is not None:
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1.0 - 1e-9:  # (sums of small steps land just under 1)
            self.over_rate += 1
            return False
        self._tokens -= 1.0
        self.written += 1
        return True

    def as_json(self) -> dict[str, Any]:
        return {
            "sample": self.sample,
            "rate_per_s": self.rate,
            "written": self.written,
            "sampled_out": self.sampled_out,
            "over_rate": self.over_rate,
        }


def request_id_text(value: Any) -> Any:
    """A request id as written (the log, the tap): numbers as they are,
    strings redacted as the tap redacts (an id is the peer's choice), then
    truncated."""
    if isinstance(value, str):
        return redact_string(value)[:MAX_ID_CHARS]
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def outcome_kind(status: str) -> str:
    """ok, error, cancelled or timeout (error codes are reported apart)."""
    return status if status in ("ok", "cancelled", "timeout") else "error"


def request_line(route: str, outcome: McpOutcome) -> dict[str, Any]:
    """The fields of one request's line (the event is ``mcp.request``)."""
    return {
        "route": route,
        "session": None if outcome.session is None else session_ref(outcome.session),
        "transport": outcome.transport,
        "protocol_version": outcome.protocol_version,
        "method": outcome.method,
        "target": outcome.target or None,
        "id": request_id_text(outcome.request_id),
        "from": outcome.origin,
        "outcome": outcome_kind(outcome.status),
        "error_code": outcome.error_code
        if outcome.error_code is not None
        else (outcome.status if outcome.status == "other_error" else None),
        "latency_ms": None if outcome.duration_s is None else round(outcome.duration_s * 1000, 3),
        "request_bytes": outcome.request_bytes,
        "response_bytes": outcome.response_bytes,
        "trace_id": trace_id_of(outcome.trace),
        # Who was slow (observe/slowness.py), when the answer came where its request went.
        "split_ms": None
        if outcome.parts is None
        else dict(zip(PARTS, (round(p * 1000, 3) for p in outcome.parts), strict=True)),
    }
