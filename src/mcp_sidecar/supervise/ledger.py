"""What the supervisor remembers across workers and restarts: the persistent
counters, the alerts, and the per-route figures of workers that are gone.

Rules this module keeps:

* Every change that must survive a restart of the whole tree is written to
  the counters file at once (atomically, ``statedir.Counters``) -- best
  effort: a state directory that cannot be written (full, read-only, I/O
  errors) never stops the supervisor.  The counters stay in memory, the
  failure is logged once when it starts and once when it ends, counted and
  shown (``StateWrites``), and the file is written again as soon as it can
  be (the next change, or the supervisor's retry every
  ``STATE_RETRY_INTERVAL_S``).
* It is fed facts (a worker failed, a heartbeat arrived, a worker exited)
  and decides what to count and what to alert; it never starts or stops a
  worker.
* Per-route totals add up across workers: what exited workers accepted,
  plus what the serving and draining ones report.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..logs import log
from .alerts import Alerter
from .messages import StateWriteFacts, SupervisionFacts, WorkerSnapshot
from .statedir import Counters

logger = logging.getLogger(__name__)

#: While the state directory cannot be written, try again this often.
STATE_RETRY_INTERVAL_S = 5.0


@dataclass
class StateWrites:
    """Whether the state directory takes our writes, and since when not."""

    failures: int = 0
    #: The error of the failing streak ("No space left on device (ENOSPC)"), None while writes succeed.
    error: str | None = None
    failing_since_unix: float | None = None

    def facts(self) -> StateWriteFacts:
        return StateWriteFacts(self.error is None, self.failures, self.error, self.failing_since_unix)


class RestartCause(StrEnum):
    """Why a worker was replaced (``mcp_sidecar_worker_restarts_total{cause}``)."""

    CRASH = "crash"
    HANG = "hang"
    RESTART = "restart"
    RELOAD = "reload"


class Ledger:
    """The supervisor's books: counters (persistent), alerts and totals."""

    def __init__(
        self,
        counters: Counters,
        alerts: Alerter | None,
        alert_threshold: int,
        on_state_change: Callable[[], None] | None = None,
    ) -> None:
        self.counters = counters
        self.alerts = alerts
        self.alert_threshold = alert_threshold
        self.writes = StateWrites()
        #: Called when writing starts failing or works again (the workers' views show it).
        self.on_state_change = on_state_change
        self.started_unix = time.time()
        self._upstream_down: set[str] = set()
        #: pid -> route -> upstream connect failures already counted from it.
        self._failures_seen: dict[int, dict[str, int]] = {}
        #: Connections accepted per route by workers that have exited.
        self.retired_totals: dict[str, int] = {}

    def save(self) -> bool:
        """Write the counters file, best effort; True if it was written."""
        writes = self.writes
        try:
            self.counters.save()
        except OSError as exc:
            writes.failures += 1
            if writes.error is None:
                writes.error = describe_os_error(exc)
                writes.failing_since_unix = time.time()
                log(
                    logger,
                    logging.ERROR,
                    "state.write_failed",
                    path=str(self.counters.path),
                    error=writes.error,
                    detail="counters and events are kept in memory and written when the state directory takes "
                    f"writes again (retried every {STATE_RETRY_INTERVAL_S:g} s)",
                )
                self._state_changed()
            return False
        if writes.error is not None:
            log(
                logger,
                logging.WARNING,
                "state.write_recovered",
                path=str(self.counters.path),
                failed_writes=writes.failures,
                error_was=writes.error,
                failing_s=round(time.time() - (writes.failing_since_unix or time.time()), 3),
            )
            writes.error = writes.failing_since_unix = None
            self._state_changed()
        return True

    def retry_save(self) -> None:
        """The supervisor's periodic retry while writes fail."""
        if self.writes.error is not None:
            self.save()

    def _state_changed(self) -> None:
        if self.on_state_change is not None:
            self.on_state_change()

    def record(self, event: str, **details: Any) -> None:
        """Append an event to the persistent counters file."""
        self.counters.event(event, **details)
        self.save()

    def count_restart(self, cause: RestartCause) -> None:
        self.counters.bump("worker_restarts", cause)
        self.save()

    def worker_failed(
        self, cause: RestartCause, pid: int, role: str, detail: str, consecutive: int, next_start_in_s: float
    ) -> None:
        self.count_restart(cause)
        self.record(f"worker_{cause}", pid=pid, role=role, detail=detail)
        if self.alerts is not None:
            self.alerts.failure(
                "worker",
                f"worker {cause} ({detail}); {consecutive} consecutive failure(s), "
                f"next start in {next_start_in_s:.1f} s",
                pid=pid,
                cause=str(cause),
            )

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
            self.save()

    def retire(self, pid: int, snapshot: WorkerSnapshot | None) -> None:
        """A worker exited: what it accepted joins the totals of the gone."""
        self._failures_seen.pop(pid, None)
        for route in snapshot.routes if snapshot is not None else ():
            self.retired_totals[route.name] = self.retired_totals.get(route.name, 0) + route.connections_total

    def facts(self, consecutive_failures: int) -> SupervisionFacts:
        data = self.counters.data
        return SupervisionFacts(
            os.getpid(),
            round(time.time() - self.started_unix, 3),
            dict(data["worker_restarts"]),
            consecutive_failures,
            dict(data["upstream_connect_failures"]),
            self.writes.facts(),
        )

    def problems(self, state_dir: str) -> list[str]:
        """What ``proxyctl status`` lists as problems of the books."""
        writes = self.writes
        if writes.error is None:
            return []
        return [
            f"state directory {state_dir} does not take writes ({writes.error}) since "
            f"{time.strftime('%H:%M:%S', time.localtime(writes.failing_since_unix or 0))}: counters and events "
            "are kept in memory and saved when it does again"
        ]

    def as_json(self) -> dict[str, Any]:
        alerts = self.alerts
        return {
            "firing": alerts.state.firing() if alerts is not None else [],
            "sent": alerts.sent if alerts is not None else 0,
            "webhook_failures": alerts.webhook_failures if alerts is not None else 0,
        }


def describe_os_error(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: the words and the errno name."""
    name = errno.errorcode.get(exc.errno or 0, "")
    words = exc.strerror or str(exc)
    return f"{words} ({name})" if name else words
