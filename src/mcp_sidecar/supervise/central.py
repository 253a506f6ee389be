"""The supervisor's own MCP books, when several workers share the routes: the
per-method, per-target and per-session figures of all of them, and the
correlation of the transports whose request and answer travel on two
connections (which may be in two workers).

Rules this module keeps:

* Fed with the workers' reports (``McpDelta``), each applied once; the
  figures live here, so they survive any worker's exit, a restart and a
  reload (a route kept keeps its books).
* Times are unix time: the workers' reports carry it; windows are computed
  with ``time.time()``.
* The correlated transports' outcomes are counted here like a worker counts
  its own: ``mcp_requests_total`` and ``mcp_response_duration_seconds`` in
  this process's instruments (merged with the workers'), the request log,
  the figures; timeouts are swept here.
* Their spans and OTLP metrics (``[otel]``) are this process's to export:
  the same exporters as a worker's, ended at the answer's own time.
* Their messages are correlated in the order they were forwarded, whichever
  worker reported them first: a message waits until every serving worker
  (from the moment it is told to serve: ``joined``) has reported past its
  time (``at_unix`` of their reports), so an answer relayed by one worker is
  never matched before the request another worker forwarded earlier.  At
  most ``MAX_WAITING`` wait; beyond, the oldest go.
* Forwarding order is not clock order across processes: a worker reads its
  clock after the kernel took a request, and may be preempted in between
  while another worker relays the answer.  So an answer whose request is not
  here yet is held (``EARLY_ANSWER_S``, observe/mcp.py) and completes the
  request when its report comes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from typing import Any

from ..config.model import ProxyConfig, RouteConfig
from ..forward.failopen import log_bug
from ..forward.metrics import Metrics
from ..forward.observation import STRICT
from ..forward.otelsinks import OtelSinks
from ..logs import log
from ..observe.events import McpOutcome
from ..observe.mcp import McpTracker
from ..observe.mcpstats import McpStats
from ..observe.requestlog import RequestLogPolicy, request_line
from .messages import McpDelta

logger = logging.getLogger("mcp_sidecar.forward.observation")

#: Messages of the correlated transports waiting for every worker's report.
MAX_WAITING = 100_000
#: How long an answer waits for a request reported after it: its worker
#: reports every heartbeat, or is replaced after the heartbeat timeout.
EARLY_ANSWER_S = 10.0


class RouteBooks:
    """One route's MCP figures, merged from every worker."""

    def __init__(self, route: RouteConfig, metrics: Metrics, otel: OtelSinks) -> None:
        self.name = route.name
        self.metrics = metrics
        self.otel = otel
        self.stats = McpStats()
        self.tracker = McpTracker(route.settings.observe.mcp_request_timeout_s, early_answer_s=EARLY_ANSWER_S)
        observe = route.settings.observe
        self.request_log = (
            RequestLogPolicy(observe.request_log_sample, observe.request_log_rate) if observe.request_log else None
        )
        #: worker id -> its requests awaiting an answer now, by method.
        self.in_flight: dict[int, dict[str, int]] = {}
        #: worker id -> its request log's counts (the latest report).
        self.request_logs: dict[int, dict[str, Any]] = {}

    def apply(self, worker: int, delta: McpDelta) -> None:
        stats = self.stats
        for ended in delta.ended:
            stats.end_session(ended)
        for key, client, transport, at, requests, last_method, version in delta.sessions:
            stats.touch_session(key, client, transport, at, requests, last_method, version)
        for address, transport, at, requests, last_method, version in delta.clients:
            stats.touch_client(address, transport, at, requests, last_method, version)
        for at, method, status, duration, transport, version, target, parts in delta.outcomes:
            stats.outcome(
                McpOutcome(
                    method, status, duration, "client", transport, protocol_version=version, target=target, parts=parts
                ),
                at,
            )
        self.in_flight[worker] = dict(delta.in_flight)
        if delta.request_log is not None:
            self.request_logs[worker] = delta.request_log

    def correlate(self, remote: tuple[Any, ...]) -> None:
        """One message of a transport spanning connections, in forwarding order.
        Fail open, as a worker's observer: a defect here loses the message,
        counted and logged, never the supervisor (it holds every listening socket)."""
        origin, message, at, session, transport, size, trace, version, target = remote
        try:
            outcomes = self.tracker.message(origin, message, at, session, transport, size, trace, version, target)
        except Exception as exc:
            if STRICT:
                raise
            self.metrics.observer_errors.labels(self.name, "mcp").inc()
            log_bug(exc, route=self.name, protocol="mcp", where="supervisor")
            return
        self.outcomes(outcomes, at)

    def outcomes(self, outcomes: list[McpOutcome], now: float) -> None:
        """What the correlation here completed: counted as a worker counts its own."""
        otel = self.otel
        for outcome in outcomes:
            route = self.name
            otel.outcome(route, outcome, end_unix=now)
            labels = (
                route,
                outcome.method,
                outcome.status,
                outcome.transport,
                outcome.protocol_version,
                outcome.target,
            )
            self.metrics.mcp_requests.labels(*labels).inc()
            if outcome.duration_s is not None and outcome.status != "cancelled":
                self.metrics.mcp_duration.labels(
                    route, outcome.method, outcome.transport, outcome.protocol_version, outcome.target
                ).observe(outcome.duration_s)
            self.stats.outcome(outcome, now)
            if self.request_log is not None and self.request_log.admit(now):
                log(logger, logging.INFO, "mcp.request", unlimited=True, **request_line(route, outcome))

    def forget(self, worker: int) -> None:
        """A worker exited: what it had in flight is nobody's now."""
        self.in_flight.pop(worker, None)

    def pending(self) -> dict[str, int]:
        merged = dict(self.tracker.in_flight())
        for counts in self.in_flight.values():
            for method, n in counts.items():
                merged[method] = merged.get(method, 0) + n
        return merged

    def sweep(self, now: float) -> None:
        self.outcomes(self.tracker.sweep(now), now)
        self.stats.expire(now)


