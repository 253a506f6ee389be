"""Per-route MCP figures for operators (sans-io): per method, per target and
per transport, over a sliding window; the protocol versions and eras seen;
the sessions open now and, for stateless traffic, the clients.

Rules this module keeps:

* Fed with ``McpOutcome``s and times; never reads a clock, a socket or trio.
  What ``/api/mcp``, the dashboard, ``proxyctl top`` and the history show is
  computed here from the same windows, so they agree.
* Bounded: methods are the tracker's bounded labels, transports a fixed
  set; each method keeps at most ``MAX_SAMPLES`` recent outcomes (the
  quantiles and the rate are over the last ``WINDOW_S`` of them);
  at most ``MAX_SESSIONS`` sessions are tracked (the least recently active
  is forgotten first, counted).
* Sessions are what the protocol calls sessions: ``Mcp-Session-Id``, the
  legacy ``sessionId``, a WebSocket connection (``conn:N``).  Traffic without
  one (2026-07-28, stateless servers) is counted by client: the connection's
  peer address, hashed (``client_ref``), at most ``MAX_CLIENTS`` (the least
  recently active forgotten first).
* A session id is a bearer-like secret: it is never shown, only a short hash
  of it (``session_ref``); the connection keys (``conn:N``) are shown as
  they are.
* Targets (tools, prompts, resources) are the route's capped labels
  (``mcpmeta.TargetLabels``): at most that many windows per method.
* Sessions end when their transport says so (a DELETE naming it, the
  connection that carried it closing for connection-scoped ones, the
  legacy stream that announced it closing) or after ``SESSION_IDLE_S``
  without a message.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict, deque
from typing import Any

from .events import McpOutcome
from .quality import quantile
from .slowness import PARTS

#: The sliding window of the quantiles and rates, seconds.
WINDOW_S = 60.0
#: Recent outcomes kept per method (bounds the window under heavy load).
MAX_SAMPLES = 4096
MAX_SESSIONS = 1000
MAX_CLIENTS = 1000
SESSION_IDLE_S = 600.0
#: The transport labels (``McpOutcome.transport``), in display order.
TRANSPORTS = ("legacy-sse", "http", "websocket", "inspector-v2")


@functools.lru_cache(maxsize=4096)
def session_ref(key: str) -> str:
    """What may be shown of a session key: a hash, unless it is one of the
    tracker's own connection-scoped keys."""
    if key.startswith("conn:"):
        return key
    return "s-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]


@functools.lru_cache(maxsize=4096)
def client_ref(address: str) -> str:
    """A client as shown: its peer's host, hashed (the port is the connection's, not the client's)."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    return "c-" + hashlib.sha256(host.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def era_of(version: str, transport: str) -> str:
    """A request's era: ``2026-07-28`` (stateless), ``2025`` (sessions and
    initialize over streamable HTTP or a WebSocket), ``legacy-sse`` (the
    2024-11-05 transport), or ``unknown``."""
    if transport == "legacy-sse":
        return "legacy-sse"
    if version == "2026-07-28":
        return version
    if version in ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"):
        return "2025"
    return "unknown"


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 in milliseconds (None when there is no sample)."""
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ordered = sorted(latencies)
    return {f"p{int(q * 100)}_ms": round(quantile(ordered, q) * 1000, 3) for q in (0.5, 0.95, 0.99)}


class MethodStats:
    """One method's (or one transport's) outcomes: totals since start and a
    window of recent ones."""

    __slots__ = ("errors", "outcomes", "parts", "recent", "requests", "transports")

    def __init__(self) -> None:
        self.requests = 0
        #: ok / error / cancelled / timeout
        self.outcomes: dict[str, int] = {}
        #: JSON-RPC error codes (and other_error) -> count
        self.errors: dict[str, int] = {}
        self.transports: dict[str, int] = {}
        #: (time, latency or None, ok)
        self.recent: deque[tuple[float, float | None, bool]] = deque(maxlen=MAX_SAMPLES)
        #: (time, network, server, transfer, client): who was slow, for the requests split.
        self.parts: deque[tuple[float, float, float, float, float]] | None = None

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
        parts = outcome.parts
        if parts is not None:
            if self.parts is None:
                self.parts = deque(maxlen=MAX_SAMPLES)
            self.parts.append((now, *parts))

    def split(self, now: float, span_s: float = WINDOW_S) -> dict[str, Any] | None:
        """Who was slow over the window: each part's mean (they add up to the
        mean latency as the client saw it) and p95, in ms; None if nothing was split."""
        if not self.parts:
            return None
        since = now - span_s
        recent = [p for p in self.parts if p[0] >= since]
        if not recent:
            return None
        out: dict[str, Any] = {"requests": len(recent)}
        for index, name in enumerate(PARTS, start=1):
            values = sorted(p[index] for p in recent)
            out[name] = {
                "mean_ms": round(sum(values) / len(values) * 1000, 3),
                "p95_ms": round(quantile(values, 0.95) * 1000, 3),
            }
        return out

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
            "split": self.split(now),
        }


