"""Upstream health: active checks with HAProxy's rise/fall.

Rules this module keeps:

* ``UpstreamHealth`` is plain state (no I/O): ``record(ok, ...)`` applies
  rise/fall.  The first result sets the state directly, so a sidecar that
  starts in front of a dead upstream is not ready at once, and one in front
  of a live upstream is ready after one check.
* With ``health_interval = 0`` no checks run and the upstream counts as
  healthy (readiness then ignores it).
* The checker is one task per route: a TCP connect (L1) bounded by
  ``health_timeout``, every ``health_interval`` with +-10 % jitter so that
  many sidecars do not probe in step.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .logs import log
from .upstream import classify

if TYPE_CHECKING:
    from .proxy import RouteRuntime

logger = logging.getLogger("mcp_sidecar.health")

JITTER = 0.1


@dataclass
class UpstreamHealth:
    rise: int
    fall: int
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
            return new
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "healthy": self.healthy,
            "state": {None: "unknown", True: "up", False: "down"}[self.state] if self.enabled else "unchecked",
            "checks": self.checks,
            "last_result": self.last_result,
            "last_check_unix": self.last_check_unix,
            "last_duration_ms": None if self.last_duration_s is None else round(self.last_duration_s * 1000, 3),
            "consecutive_successes": self.successes,
            "consecutive_failures": self.failures,
        }


async def check_tcp(rt: "RouteRuntime") -> tuple[bool, str]:
    """L1: can a TCP connection to the upstream be opened?"""
    try:
        with trio.fail_after(rt.config.settings.health_timeout_s):
            sock = await rt.connector.attempt_once()
    except (OSError, trio.TooSlowError) as exc:
        return False, classify(exc)
    sock.close()
    return True, "ok"


async def run_checks(rt: "RouteRuntime") -> None:
    settings = rt.config.settings
    health = rt.health
    while True:
        t0 = trio.current_time()
        ok, result = await check_tcp(rt)
        changed = health.record(ok, result, trio.current_time() - t0)
        if changed is not None:
            log(logger, logging.INFO if changed else logging.WARNING,
                "upstream.up" if changed else "upstream.down",
                route=rt.config.name, upstream=str(rt.config.upstream), result=result)
        await trio.sleep(settings.health_interval_s * random.uniform(1 - JITTER, 1 + JITTER))