class CentralMcp:
    """Every route's books; the instruments of what is correlated here."""

    def __init__(self, config: ProxyConfig) -> None:
        self.metrics = Metrics()
        self.otel = OtelSinks(config.otel, self.metrics)
        self.routes: dict[str, RouteBooks] = {r.name: RouteBooks(r, self.metrics, self.otel) for r in config.routes}
        #: (at_unix, order, route, message): waiting for every worker to report past it.
        self._waiting: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._order = itertools.count()
        #: worker id -> when its latest report was built.
        self._reported: dict[int, float] = {}

    def reconfigure(self, config: ProxyConfig) -> bool:
        """A reload: kept routes keep their books, new ones start empty.  True
        when ``[otel]`` changed (the exporters are new: their tasks start again)."""
        changed = config.otel != self.otel.config
        if changed:
            self.otel = OtelSinks(config.otel, self.metrics)
            for books in self.routes.values():
                books.otel = self.otel
        self.routes = {r.name: self.routes.get(r.name) or RouteBooks(r, self.metrics, self.otel) for r in config.routes}
        return changed

    def apply(self, worker: int, deltas: tuple[McpDelta, ...], at_unix: float) -> None:
        """A serving worker's report (built at ``at_unix``)."""
        for delta in deltas:
            books = self.routes.get(delta.route)
            if books is not None:
                books.apply(worker, delta)
                for remote in delta.remote:
                    heapq.heappush(self._waiting, (remote[2], next(self._order), delta.route, remote))
        if deltas:
            self._reported[worker] = at_unix
        self._release()

    def joined(self, worker: int, at_unix: float) -> None:
        """A worker starts serving now: nothing it forwards is older, so messages
        wait for its reports past this time too (it has made none yet: without
        this, an answer another worker relayed could be matched before this
        worker's report of its request arrived, and be lost)."""
        self._reported.setdefault(worker, at_unix)

    def forget(self, worker: int) -> None:
        """A worker exited: it reports nothing more (its last report is in)."""
        for books in self.routes.values():
            books.forget(worker)
        self._reported.pop(worker, None)
        self._release()

    def _release(self) -> None:
        """Correlate the waiting messages every worker has reported past."""
        horizon = min(self._reported.values(), default=float("inf"))
        waiting = self._waiting
        while waiting and (waiting[0][0] <= horizon or len(waiting) > MAX_WAITING):
            _, _, route, remote = heapq.heappop(waiting)
            books = self.routes.get(route)
            if books is not None:
                books.correlate(remote)

    def sweep(self, now: float) -> None:
        for books in self.routes.values():
            books.sweep(now)
