"""Upstream health: active checks by level, rise/fall, adaptive intervals.

Rules this module keeps:

* ``UpstreamHealth`` (one per upstream address) is plain state: no I/O, the
  clock is passed in; tested step by step.  (The passive side, the circuit
  breaker, is ``breaker.py``.)
* rise/fall as in HAProxy; the first result sets the state directly, so a
  sidecar in front of a dead upstream is not ready at once.  With
  ``health_interval = 0`` no checks run and the upstream counts as healthy.
* Adaptive interval: after a failure or a state change checks run
  at a quarter of ``health_interval``; every ``rise`` successes in a row
  while up double the interval, up to ``health_interval_max``; +-10 % jitter.
* Check levels: L1 ``tcp`` connect; L2 ``http`` GET ``health_path`` (2xx/3xx
  pass) or ``ws`` handshake + ping; L3 ``mcp`` initialize + ping (see
  probes.py).  A route is healthy when any of its upstreams is.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..config.addresses import HostPort
from ..config.model import RouteConfig, RouteSettings
from ..errors import LocalResourceError
from ..logs import log
from ..net.exhaustion import LocalExhaustion
from ..net.upstream import Connector
from .probes import probe

logger = logging.getLogger(__name__)

JITTER = 0.1
MIN_INTERVAL_S = 0.05
#: Check results each upstream keeps for the views (the dashboard's history), newest last.
HISTORY_CHECKS = 20


@dataclass
class UpstreamHealth:
    """One upstream address's check results and the state they add up to
    (HAProxy's rise/fall), with when it last changed."""

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
    #: The last HISTORY_CHECKS results: (unix time, passed, result in words).
    history: deque[tuple[float, bool, str]] = field(default_factory=lambda: deque(maxlen=HISTORY_CHECKS))

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
        self.history.append((self.last_check_unix, ok, result))
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
        return float(min(self.interval_max_s, self.interval_s * 2 ** min(doublings, 20)))

    def as_json(self) -> dict[str, Any]:
        return {
            "address": str(self.address),
            "state": self.state_name,
            "healthy": self.healthy,
            "checks": self.checks,
            "last_result": self.last_result,
            "last_check_unix": self.last_check_unix,
            "last_duration_ms": None if self.last_duration_s is None else round(self.last_duration_s * 1000, 3),
            "since_unix": self.last_change_unix,
            "transitions": self.transitions,
            "consecutive_successes": self.successes,
            "consecutive_failures": self.failures,
            "next_interval_s": round(self.next_interval_s(), 3) if self.enabled else None,
            "history": [{"at_unix": at, "ok": ok, "result": result} for at, ok, result in self.history],
        }


@dataclass
class RouteHealth:
    """The health of a route's upstreams, in the route's order of preference:
    healthy when any of them is."""

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
    def since_unix(self) -> float | None:
        """Since when the route's state holds: up since the earliest change of
        an upstream that is up now (it has been up throughout), down since
        the latest one went down; None before any change."""
        if self.state is True:
            times = [t.last_change_unix for t in self.targets if t.state is True and t.last_change_unix]
            return min(times, default=None)
        times = [t.last_change_unix for t in self.targets if t.last_change_unix]
        return max(times, default=None)

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


def route_health(rt_config: RouteConfig) -> RouteHealth:
    s = rt_config.settings
    return RouteHealth(
        [
            UpstreamHealth(
                addr,
                s.health.rise,
                s.health.fall,
                s.health.interval_s,
                s.health.interval_max_s,
                enabled=s.health.interval_s > 0,
            )
            for addr in rt_config.upstreams
        ],
        check=s.health.check,
    )


async def run_checks(
    route: str,
    settings: RouteSettings,
    target: UpstreamHealth,
    connector: Connector,
    exhaustion: LocalExhaustion,
    on_result: Callable[[], None] | None = None,
) -> None:
    """Check one upstream address of a route forever (``on_result`` is told
    after each check: the supervisor passes the results on to its workers)."""
    while True:
        t0 = trio.current_time()
        try:
            ok, result = await probe(
                settings.health.check, target.address, settings.health.path, settings.health.timeout_s, connector
            )
        except LocalResourceError as exc:
            # This host cannot even open a socket: says nothing about the upstream.
            exhaustion.record(exc.resource, exc.errno_name, "health_check", trio.current_time())
            await trio.sleep(target.next_interval_s())
            continue
        changed = target.record(ok, result, trio.current_time() - t0)
        if on_result is not None:
            on_result()
        if changed is not None:
            log(
                logger,
                logging.INFO if changed else logging.WARNING,
                "upstream.up" if changed else "upstream.down",
                route=route,
                upstream=str(target.address),
                check=settings.health.check,
                result=result,
            )
        await trio.sleep(target.next_interval_s() * random.uniform(1 - JITTER, 1 + JITTER))
