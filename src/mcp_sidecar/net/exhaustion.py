"""Local resource exhaustion: the worker ran out of descriptors, socket
buffers or memory (sans-io state; the clock is passed in).

Rules this module keeps:

* It is this host's fault, never a peer's: it is counted here by resource
  (``descriptors``, ``buffers``, ``memory``) and where it happened
  (``accept``, ``upstream_connect``, ``health_check``), never as an
  upstream failure, a circuit-breaker failure or a failed health check.
* Readiness fails while exhaustion was seen within ``READY_WINDOW_S`` and
  says which resource, so an orchestrator stops sending traffic to a worker
  that cannot take it, and the operator reads why.
"""

from __future__ import annotations

import os
import resource
from typing import Any

#: Readiness reports exhaustion seen within this many seconds.
READY_WINDOW_S = 10.0
#: Descriptors never given to forwarded connections: the admin endpoint,
#: health checks, the supervisor channel, logs (at least this, or 5 %).
DESCRIPTOR_RESERVE = 32


class DescriptorBudget:
    """How many descriptors forwarded connections may use (HAProxy derives
    its maxconn from ``ulimit -n`` the same way).

    A connection uses two (client and upstream socket), a splicing direction
    two more (its pipe).  A client accepted beyond the budget is refused at
    once, counted, instead of every ``socket()`` failing with ``EMFILE``
    later -- which would read as the upstream being down and would leave the
    admin endpoint unable to accept its probes.
    """

    __slots__ = ("base", "limit", "reserve")

    def __init__(self, limit: int, base: int, reserve: int | None = None) -> None:
        self.limit = limit
        self.base = base
        self.reserve = reserve if reserve is not None else max(DESCRIPTOR_RESERVE, limit // 20)

    @classmethod
    def for_this_process(cls) -> DescriptorBudget:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        try:
            base = len(os.listdir("/proc/self/fd"))
        except OSError:
            base = 64
        return cls(limit, base)

    def allows(self, connections: int, pipes: int) -> bool:
        """May one more connection open, with ``connections`` open and
        ``pipes`` pipes?"""
        return self.base + self.reserve + 2 * (connections + 1) + 2 * pipes <= self.limit

    def as_json(self) -> dict[str, int]:
        return {
            "limit": self.limit,
            "base": self.base,
            "reserve": self.reserve,
            "max_connections": max(0, (self.limit - self.base - self.reserve) // 2),
        }


class LocalExhaustion:
    """What the worker ran out of, where and when (counts, the last time per resource)."""

    __slots__ = ("counts", "last_at", "last_errno")

    def __init__(self) -> None:
        #: (resource, where) -> times seen.
        self.counts: dict[tuple[str, str], int] = {}
        #: resource -> when last seen (the worker's clock).
        self.last_at: dict[str, float] = {}
        self.last_errno: dict[str, str] = {}

    def record(self, resource: str, errno_name: str, where: str, now: float) -> None:
        key = (resource, where)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.last_at[resource] = now
        self.last_errno[resource] = errno_name

    def reasons(self, now: float) -> list[str]:
        """Readiness reasons: each resource exhausted within READY_WINDOW_S."""
        out = []
        for name, at in sorted(self.last_at.items()):
            if now - at <= READY_WINDOW_S:
                total = sum(n for (r, _), n in self.counts.items() if r == name)
                out.append(
                    f"worker out of {name} ({self.last_errno[name]}, {round(now - at, 1)} s ago, "
                    f"{total} time(s) since start)"
                )
        return out

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "counts": [{"resource": r, "where": w, "count": n} for (r, w), n in sorted(self.counts.items())],
            "exhausted_now": self.reasons(now),
        }
