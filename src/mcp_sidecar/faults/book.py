"""The faults active on one route: added, matched, counted, expired.

Rules this module keeps:

* Sans-io: the clock (trio's, in seconds) and the random source are passed
  in, so ttl, count and probability are tested step by step (MockClock, a
  seeded ``random.Random``).
* Bounded: at most ``MAX_FAULTS_PER_ROUTE`` faults; adding one under an
  existing name replaces it.
* A fault expires at ``added + ttl`` or after ``count`` injections, and is
  then gone (no tombstones): every view reads ``active(now)``.
* Probability is rolled per connection for TCP faults (Toxiproxy's
  ``toxicity``), per matching request for MCP faults; ``count`` counts
  injections, not rolls.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..config.faults import MAX_FAULTS_PER_ROUTE, MCP_KINDS, FaultKind, FaultSpec


class FaultSource(StrEnum):
    """Where a fault came from: the configuration (kept across reload while
    it stays there) or an operator at run time (kept until removed or expired)."""

    CONFIG = "config"
    RUNTIME = "runtime"


@dataclass
class ActiveFault:
    """A fault being injected, with its limits and what it did."""

    spec: FaultSpec
    source: FaultSource
    added_at: float
    expires_at: float | None
    remaining: int | None
    injected: int = 0
    #: An MCP fault's method as its JSON body must contain it (None: a glob, or not an MCP fault).
    needle: bytes | None = None

    def live(self, now: float) -> bool:
        if self.expires_at is not None and now >= self.expires_at:
            return False
        return self.remaining is None or self.remaining > 0

    def as_json(self, now: float) -> dict[str, Any]:
        out = self.spec.as_json()
        out.update(
            {
                "source": str(self.source),
                "description": self.spec.describe(),
                "injected": self.injected,
                "remaining": self.remaining,
                "expires_in_s": None if self.expires_at is None else round(max(0.0, self.expires_at - now), 3),
            }
        )
        return out


class FaultLimit(ValueError):
    """The route has as many faults as it may."""


class FaultBook:
    """One route's faults (per worker)."""

    def __init__(self, route: str, rng: random.Random | None = None) -> None:
        self.route = route
        self.rng = rng or random.Random()
        self._faults: dict[str, ActiveFault] = {}
        #: Configured faults that expired (ttl, count): not installed again until a reload.
        self.spent: set[str] = set()
        #: Injections by kind, over the book's life (the metric).
        self.injected: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._faults)

    def add(self, spec: FaultSpec, now: float, source: FaultSource = FaultSource.RUNTIME) -> ActiveFault:
        if spec.name not in self._faults and len(self._faults) >= MAX_FAULTS_PER_ROUTE:
            raise FaultLimit(f"route {self.route} has {MAX_FAULTS_PER_ROUTE} faults already")
        literal = spec.is_mcp and not any(c in spec.method for c in "*?[")
        fault = ActiveFault(
            spec,
            source,
            now,
            None if spec.ttl_s is None else now + spec.ttl_s,
            spec.count,
            needle=b'"' + spec.method.encode() + b'"' if literal else None,
        )
        self._faults[spec.name] = fault
        return fault

    def remove(self, name: str) -> bool:
        return self._faults.pop(name, None) is not None

    def clear(self) -> int:
        n = len(self._faults)
        self._faults.clear()
        return n

    def active(self, now: float) -> list[ActiveFault]:
        """The live faults, in the order they were added (expired ones dropped)."""
        gone = [name for name, fault in self._faults.items() if not fault.live(now)]
        for name in gone:
            if self._faults.pop(name).source is FaultSource.CONFIG:
                self.spent.add(name)
        return list(self._faults.values())

    def _kinds(self, now: float, tcp: bool) -> Iterator[ActiveFault]:
        for fault in self.active(now):
            if (fault.spec.is_tcp if tcp else fault.spec.is_mcp) or (tcp and fault.spec.kind is FaultKind.DOWN):
                yield fault

    def has_mcp(self, now: float) -> bool:
        return any(True for _ in self._kinds(now, tcp=False))

    def may_match(self, now: float, body: bytes) -> bool:
        """Whether an MCP fault may match a request with this body: a fault
        whose method is a name (no glob) needs the name in the body's bytes
        (the body is decoded only then)."""
        for fault in self._faults.values():  # (every request of the route: no list built)
            if fault.spec.kind in MCP_KINDS and fault.live(now) and (fault.needle is None or fault.needle in body):
                return True
        return False

    def _roll(self, fault: ActiveFault) -> bool:
        p = fault.spec.probability
        return p >= 1.0 or self.rng.random() < p

    def note(self, fault: ActiveFault) -> None:
        """``fault`` was injected once."""
        fault.injected += 1
        if fault.remaining is not None:
            fault.remaining -= 1
        kind = str(fault.spec.kind)
        self.injected[kind] = self.injected.get(kind, 0) + 1

    def refuse_connection(self, now: float) -> ActiveFault | None:
        """A ``down`` fault that refuses this new connection (rolled), noted."""
        for fault in self._kinds(now, tcp=True):
            if fault.spec.kind is FaultKind.DOWN and self._roll(fault):
                self.note(fault)
                return fault
        return None

    def connection_faults(self, now: float) -> list[ActiveFault]:
        """The TCP faults a new connection gets: each rolled once, noted."""
        chosen = []
        for fault in self._kinds(now, tcp=True):
            if fault.spec.kind is not FaultKind.DOWN and self._roll(fault):
                self.note(fault)
                chosen.append(fault)
        return chosen

    def mcp_fault(
        self, now: float, method: str, target: str | None, client: str, kinds: frozenset[Any] | None = None
    ) -> ActiveFault | None:
        """The first MCP fault matching a request that rolls true, noted
        (``kinds``: only faults of these kinds apply here)."""
        for fault in self._kinds(now, tcp=False):
            if kinds is not None and fault.spec.kind not in kinds:
                continue
            if fault.spec.matches(method, target, client) and self._roll(fault):
                self.note(fault)
                return fault
        return None

    def as_json(self, now: float) -> list[dict[str, Any]]:
        return [fault.as_json(now) for fault in self.active(now)]
