"""The supervisor's side of the one view: its workers' reports applied, its
questions to them (connections) and their answers, the tap relayed, the
upstream checks passed on, and the admin endpoint it serves from all that.

Rules this module keeps:

* Every report (``Heartbeat``) is applied once, in the order it came: its
  MCP activity to the central books (central.py), its figures kept as the
  worker's latest snapshot; a worker's last report is read before its exit
  is counted (the view keeps what it counted).
* A view that must be current (``settle``) asks the serving workers for a
  report (``Refresh``) and waits at most ``REFRESH_WAIT_S`` for the ones
  that answer it; a question (``Query``) waits at most ``QUERY_WAIT_S``.
  A slow or dead worker delays a view, never blocks it.
* The admin endpoint is the supervisor's: it answers while any worker is
  down; a failure in it is logged and it starts again, the supervisor
  never exits for it.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import trio

from .. import logs
from ..admin.server import AdminServer
from ..config.faults import FaultSpec
from ..forward.recorder import run_recorders
from ..forward.state import OPERATOR_ACTIONS
from ..logs import log
from .central import CentralMcp
from .checks import SupervisorChecks
from .faultstore import FaultStore, merge_views
from .lifecycle import WorkerLifecycle
from .messages import (
    Answer,
    HealthUpdate,
    Heartbeat,
    LogLevel,
    Query,
    Refresh,
    RouteControls,
    TapBatch,
    ToWorker,
)
from .view import SupervisedView
from .workers import Role, Worker

logger = logging.getLogger("mcp_sidecar.supervise.supervisor")

REFRESH_WAIT_S = 0.5
QUERY_WAIT_S = 2.0
#: The central books' timeouts and windows are swept this often.
SWEEP_INTERVAL_S = 1.0
#: A failed admin endpoint starts again after this.
ADMIN_RESTART_S = 1.0


class _Pending:
    __slots__ = ("done", "payload")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.payload: Any = None


class SupervisorReporting(WorkerLifecycle):
    """Reports, questions, taps, checks and the admin endpoint (the
    supervisor's attributes declared in lifecycle.py and here)."""

    central: CentralMcp
    checks: SupervisorChecks
    view: SupervisedView
    _pending: dict[int, _Pending]
    _admin_scope: trio.CancelScope | None
    _record_scope: trio.CancelScope | None
    _otel_scope: trio.CancelScope | None
    log_level: str
    #: route -> (state, since unix): what operators set, until enabled again.
    route_controls: dict[str, tuple[str, float]]
    #: The operators' faults (and the configured ones they took out).
    fault_store: FaultStore

    def request_stop(self) -> None:
        raise NotImplementedError

    def _init_reporting(self) -> None:
        self.central = CentralMcp(self.config)
        self.checks = SupervisorChecks(self.config, self._health_changed)
        self.view = SupervisedView(self, self.central, self.checks)
        self._pending = {}
        self._query_ids = itertools.count(1)
        self._admin_scope = None
        self._record_scope = None
        self._otel_scope = None
        self.route_controls = {}
        self.fault_store = FaultStore()

    # --- what the view asks --------------------------------------------------------------

    def facts(self) -> dict[str, Any] | None:
        if self.ledger is None:
            return None
        return self.ledger.facts(self.consecutive_failures).as_json()

    def tell(self, worker: Worker, message: ToWorker) -> None:
        if self._nursery is not None and not worker.exited.is_set():
            self._nursery.start_soon(self._send, worker, message)

    async def refresh_reports(self) -> None:
        serving = [w for w in self._alive() if w.role in (Role.ACTIVE, Role.DRAINING) and w.serving.is_set()]
        wanted = {}
        for worker in serving:
            worker.refreshes_sent += 1
            wanted[worker.id] = worker.refreshes_sent
            self.tell(worker, Refresh())
        with trio.move_on_after(REFRESH_WAIT_S):
            for worker in serving:
                while worker.refreshed < wanted[worker.id] and not worker.exited.is_set():
                    await worker.reported.wait()

    async def ask(self, worker: Worker, kind: str, args: dict[str, Any]) -> Any:
        query_id = next(self._query_ids)
        pending = self._pending[query_id] = _Pending()
        try:
            if not await self._send(worker, Query(query_id, kind, args)):
                return None
            with trio.move_on_after(QUERY_WAIT_S):
                await pending.done.wait()
            return pending.payload
        finally:
            self._pending.pop(query_id, None)

    # --- what the workers send -----------------------------------------------------------

    def _reported(self, worker: Worker, message: Heartbeat) -> None:
        worker.last_heartbeat = trio.current_time()
        worker.snapshot = message.snapshot
        self.central.apply(worker.id, message.snapshot.mcp, message.snapshot.at_unix)
        if worker.role is Role.ACTIVE and self.ledger is not None:
            self.ledger.absorb(message.snapshot)
        worker.refreshed = message.refreshed
        worker.reported.set()
        worker.reported = trio.Event()

    def _answered(self, message: Answer) -> None:
        pending = self._pending.get(message.id)
        if pending is not None:
            pending.payload = message.payload
            pending.done.set()

    def _tapped(self, message: TapBatch) -> None:
        taps = self.view.taps
        for record in message.records:
            taps.offer(record)
        if message.lines:
            taps.offer_lines(message.lines)
        taps.dropped_gone += message.dropped

    def _health_changed(self, update: HealthUpdate) -> None:
        for worker in self._alive():
            self.tell(worker, update)

    def _activating(self, worker: Worker) -> None:
        """A worker is about to serve: the correlation waits for its reports from now on."""
        self.central.joined(worker.id, time.time())

    def _started_serving(self, worker: Worker) -> None:
        """A worker now serves: what it must know that came before."""
        if self.view.taps.subscribers:
            self.tell(worker, self.view.tap_message())
        if self.route_controls:
            self.tell(worker, self._controls_message())
        if not self.fault_store.empty:
            self.tell(worker, self.fault_store.message(time.time()))

    # --- what operators change at run time --------------------------------------------------

    def control_route(self, name: str, action: str) -> str | None:
        """``drain``, ``disable`` or ``enable`` route ``name`` in every worker, now and
        for the workers to come (a reload keeps it while the route exists)."""
        names = [r.name for r in self.config.routes]
        if name not in names:
            return f"no route {name!r} (routes: {', '.join(names)})"
        state = OPERATOR_ACTIONS[action]
        if state == "enabled":
            self.route_controls.pop(name, None)
        elif self.route_controls.get(name, ("",))[0] != state:
            self.route_controls[name] = (state, time.time())
        if self.ledger is not None:
            self.ledger.record("route_control", route=name, state=state)
        message = self._controls_message()
        for worker in self._alive():
            self.tell(worker, message)
        return None

    def _controls_message(self) -> RouteControls:
        return RouteControls(tuple((name, state, since) for name, (state, since) in self.route_controls.items()))

    def _prune_controls(self) -> None:
        """A reload: controls of routes that are gone go with them."""
        names = {r.name for r in self.config.routes}
        self.route_controls = {n: c for n, c in self.route_controls.items() if n in names}

    # --- faults (``proxyctl fault``, the admin API) ---------------------------------------------

    def fault_add(self, spec: FaultSpec) -> str | None:
        refused = self.fault_store.add(self.config, spec, time.time())
        if refused is None:
            if self.ledger is not None:
                self.ledger.record("fault_added", route=spec.route, fault=spec.name, kind=str(spec.kind))
            self._faults_changed()
        return refused

    def fault_remove(self, route: str, name: str) -> str | None:
        refused = self.fault_store.remove(self.config, route, name, time.time())
        if refused is None:
            self._faults_changed()
        return refused

    def fault_clear(self, route: str | None) -> int | str:
        removed = self.fault_store.clear(self.config, route)
        if not isinstance(removed, str):
            self._faults_changed()
        return removed

    def _faults_changed(self) -> None:
        message = self.fault_store.message(time.time())
        for worker in self._alive():
            self.tell(worker, message)

    def faults_view(self) -> dict[str, Any]:
        views = [w.snapshot.local.get("faults") or {} for w in self._reporting_workers() if w.snapshot is not None]
        return merge_views(self.config.faults_enabled, views)

    def _reporting_workers(self) -> list[Worker]:
        return [
            w
            for w in self.workers
            if w.role in (Role.ACTIVE, Role.DRAINING) and w.snapshot is not None and w.snapshot.families
        ]

    def set_log_level(self, level: str) -> None:
        """The whole tree's log level: the supervisor's, every worker's, the next ones'."""
        logs.set_level(level)
        self.log_level = level
        for worker in self._alive():
            self.tell(worker, LogLevel(level))

    def _retired(self, worker: Worker) -> None:
        """A worker exited: its counts go to the view, its slot is free."""
        self.view.retire(worker)
        self.central.forget(worker.id)
        if worker.counts is not None and worker.slot is not None:
            worker.counts.give_back(worker.slot)

    # --- the supervisor's own tasks --------------------------------------------------------

    async def _sweep_books(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL_S)
            self.central.sweep(time.time())

    async def _serve_admin(self) -> None:
        """The admin endpoint, from the merged view; started again if it fails."""
        assert self.sockets is not None
        while True:
            sockets = self.sockets
            if sockets.admin is None:
                await trio.sleep_forever()
            # (a copy of the socket: the server closes its own when it ends, the supervisor keeps the original)
            admin = AdminServer(self.view, sockets.admin.dup(), self.config.admin)
            with trio.CancelScope() as scope:
                self._admin_scope = scope
                try:
                    await admin.serve()
                except Exception as exc:
                    log(logger, logging.ERROR, "admin.failed", error=repr(exc), restart_in_s=ADMIN_RESTART_S)
                    await trio.sleep(ADMIN_RESTART_S)
            if scope.cancelled_caught:
                continue  # (a reload: the new socket or settings)

    async def _record(self) -> None:
        """The configured recordings ([observe] record), from every worker's
        messages (the view's tap hub); started again after a reload that changed them."""
        while True:
            with trio.CancelScope() as scope:
                self._record_scope = scope
                await run_recorders(self.config, self.view.taps)
                # A recorder that stopped (its disk failed, logged) stays stopped until a reload.
                await trio.sleep_forever()

    async def _export_otel(self) -> None:
        """The supervisor's OpenTelemetry exporters (the requests it
        correlated); started again after a reload that changed ``[otel]``."""
        while True:
            with trio.CancelScope() as scope:
                self._otel_scope = scope
                await self.central.otel.run()
                await trio.sleep_forever()

    def _restart_otel(self) -> None:
        if self._otel_scope is not None:
            self._otel_scope.cancel()

    def _restart_recorders(self) -> None:
        if self._record_scope is not None:
            self._record_scope.cancel()

    def _restart_admin(self) -> None:
        if self._admin_scope is not None:
            self._admin_scope.cancel()