class Session:
    """One MCP session (or, for stateless traffic, one client) as operators see it."""

    __slots__ = ("client", "last", "last_method", "ref", "requests", "started", "transport", "version")

    def __init__(self, ref: str, client: str, transport: str, now: float) -> None:
        self.ref = ref
        self.client = client
        self.transport = transport
        self.started = now
        self.last = now
        self.requests = 0
        self.last_method: str | None = None
        self.version = "unknown"

    def as_json(self, now: float, kind: str = "session") -> dict[str, Any]:
        out = {
            kind: self.ref,
            "transport": self.transport,
            "protocol_version": self.version,
            "age_s": round(now - self.started, 3),
            "idle_s": round(now - self.last, 3),
            "requests": self.requests,
            "last_method": self.last_method,
        }
        if kind == "session":
            out["client"] = self.client
        return out


def _touch(
    table: OrderedDict[str, Session], bound: int, key: str, ref: str, client: str, transport: str, now: float
) -> tuple[Session, bool]:
    """The table's entry for ``key`` (made and the oldest evicted past
    ``bound``), most recently active last; whether one was evicted."""
    entry = table.get(key)
    evicted = False
    if entry is None:
        entry = table[key] = Session(ref, client, transport, now)
        while len(table) > bound:
            table.popitem(last=False)
            evicted = True
    else:
        table.move_to_end(key)
    entry.last = now
    return entry, evicted


class McpStats:
    """A route's MCP figures: per method, per transport, sessions open."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodStats] = {}
        self.transports: dict[str, MethodStats] = {}
        #: (method, target) -> its window (targets: the route's capped labels).
        self.targets: dict[tuple[str, str], MethodStats] = {}
        #: Requests by protocol version label, and by era.
        self.versions: dict[str, int] = {}
        self.eras: dict[str, int] = {}
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        #: Stateless traffic, by client (``client_ref``).
        self.clients: OrderedDict[str, Session] = OrderedDict()
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
        if outcome.target:
            key = (outcome.method, outcome.target)
            stats = self.targets.get(key)
            if stats is None:
                stats = self.targets[key] = MethodStats()
            stats.add(outcome, now)
        version = outcome.protocol_version
        self.versions[version] = self.versions.get(version, 0) + 1
        era = era_of(version, outcome.transport)
        self.eras[era] = self.eras.get(era, 0) + 1

    def message(
        self, key: str, client: str, transport: str, now: float, method: str | None, version: str | None = None
    ) -> None:
        """A message of session ``key`` (a request when ``method`` is set)."""
        session, evicted = _touch(self.sessions, MAX_SESSIONS, key, session_ref(key), client, transport, now)
        self.sessions_evicted += evicted
        _count(session, method, version)

    def client(self, address: str, transport: str, now: float, method: str | None, version: str | None) -> None:
        """A message without a session, from the client at ``address``."""
        ref = client_ref(address)
        entry, _ = _touch(self.clients, MAX_CLIENTS, ref, ref, "", transport, now)
        _count(entry, method, version)

    def touch_session(
        self, key: str, client: str, transport: str, at: float, requests: int, method: str | None, version: str | None
    ) -> None:
        """A session's activity as another process summed it up (several messages at once)."""
        session, evicted = _touch(self.sessions, MAX_SESSIONS, key, session_ref(key), client, transport, at)
        self.sessions_evicted += evicted
        _count_many(session, requests, method, version)

    def touch_client(
        self, address: str, transport: str, at: float, requests: int, method: str | None, version: str | None
    ) -> None:
        ref = client_ref(address)
        entry, _ = _touch(self.clients, MAX_CLIENTS, ref, ref, "", transport, at)
        _count_many(entry, requests, method, version)

    def end_session(self, key: str) -> None:
        self.sessions.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget sessions and clients idle for SESSION_IDLE_S (the least recent come first)."""
        for table in (self.sessions, self.clients):
            while table:
                key, session = next(iter(table.items()))
                if now - session.last < SESSION_IDLE_S:
                    break
                del table[key]

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
        targets: dict[str, dict[str, Any]] = {}
        for (method, target), stats in sorted(self.targets.items()):
            targets.setdefault(method, {})[target] = stats.as_json(now)
        clients = sorted(self.clients.values(), key=lambda s: s.last, reverse=True)
        return {
            "methods": {m: s.as_json(now, in_flight.get(m, 0)) for m, s in sorted(self.methods.items())},
            "targets": targets,
            "transports": transports,
            "protocol_versions": dict(sorted(self.versions.items())),
            "eras": dict(sorted(self.eras.items())),
            "era": _era_summary(self.eras),
            "sessions_open": len(self.sessions),
            "sessions_evicted": self.sessions_evicted,
            "sessions": [s.as_json(now) for s in sessions[:max_sessions]],
            "clients_active": len(self.clients),
            "clients": [c.as_json(now, "client") for c in clients[:max_sessions]],
        }


def _count(entry: Session, method: str | None, version: str | None) -> None:
    if method is not None:
        entry.requests += 1
        entry.last_method = method
    if version is not None and version != "unknown":
        entry.version = version


def _count_many(entry: Session, requests: int, method: str | None, version: str | None) -> None:
    entry.requests += requests
    if method is not None:
        entry.last_method = method
    if version is not None and version != "unknown":
        entry.version = version


def _era_summary(eras: dict[str, int]) -> str:
    """The route's traffic in one word: the one era seen, ``mixed``, or ``none``."""
    seen = [era for era, count in eras.items() if count and era != "unknown"]
    if not seen:
        return "unknown" if eras else "none"
    return seen[0] if len(seen) == 1 else "mixed"
