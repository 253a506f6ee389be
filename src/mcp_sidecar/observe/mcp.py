"""MCP JSON-RPC correlation (sans-io): request -> response, per route.

Rules this module keeps:

* Requests are keyed by (session, origin, id): the session is the
  ``Mcp-Session-Id`` / legacy ``sessionId`` when there is one, else the
  connection -- so the legacy transport, whose responses come back on
  another TCP connection (the SSE stream), is correlated by session id.
  Requests may come from either side (servers send ``sampling/*``,
  ``roots/list``, ``ping``).
* Outcomes: ``ok``, the JSON-RPC error code (known codes; others are
  ``other_error``), ``tool_error`` (a ``tools/call`` result with ``isError``:
  the tool failed, the protocol did not), ``cancelled``
  (``notifications/cancelled`` naming the request), ``timeout`` (no
  response within ``timeout_s``, found by ``sweep``).  Latency is to the
  final response; the first response byte time is kept when the transport
  gives it.
* A ``subscriptions/listen`` answered by a stream is answered when the
  stream opens (``answered_by_stream``): an ``ok`` request, timed to its
  stream's first byte; the stream is the caller's to count from there.
  Refused (a JSON error), it is an ordinary request with its error.
* Each pending request keeps the version and target labels it was counted
  under (``mcpmeta.py``); an ``initialize`` answer reports the version the
  server chose (``McpOutcome.negotiated``).
* Labels are bounded: methods outside the spec's list are ``other``.
* At most ``max_pending`` requests are tracked; beyond that the oldest is
  dropped as ``timeout`` (a client flooding ids cannot grow memory).  An id
  is the peer's string, as long as a body: past ``MAX_ID_KEY_CHARS`` it is
  held as its digest (``bounded_id``: the same for the same id, so its
  answer still matches), so a pending request holds a few hundred bytes.
* Anything a peer sends may be any JSON value (an error ``code`` that is a
  list): nothing here hashes or compares one before checking its type.
* An answer before its request is no answer -- except where messages of two
  processes meet (the supervisor's correlation, ``early_answer_s`` > 0): there
  a worker can read its clock for a request it forwarded after another worker
  relayed the answer (it was preempted between its ``send`` and its clock), so
  the answer is held for ``early_answer_s`` (at most ``MAX_EARLY`` of them) and
  completes the request when it comes, timed 0 if the clocks say less.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .events import McpOutcome
from .jsonrpc import UNSET, Envelope, bounded_id, bounded_text, from_mapping, result_facts
from .mcpmeta import version_label

SPEC_METHODS = frozenset(
    {
        "server/discover",
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "sampling/createMessage",
        "elicitation/create",
        "roots/list",
        "subscriptions/listen",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "notifications/resources/updated",
        "notifications/resources/list_changed",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/roots/list_changed",
        "notifications/subscriptions/acknowledged",
        "notifications/elicitation/complete",
        "tasks/get",
        "tasks/list",
        "tasks/result",
        "tasks/cancel",
        "notifications/tasks/status",
    }
)
KNOWN_ERROR_CODES = frozenset(
    {-32700, -32600, -32601, -32602, -32603, -32000, -32001, -32002, -32099, -32020, -32021, -32022}
)
#: Requests that open a long-lived stream: answered when it opens, then a gauge.
STREAM_METHODS = frozenset({"subscriptions/listen"})
MAX_PENDING = 10_000
#: Characters of a method's own name kept when it is outside the spec (longer than any spec method).
MAX_NAME_CHARS = 128
#: Answers held for a request not seen yet (``early_answer_s`` > 0 only).
MAX_EARLY = 1_000


def method_label(method: Any) -> str:
    return method if isinstance(method, str) and method in SPEC_METHODS else "other"


def request_key(value: Any) -> int | str | None:
    """A request id as a dict key: 1 and "1" are different requests; true,
    floats, null and objects are no ids at all (so a notification)."""
    if type(value) is int:  # (not bool: true is no id)
        return int(value)
    if isinstance(value, str):
        return "s:" + bounded_text(value)
    return None


@dataclass(slots=True)
class _Pending:
    method: str
    sent: float
    origin: str
    transport: str
    request_id: Any
    session: str
    size: int
    trace: str | None
    version: str
    target: str
    #: Its own name when outside the spec (``method`` is ``other``), for the tap.
    name: str | None = None

    def outcome(
        self,
        status: str,
        duration_s: float | None,
        *,
        error_code: Any = None,
        response_bytes: int = 0,
        negotiated: str | None = None,
    ) -> McpOutcome:
        return McpOutcome(
            self.method,
            status,
            duration_s,
            self.origin,
            self.transport,
            self.request_id,
            self.session,
            error_code,
            self.size,
            response_bytes,
            self.trace,
            self.version,
            self.target,
            negotiated,
            self.name,
        )


class McpTracker:
    """One route's JSON-RPC requests awaiting their response, and what came
    of each (``McpOutcome``); bounded, sans-io (times passed in)."""

    def __init__(self, timeout_s: float = 300.0, max_pending: int = MAX_PENDING, early_answer_s: float = 0.0) -> None:
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.early_answer_s = early_answer_s
        self._pending: OrderedDict[tuple[str, str, int | str], _Pending] = OrderedDict()
        #: (session, requester, id) -> an answer before its request: (origin, message, at, size).
        self._early: OrderedDict[tuple[str, str, int | str], tuple[str, Envelope, float, int]] = OrderedDict()
        self.progress = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def in_flight(self) -> dict[str, int]:
        """Requests awaiting their response, by method label (O(pending))."""
        counts: dict[str, int] = {}
        for pending in self._pending.values():
            if pending.method not in STREAM_METHODS:
                counts[pending.method] = counts.get(pending.method, 0) + 1
        return counts

    def message(
        self,
        origin: str,
        message: Envelope | dict[str, Any],
        now: float,
        session: str,
        transport: str = "http",
        size: int = 0,
        trace: str | None = None,
        version: str = "unknown",
        target: str = "",
    ) -> list[McpOutcome]:
        """Account one message sent by ``origin`` (over ``transport``, a bounded
        label; ``size`` bytes; ``trace`` the request's trace id; ``version``
        and ``target`` its labels); the outcomes it completes."""
        if isinstance(message, dict):
            message = from_mapping(message)
        out: list[McpOutcome] = []
        method = message.method
        mid = request_key(message.id)
        if method is not UNSET:
            label = method_label(method)
            if mid is None:  # a notification
                if label == "notifications/progress":
                    self.progress += 1
                elif label == "notifications/cancelled":
                    named = request_key(message.param("requestId"))
                    pending = self._pending.pop((session, origin, named), None) if named is not None else None
                    if pending is not None:
                        out.append(pending.outcome("cancelled", now - pending.sent))
                return out
            name = message.method[:MAX_NAME_CHARS] if label == "other" and isinstance(message.method, str) else None
            key = (session, origin, mid)
            self._pending[key] = _Pending(
                label, now, origin, transport, bounded_id(message.id), session, size, trace, version, target, name
            )
            while len(self._pending) > self.max_pending:
                _, dropped = self._pending.popitem(last=False)
                out.append(dropped.outcome("timeout", None))
            early = self._early.pop(key, None) if self._early else None
            if early is not None:
                answerer, answer, answered_at, answer_size = early
                out += self.message(answerer, answer, max(answered_at, now), session, transport, answer_size)
            return out
        if mid is None or (message.result is UNSET and message.error is UNSET):
            return out
        requester = "client" if origin == "upstream" else "upstream"
        pending = self._pending.pop((session, requester, mid), None)
        if pending is None:
            if self.early_answer_s > 0:
                self._early[(session, requester, mid)] = (origin, message, now, size)
                if len(self._early) > MAX_EARLY:
                    self._early.popitem(last=False)
            return out
        code = None
        negotiated = None
        if message.error is not UNSET:
            code = message.error_code
            if type(code) is not int:
                code = None
            status = str(code) if code in KNOWN_ERROR_CODES else "other_error"
        else:
            status = "ok"
            if pending.method == "tools/call":
                if result_facts(message).isError is True:
                    status = "tool_error"
            elif pending.method == "initialize":
                negotiated = version_label(result_facts(message).protocolVersion)
        out.append(
            pending.outcome(status, now - pending.sent, error_code=code, response_bytes=size, negotiated=negotiated)
        )
        return out

    def awaits(self, session: str, request_id: Any) -> bool:
        """Whether the client's request ``request_id`` still awaits its answer."""
        key = request_key(request_id)
        return key is not None and (session, "client", key) in self._pending

    def answered_by_stream(self, session: str, request_id: Any, now: float) -> list[McpOutcome]:
        """The client's request ``request_id`` was answered by a stream that
        opened now (a ``subscriptions/listen``): ``ok``, timed to now."""
        key = request_key(request_id)
        pending = self._pending.pop((session, "client", key), None) if key is not None else None
        return [] if pending is None else [pending.outcome("ok", now - pending.sent)]

    def sweep(self, now: float) -> list[McpOutcome]:
        """Requests that got no response within timeout_s (and answers held
        longer than ``early_answer_s`` for a request that never came: dropped)."""
        early = self._early
        while early and now - next(iter(early.values()))[2] >= self.early_answer_s:
            early.popitem(last=False)
        out: list[McpOutcome] = []
        for key, pending in list(self._pending.items()):
            if now - pending.sent < self.timeout_s:
                break  # ordered by time sent
            del self._pending[key]
            if pending.method in STREAM_METHODS:
                continue  # a long stream is not a timed-out request
            timed_out = pending.outcome("timeout", None)
            timed_out.waited_s = now - pending.sent
            out.append(timed_out)
        return out
