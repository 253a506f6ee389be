"""A supervised worker's MCP figures, handed to the supervisor instead of
kept: the supervisor's ``McpStats`` outlives every worker and merges all of
them (``supervise/aggregate.py``).

Rules this module keeps:

* ``StatsRelay`` takes the calls ``McpStats`` takes (the forwarding code
  cannot tell them apart) and keeps only what happened since the last report
  (``take``): outcomes as compact tuples, session and client activity
  folded per key, sessions ended.  Times are turned into unix time: the
  supervisor's clock is not this worker's trio clock.
* Bounded: at most ``MAX_OUTCOMES`` outcomes and ``MAX_KEYS`` sessions or
  clients wait between two reports (a heartbeat apart); beyond, the oldest
  outcomes are dropped and counted (``dropped``).
* The messages of transports that span two connections (the legacy
  HTTP+SSE transport, the Inspector v2 API) are kept for the supervisor's
  correlation, reduced to what correlation needs (never params or results).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import trio

from ..observe.events import McpOutcome
from ..observe.jsonrpc import UNSET, Envelope, bounded_id, result_facts
from ..observe.mcp import MAX_NAME_CHARS

MAX_OUTCOMES = 50_000
MAX_KEYS = 10_000
MAX_REMOTE = 50_000


class StatsRelay:
    """``McpStats``'s calls, recorded for the next report."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.outcomes: deque[tuple[Any, ...]] = deque(maxlen=MAX_OUTCOMES)
        #: key -> [client, transport, at_unix, requests, last_method, version]
        self.sessions: dict[str, list[Any]] = {}
        self.clients: dict[str, list[Any]] = {}
        self.ended: set[str] = set()
        self.remote: deque[tuple[Any, ...]] = deque(maxlen=MAX_REMOTE)
        self.dropped = 0
        self._offset = time.time() - trio.current_time()

    def _unix(self, now: float) -> float:
        return now + self._offset

    def outcome(self, outcome: McpOutcome, now: float) -> None:
        if len(self.outcomes) == MAX_OUTCOMES:
            self.dropped += 1
        self.outcomes.append(
            (
                self._unix(now),
                outcome.method,
                outcome.status,
                outcome.duration_s,
                outcome.transport,
                outcome.protocol_version,
                outcome.target,
                outcome.parts,
            )
        )

    def message(
        self, key: str, client: str, transport: str, now: float, method: str | None, version: str | None = None
    ) -> None:
        self.ended.discard(key)
        _fold(self.sessions, key, client, transport, self._unix(now), method, version)

    def client(self, address: str, transport: str, now: float, method: str | None, version: str | None) -> None:
        _fold(self.clients, address, "", transport, self._unix(now), method, version)

    def end_session(self, key: str) -> None:
        self.sessions.pop(key, None)
        self.ended.add(key)

    def expire(self, now: float) -> None:
        """(Idle sessions are the supervisor's to forget.)"""

    def correlate(
        self,
        origin: str,
        message: Envelope,
        now: float,
        session: str,
        transport: str,
        size: int,
        trace: str | None,
        version: str,
        target: str,
    ) -> None:
        """A message the supervisor correlates (its transport spans connections)."""
        if len(self.remote) == MAX_REMOTE:
            self.dropped += 1
        self.remote.append(
            (origin, reduced(message), self._unix(now), session, transport, size, trace, version, target)
        )

    def take(self) -> tuple[tuple[Any, ...], ...]:
        """What happened since the last call, as McpDelta's fields (without in_flight)."""
        self._offset = time.time() - trio.current_time()
        outcomes, self.outcomes = tuple(self.outcomes), deque(maxlen=MAX_OUTCOMES)
        sessions = tuple((key, *values) for key, values in self.sessions.items())
        clients = tuple((key, *values[1:]) for key, values in self.clients.items())
        ended = tuple(self.ended)
        remote, self.remote = tuple(self.remote), deque(maxlen=MAX_REMOTE)
        self.sessions, self.clients, self.ended = {}, {}, set()
        return outcomes, sessions, clients, ended, remote


def _fold(
    table: dict[str, list[Any]], key: str, client: str, transport: str, at: float, method: str | None, version: Any
) -> None:
    entry = table.get(key)
    if entry is None:
        if len(table) >= MAX_KEYS:
            return
        entry = table[key] = [client, transport, at, 0, None, None]
    entry[2] = at
    if method is not None:
        entry[3] += 1
        entry[4] = method
    if version is not None and version != "unknown":
        entry[5] = version


def reduced(message: Envelope) -> dict[str, Any]:
    """What correlating a message needs: its id, method, error code, a
    cancellation's target, and of a result only whether a tool failed and
    which version an initialize chose -- each bounded (the peer's values may be
    as long as a body, and a second's report must fit in a channel frame),
    and each correlated by the supervisor as the worker would have: ids as
    ``bounded_id``, names cut past any spec method's length, other types as null."""
    out: dict[str, Any] = {"jsonrpc": "2.0"}
    if message.id is not UNSET:
        out["id"] = _id(message.id)
    if message.method is not UNSET:
        method = message.method
        out["method"] = method[:MAX_NAME_CHARS] if isinstance(method, str) else None
        if method == "notifications/cancelled":
            out["params"] = {"requestId": _id(message.param("requestId"))}
    if message.error is not UNSET:
        code = message.error_code
        out["error"] = {"code": code if type(code) is int else None}
    if message.result is not UNSET:
        facts = result_facts(message)
        version = facts.protocolVersion
        out["result"] = {
            "isError": facts.isError is True,
            # (a version is a label: a long or odd one is ``other`` here as there)
            "protocolVersion": version if version is None or _short_text(version) else "",
        }
    return out


def _id(value: Any) -> Any:
    """A relayed id: a number or a bounded string; anything else is no id either way."""
    return bounded_id(value) if type(value) is int or isinstance(value, str) else None


def _short_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_CHARS
