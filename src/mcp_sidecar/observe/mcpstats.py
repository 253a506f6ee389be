"""Per-route MCP figures for operators (sans-io): per method and per
transport, over a sliding window, and the sessions open now.

Rules this module keeps:

* Fed with ``McpOutcome``s and times; never reads a clock, a socket or trio.
  What ``/api/mcp``, the dashboard, ``proxyctl top`` and the history show is
  computed here from the same windows, so they agree.
* Bounded: methods are the tracker's bounded labels, transports a fixed
  set; each method keeps at most ``MAX_SAMPLES`` recent outcomes (the
  quantiles and the rate are over the last ``WINDOW_S`` of them);
  at most ``MAX_SESSIONS`` sessions are tracked (the least recently active
  is forgotten first, counted).
* A session id is a bearer-like secret: it is never shown, only a short hash
  of it (``session_ref``); the connection-scoped keys (``conn:N``) the
  tracker uses for sessionless transports are shown as they are.
* Sessions end when their transport says so (a DELETE naming it, the
  connection that carried it closing for connection-scoped ones, the
  legacy stream that announced it closing) or after ``SESSION_IDLE_S``
  without a message.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from typing import Any

from .events import McpOutcome
from .quality import quantile

#: The sliding window of the quantiles and rates, seconds.
WINDOW_S = 60.0
#: Recent outcomes kept per method (bounds the window under heavy load).
MAX_SAMPLES = 4096
MAX_SESSIONS = 1000
SESSION_IDLE_S = 600.0
#: The transport labels (``McpOutcome.transport``), in display order.
TRANSPORTS = ("legacy-sse", "http", "websocket", "inspector-v2")


def session_ref(key: str) -> str:
    """What may be shown of a session key: a hash, unless it is one of the
    tracker's own connection-scoped keys."""
    if key.startswith("conn:"):
        return key
    return "s-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 in milliseconds (None when there is no sample)."""
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ordered = sorted(latencies)
    return {f"p{int(q * 100)}_ms": round(quantile(ordered, q) * 1000, 3) for q in (0.5, 0.95, 0.99)}


class MethodStats:
    """One method's (or one transport's) outcomes: totals since start and a
    window of recent ones."""

    __slots__ = ("errors", "outcomes", "recent", "requests", "transports")

    def __init__(self) -> None:
        self.requests = 0
        #: ok / error / cancelled / timeout
        self.outcomes: dict[str, int] = {}
        #: JSON-RPC error codes (and other_error) -> count
        self.errors: dict[str, int] = {}
        self.transports: dict[str, int] = {}
        #: (time, latency or None, ok)
        self.recent: deque[tuple[float, float | None, bool]] = deque(maxlen=MAX_SAMPLES)

    def add(self, outcome: McpOutcome, now: float) -> None:
        self.requests += 1
        status = outcome.status
        if status == "ok" or status == "cancelled" or status == "timeout":
            kind = status
        else:
            kind = "error"
            self.errors[status] = self.errors.get(status, 0) + 1
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
        self.transports[outcome.transport] = self.transports.get(outcome.transport, 0) + 1
        latency = outcome.duration_s if status != "cancelled" else None
        self.recent.append((now, latency, status == "ok"))

    def window(self, now: float, span_s: float = WINDOW_S) -> tuple[int, int, list[float], float]:
        """Outcomes within the last ``span_s``: count, failures, latencies, and
        the span they cover (shorter when the bound cut the window)."""
        since = now - span_s
        count = failed = 0
        latencies: list[float] = []
        oldest = now
        for at, latency, ok in reversed(self.recent):
            if at < since:
                break
            count += 1
            oldest = at
            if not ok:
                failed += 1
            if latency is not None:
                latencies.append(latency)
        covered = span_s
        if count == len(self.recent) == self.recent.maxlen:  # the bound, not the window, cut it
            covered = max(now - oldest, 1e-3)
        return count, failed, latencies, covered

    def as_json(self, now: float, in_flight: int = 0) -> dict[str, Any]:
        count, failed, latencies, covered = self.window(now)
        return {
            "requests": self.requests,
            "rate_per_s": round(count / covered, 3),
            "errors_per_s": round(failed / covered, 3),
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "transports": dict(self.transports),
            "in_flight": in_flight,
            "window_s": WINDOW_S,
            **latency_summary(latencies),
        }


