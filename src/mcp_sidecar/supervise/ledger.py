"""What the supervisor remembers across workers and restarts: the persistent
counters, the alerts, and the per-route figures of workers that are gone.

Rules this module keeps:

* Every change that must survive a restart of the whole tree is written to
  the counters file at once (atomically, ``statedir.Counters``).
* It is fed facts (a worker failed, a heartbeat arrived, a worker exited)
  and decides what to count and what to alert; it never starts or stops a
  worker.
* Per-route totals add up across workers: what exited workers accepted,
  plus what the serving and draining ones report.
"""

from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import Any

from .alerts import Alerter
from .messages import SupervisionFacts, WorkerSnapshot
from .statedir import Counters


class RestartCause(StrEnum):
    """Why a worker was replaced (``mcp_sidecar_worker_restarts_total{cause}``)."""

    CRASH = "crash"
    HANG = "hang"
    RESTART = "restart"
    RELOAD = "reload"


class Ledger:
    """The supervisor's books: counters (persistent), alerts and totals."""

    def __init__(self, counters: Counters, alerts: Alerter | None, alert_threshold: int) -> None:
        self.counters = counters
        self.alerts = alerts
        self.alert_threshold = alert_threshold
        self.started_unix = time.time()
        self._upstream_down: set[str] = set()
        #: pid -> route -> upstream connect failures already counted from it.
        self._failures_seen: dict[int, dict[str, int]] = {}
        #: Connections accepted per route by workers that have exited.
        self.retired_totals: dict[str, int] = {}

    def record(self, event: str, **details: Any) -> None:
        """Append an event to the persistent counters file."""
        self.counters.event(event, **details)
        self.counters.save()

    def count_restart(self, cause: RestartCause) -> None:
        self.counters.bump("worker_restarts", cause)
        self.counters.save()

    def worker_failed(self, cause: RestartCause, pid: int, role: str, detail: str, consecutive: int,
                      next_start_in_s: float) -> None:
        self.count_restart(cause)
        self.record(f"worker_{cause}", pid=pid, role=role, detail=detail)
        if self.alerts is not None:
            self.alerts.failure("worker", f"worker {cause} ({detail}); {consecutive} consecutive failure(s), "
                                f"next start in {next_start_in_s:.1f} s", pid=pid, cause=str(cause))

    def worker_stable(self, pid: int) -> None:
        if self.alerts is not None:
            self.alerts.recovered("worker", "worker is stable again", pid=pid)

    def absorb(self, snapshot: WorkerSnapshot) -> None:
        """The active worker's heartbeat: persist per-route upstream failures;
        alert when an upstream goes down, and when it is up again."""
        changed = False
        seen = self._failures_seen.setdefault(snapshot.pid, {})
        for route in snapshot.routes:
            name = route.name
            total = sum(route.upstream_connect_failures.values())
            delta = total - seen.get(name, 0)
            if delta > 0:
                self.counters.bump("upstream_connect_failures", name, delta)
                seen[name] = total
                changed = True
            if route.upstream_state == "down" and name not in self._upstream_down:
                self._upstream_down.add(name)
                self.counters.bump("upstream_down", name)
                self.counters.event("upstream_down", route=name)
                changed = True
                if self.alerts is not None:
                    for _ in range(self.alert_threshold):
                        self.alerts.failure(f"upstream {name}", f"route {name}: upstream is down", route=name)
            elif route.upstream_state == "up" and name in self._upstream_down:
                self._upstream_down.discard(name)
                if self.alerts is not None:
                    self.alerts.recovered(f"upstream {name}", f"route {name}: upstream is up again", route=name)
        if changed:
            self.counters.save()

    def retire(self, pid: int, snapshot: WorkerSnapshot | None) -> None:
        """A worker exited: what it accepted joins the totals of the gone."""
        self._failures_seen.pop(pid, None)
        for route in snapshot.routes if snapshot is not None else ():
            self.retired_totals[route.name] = self.retired_totals.get(route.name, 0) + route.connections_total

    def facts(self, consecutive_failures: int) -> SupervisionFacts:
        data = self.counters.data
        return SupervisionFacts(os.getpid(), round(time.time() - self.started_unix, 3),
                                dict(data["worker_restarts"]), consecutive_failures,
                                dict(data["upstream_connect_failures"]))

    def as_json(self) -> dict[str, Any]:
        alerts = self.alerts
        return {"firing": alerts.state.firing() if alerts is not None else [],
                "sent": alerts.sent if alerts is not None else 0,
                "webhook_failures": alerts.webhook_failures if alerts is not None else 0}
