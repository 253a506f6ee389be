"""Upstream health: active checks by level, rise/fall, adaptive intervals,
and the passive circuit breaker.

Rules this module keeps:

* ``UpstreamHealth`` (one per upstream address) and ``CircuitBreaker`` (one
  per route) are plain state: no I/O, the clock is passed in.  They are
  tested step by step.
* rise/fall as in HAProxy; the first result sets the state directly, so a
  sidecar in front of a dead upstream is not ready at once.  With
  ``health_interval = 0`` no checks run and the upstream counts as healthy.
* Adaptive interval (seed 003): after a failure or a state change checks run
  at a quarter of ``health_interval``; every ``rise`` successes in a row
  while up double the interval, up to ``health_interval_max``; +-10 % jitter.
* Check levels: L1 ``tcp`` connect; L2 ``http`` GET ``health_path`` (2xx/3xx
  pass) or ``ws`` handshake + ping; L3 ``mcp`` initialize + ping (see
  probes.py).  A route is healthy when any of its upstreams is.
* The breaker counts clients that could not be connected to any upstream
  (after their retry window).  ``breaker_failures`` in a row open it for
  ``breaker_open``; then exactly one client is let through as a probe: its
  success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .addresses import HostPort
from .errors import LocalResourceError
from .logs import log

if TYPE_CHECKING:
    from .proxy import RouteRuntime

logger = logging.getLogger("mcp_sidecar.health")

JITTER = 0.1
MIN_INTERVAL_S = 0.05


@dataclass
class UpstreamHealth:
    address: HostPort
    rise: int
    fall: int
    interval_s: float = 5.0
    interval_max_s: float = 30.0
    enabled: bool = True
    #: None until the first check has run.
    state: bool | None = None
    successes: int = 0
    failures: int = 0
    checks: int = 0
    last_check_unix: float | None = None
    last_result: str | None = None
    last_duration_s: float | None = None
    last_change_unix: float | None = None
    transitions: int = 0

    @property
    def healthy(self) -> bool:
        return (not self.enabled) or bool(self.state)

    @property
    def state_name(self) -> str:
        if not self.enabled:
            return "unchecked"
        return {None: "unknown", True: "up", False: "down"}[self.state]

    def record(self, ok: bool, result: str, duration_s: float) -> bool | None:
        """Apply one check result; return the new state if it changed."""
        self.checks += 1
        self.last_check_unix = time.time()
        self.last_result = result
        self.last_duration_s = duration_s
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0
        new = self.state
        if self.state is None:
            new = ok
        elif not self.state and self.successes >= self.rise:
            new = True
        elif self.state and self.failures >= self.fall:
            new = False
        if new != self.state:
            self.state = new
            self.last_change_unix = self.last_check_unix
            self.transitions += 1
            self.successes = self.failures = 0
            return new
        return None

    def next_interval_s(self) -> float:
        """Before jitter: fast while unsettled, slower the longer it is stable."""
        fast = max(MIN_INTERVAL_S, self.interval_s / 4)
        if self.state is None or self.failures or (self.state and self.successes < self.rise):
            return fast
        if not self.state:
            return fast if self.successes else self.interval_s
        doublings = self.successes // self.rise - 1
        return min(self.interval_max_s, self.interval_s * 2 ** min(doublings, 20))

    def as_json(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "state": self.state_name,
            "healthy": self.healthy,
            "checks": self.checks,
            "last_result": self.last_result,
            "last_check_unix": self.last_check_unix,
            "last_duration_ms": None if self.last_duration_s is None else round(self.last_duration_s * 1000, 3),
            "consecutive_successes": self.successes,
            "consecutive_failures": self.failures,
            "next_interval_s": round(self.next_interval_s(), 3) if self.enabled else None,
        }


@dataclass
class RouteHealth:
    """The health of a route's upstreams, in the route's order of preference."""

    targets: list[UpstreamHealth]
    check: str = "tcp"

    @property
    def enabled(self) -> bool:
        return self.targets[0].enabled

    @property
    def healthy(self) -> bool:
        return any(t.healthy for t in self.targets)

    @property
    def state(self) -> bool | None:
        states = [t.state for t in self.targets]
        if any(states):
            return True
        return None if all(s is None for s in states) else False

    @property
    def state_name(self) -> str:
        if not self.enabled:
            return "unchecked"
        return {None: "unknown", True: "up", False: "down"}[self.state]

    @property
    def last_result(self) -> str | None:
        """The last check results: ``refused``, or ``a:1 refused, b:2 timeout``."""
        if len(self.targets) == 1:
            return self.targets[0].last_result
        return ", ".join(f"{t.address} {t.last_result}" for t in self.targets if t.last_result) or None

    def preferred(self) -> list[HostPort]:
        """Addresses to try, in order: healthy or unknown ones first."""
        good = [t.address for t in self.targets if t.state is not False or not t.enabled]
        bad = [t.address for t in self.targets if t.enabled and t.state is False]
        return good + bad

    def as_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "check": self.check,
            "healthy": self.healthy,
            "state": self.state_name,
            "upstreams": [t.as_json() for t in self.targets],
        }


@dataclass
class CircuitBreaker:
    threshold: int
    open_s: float
    state: str = "closed"  # closed | open | half_open
    failures: int = 0
    open_until: float = 0.0
    opened_total: int = 0
    rejected: int = 0
    probe_in_flight: bool = False
    last_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def allow(self, now: float) -> bool:
        """May a new client try the upstream?  In half-open, only one may."""
        if not self.enabled or self.state == "closed":
            return True
        if self.state == "open" and now >= self.open_until:
            self.state = "half_open"
        if self.state == "half_open" and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        self.rejected += 1
        return False

    def retry_after_s(self, now: float) -> int:
        return max(1, math.ceil(self.open_until - now)) if self.state != "closed" else 0

    def record_success(self) -> bool:
        """True if this closed an open/half-open breaker."""
        was = self.state
        self.state = "closed"
        self.failures = 0
        self.probe_in_flight = False
        return was != "closed"

    def record_failure(self, now: float, reason: str) -> bool:
        """True if this opened the breaker."""
        self.failures += 1
        self.last_reason = reason
        if not self.enabled:
            return False
        if self.state == "half_open" or (self.state == "closed" and self.failures >= self.threshold):
            self.state = "open"
            self.open_until = now + self.open_s
            self.opened_total += 1
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
            "retry_after_s": self.retry_after_s(now) if self.state != "closed" else None,
            "last_reason": self.last_reason,
        }


def route_health(rt_config: Any) -> RouteHealth:
    s = rt_config.settings
    return RouteHealth(
        [UpstreamHealth(addr, s.health_rise, s.health_fall, s.health_interval_s, s.health_interval_max_s,
                        enabled=s.health_interval_s > 0) for addr in rt_config.upstreams],
        check=s.health_check,
    )


async def run_checks(rt: "RouteRuntime", target: UpstreamHealth) -> None:
    """Check one upstream address of a route forever."""
    from .probes import probe

    settings = rt.config.settings
    while True:
        t0 = trio.current_time()
        try:
            ok, result = await probe(settings.health_check, target.address, settings.health_path,
                                     settings.health_timeout_s, rt.connector)
        except LocalResourceError as exc:
            # This host cannot even open a socket: says nothing about the upstream.
            rt.exhaustion.record(exc.resource, exc.errno_name, "health_check", trio.current_time())
            await trio.sleep(target.next_interval_s())
            continue
        changed = target.record(ok, result, trio.current_time() - t0)
        if changed is not None:
            log(logger, logging.INFO if changed else logging.WARNING,
                "upstream.up" if changed else "upstream.down",
                route=rt.config.name, upstream=str(target.address), check=settings.health_check, result=result)
        await trio.sleep(target.next_interval_s() * random.uniform(1 - JITTER, 1 + JITTER))
