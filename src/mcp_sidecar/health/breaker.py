"""The passive circuit breaker of one route: plain state, no I/O,
the clock passed in.

Rules this module keeps:

* The breaker counts clients that could not be connected to any upstream
  (after their retry window).  ``breaker_failures`` in a row open it for
  ``breaker_open``; then exactly one client is let through as a probe: its
  success closes the breaker, its failure opens it again.
* While open, the proxy answers clients at once (503 or RST) instead of
  trying the upstream; ``release_probe`` lets another client probe when the
  probe client left before it could tell.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class BreakerState(StrEnum):
    """Closed (clients try the upstream), open (they are refused), half-open (one probes)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Consecutive clients the upstream failed, and whether to let the next
    one try: closed (yes), open (no, until ``open_until``), half-open (one)."""

    threshold: int
    open_s: float
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    open_until: float = 0.0
    opened_total: int = 0
    rejected: int = 0
    probe_in_flight: bool = False
    last_reason: str | None = None
    #: When it last opened (wall clock, for "status since"); None: never.
    opened_unix: float | None = None

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def allow(self, now: float) -> bool:
        """May a new client try the upstream?  In half-open, only one may."""
        if not self.enabled or self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now >= self.open_until:
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        self.rejected += 1
        return False

    def retry_after_s(self, now: float) -> int:
        return max(1, math.ceil(self.open_until - now)) if self.state is not BreakerState.CLOSED else 0

    def record_success(self) -> bool:
        """True if this closed an open/half-open breaker."""
        was = self.state
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probe_in_flight = False
        return was is not BreakerState.CLOSED

    def record_failure(self, now: float, reason: str) -> bool:
        """True if this opened the breaker."""
        self.failures += 1
        self.last_reason = reason
        if not self.enabled:
            return False
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.threshold
        ):
            self.state = BreakerState.OPEN
            self.open_until = now + self.open_s
            self.opened_total += 1
            self.opened_unix = time.time()
            self.probe_in_flight = False
            return True
        return False

    def release_probe(self) -> None:
        """The probe client went away before it could tell: let another try."""
        self.probe_in_flight = False

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state if self.enabled else "disabled",
            "consecutive_failures": self.failures,
            "opened_total": self.opened_total,
            "rejected": self.rejected,
            "retry_after_s": self.retry_after_s(now) if self.state is not BreakerState.CLOSED else None,
            "last_reason": self.last_reason,
        }