class Session:
    """One MCP session as operators see it."""

    __slots__ = ("client", "last", "last_method", "ref", "requests", "started", "transport")

    def __init__(self, ref: str, client: str, transport: str, now: float) -> None:
        self.ref = ref
        self.client = client
        self.transport = transport
        self.started = now
        self.last = now
        self.requests = 0
        self.last_method: str | None = None

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "session": self.ref,
            "client": self.client,
            "transport": self.transport,
            "age_s": round(now - self.started, 3),
            "idle_s": round(now - self.last, 3),
            "requests": self.requests,
            "last_method": self.last_method,
        }


class McpStats:
    """A route's MCP figures: per method, per transport, sessions open."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodStats] = {}
        self.transports: dict[str, MethodStats] = {}
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        #: Sessions forgotten to keep the table bounded (not ended).
        self.sessions_evicted = 0

    def outcome(self, outcome: McpOutcome, now: float) -> None:
        stats = self.methods.get(outcome.method)
        if stats is None:
            stats = self.methods[outcome.method] = MethodStats()
        stats.add(outcome, now)
        stats = self.transports.get(outcome.transport)
        if stats is None:
            stats = self.transports[outcome.transport] = MethodStats()
        stats.add(outcome, now)

    def message(self, key: str, client: str, transport: str, now: float, method: str | None) -> None:
        """A message of session ``key`` (a request when ``method`` is set)."""
        session = self.sessions.get(key)
        if session is None:
            session = self.sessions[key] = Session(session_ref(key), client, transport, now)
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
                self.sessions_evicted += 1
        else:
            self.sessions.move_to_end(key)
        session.last = now
        if method is not None:
            session.requests += 1
            session.last_method = method

    def end_session(self, key: str) -> None:
        self.sessions.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget sessions idle for SESSION_IDLE_S (the least recent come first)."""
        while self.sessions:
            key, session = next(iter(self.sessions.items()))
            if now - session.last < SESSION_IDLE_S:
                break
            del self.sessions[key]

    def interval(self, now: float, span_s: float) -> dict[str, dict[str, float | None]]:
        """Per method over the last ``span_s`` (for the history): rate, errors, quantiles."""
        out = {}
        for method, stats in self.methods.items():
            count, failed, latencies, covered = stats.window(now, span_s)
            out[method] = {
                "rps": round(count / covered, 3),
                "errors_per_s": round(failed / covered, 3),
                **latency_summary(latencies),
            }
        return out

    def as_json(self, now: float, in_flight: dict[str, int], *, max_sessions: int = 100) -> dict[str, Any]:
        self.expire(now)
        sessions = sorted(self.sessions.values(), key=lambda s: s.last, reverse=True)
        by_transport: dict[str, int] = {}
        for session in sessions:
            by_transport[session.transport] = by_transport.get(session.transport, 0) + 1
        transports = {}
        for name in TRANSPORTS:
            if name in self.transports or name in by_transport:
                view = (self.transports[name] if name in self.transports else MethodStats()).as_json(now)
                view["sessions_open"] = by_transport.get(name, 0)
                transports[name] = view
        return {
            "methods": {m: s.as_json(now, in_flight.get(m, 0)) for m, s in sorted(self.methods.items())},
            "transports": transports,
            "sessions_open": len(self.sessions),
            "sessions_evicted": self.sessions_evicted,
            "sessions": [s.as_json(now) for s in sessions[:max_sessions]],
        }
