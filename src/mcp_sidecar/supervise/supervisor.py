"""The supervisor: holds the listening sockets, runs workers, replaces them.

Rules this module keeps:

* The supervisor binds (or adopts from systemd) every listening socket and
  never closes one while a route uses it.  Workers inherit them.  While no
  worker accepts, clients wait in the kernel's backlog: a dead worker costs
  no refused connection.
* ``[proxy] workers`` *active* workers serve, each accepting on the same
  listening sockets (one backlog per socket, shared: a dead worker's queued
  clients are accepted by the others); one *standby* (pre-started, config
  loaded, sockets adopted, not accepting) waits, so a dead active worker is
  replaced in milliseconds rather than a cold start.  Workers being replaced
  *drain*.
* The admin endpoint is the supervisor's, from every worker's reports
  (reporting.py, view.py): it answers while any worker is down, and its
  counters and history survive restarts and reloads.
* Every worker heartbeats from its event loop.  One silent for
  ``heartbeat_timeout`` is killed (SIGKILL) and counted as a ``hang``; any
  other unexpected exit is a ``crash`` (OOM kills and SIGKILL included).
* Spawning after consecutive failures backs off (``restart_backoff_initial``
  doubling to ``restart_backoff_max``); an active worker that has served for
  ``stable_after`` resets it.  A crash loop is logged at ERROR, shown by
  ``proxyctl status`` and alerted -- never hidden.
* Counters persist in the state directory; systemd hears READY/STATUS/
  WATCHDOG (the watchdog only while the active worker heartbeats).
* The invariants are restored by one manager task, woken on every change,
  so that concurrent events (a crash during a reload) cannot race.
* A stop refuses new clients at once: the listening sockets stop listening
  before the workers drain.

The worker protocol is ``messages.py``; what is remembered across workers
(counters, alerts, totals) is the ``Ledger``; the control socket's server is
``control.serve_control``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from .. import __version__, logs
from ..admin.status import supervised_routes, supervisor_problems
from ..config.addresses import format_sockaddr
from ..config.model import ProxyConfig
from ..config.profiles import exposure_warnings
from ..config.tls import certificate_warnings
from ..forward.limits import CountSlots
from ..logs import log
from ..net.listeners import Sockets, adopt_activated, bind_everything
from . import sdnotify
from .alerts import Alerter, AlertState
from .control import open_control_socket, serve_control
from .cpus import worker_target
from .forkserver import ForkServer
from .ledger import STATE_RETRY_INTERVAL_S, Ledger, describe_os_error
from .lifecycle import STARTUP_TIMEOUT_S
from .messages import (
    Drain,
    StopNow,
)
from .operations import SupervisorOperations
from .statedir import CONTROL_SOCKET, Counters, PidLock
from .workers import KillReason, Role, Stopping, Worker

logger = logging.getLogger(__name__)

#: Extra time granted to draining workers past drain_timeout before SIGKILL.
DRAIN_GRACE_S = 5.0


class Supervisor(SupervisorOperations):
    """The process that holds the sockets and keeps a worker serving.

    Owns the listening sockets (and the admin socket), the workers' process
    handles and channels, the ledger and the control socket; every task is in
    ``run``'s nursery.  One manager task restores the invariants (an active
    worker, a standby) on every change; restart, reload and stop take the
    same lock, one at a time.
    """

    def __init__(
        self,
        config: ProxyConfig,
        state_dir: Path,
        reload_config: Callable[[], ProxyConfig],
        *,
        log_format: str = "json",
        log_level: str = "info",
        on_ready: Callable[[Supervisor], None] | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.reload_config = reload_config
        self.log_format = log_format
        self.log_level = log_level
        self.on_ready = on_ready
        self.sockets: Sockets | None = None
        self.actives: list[Worker] = []
        self.target = worker_target(config.workers)
        self.standby: Worker | None = None
        self.workers: list[Worker] = []
        self.stopping = False
        self.consecutive_failures = 0
        self.next_spawn_at = 0.0
        self.started_unix = time.time()
        self.ledger: Ledger | None = None
        self._changed = trio.Event()
        self._stop_requested = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()  # restart / reload / stop, one at a time
        self._ready_sent = False
        #: Forks the workers (forkserver.py); None: they are exec'd.
        self.forkserver: ForkServer | None = None
        self._init_reporting()

    # --- lifecycle ----------------------------------------------------------------------

    def bind(self) -> None:
        """Bind (or adopt from systemd) every socket: all or nothing."""
        adopted = sdnotify.listen_fds()
        if adopted:
            self.sockets = adopt_activated(self.config, adopted)
        else:
            self.sockets = bind_everything(self.config)

    async def run(self, lock: PidLock) -> None:
        """Supervise until stopped; ``lock`` is the acquired PID file."""
        control_path = self.state_dir / CONTROL_SOCKET
        ledger = None
        try:
            sup = self.config.supervisor
            ledger = self.ledger = Ledger(
                Counters.load(self.state_dir), None, sup.alert_threshold, on_state_change=self._send_facts
            )
            counters = ledger.counters
            counters.data["supervisor_starts"] += 1
            if lock.replaced_stale is not None:
                counters.event("stale_pid_file_replaced", pid=lock.replaced_stale.pid, detail=lock.replaced_stale.stale)
                log(
                    logger,
                    logging.WARNING,
                    "supervisor.stale_pid_file",
                    pid=lock.replaced_stale.pid,
                    detail=lock.replaced_stale.stale,
                )
            if lock.write_error is not None:
                log(
                    logger,
                    logging.WARNING,
                    "supervisor.pid_not_written",
                    path=str(lock.path),
                    error=describe_os_error(lock.write_error),
                    detail="the PID file is locked (what tells that a supervisor runs) but holds no number",
                )
            counters.event("supervisor_started", pid=os.getpid())
            ledger.save()
            if self.sockets is None:
                self.bind()
            control = await open_control_socket(control_path)
            # (made here, not earlier: the fork server must not inherit it)
            self.slots = CountSlots(len(self.config.routes), self.target)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                ledger.alerts = Alerter(
                    AlertState(sup.alert_threshold, sup.alert_window_s, sup.alert_min_interval_s),
                    sup.alert_webhook,
                    nursery,
                )
                if self.forkserver is not None:
                    nursery.start_soon(self.forkserver.run)
                nursery.start_soon(self._watch_signals)
                nursery.start_soon(serve_control, control, self._control)
                nursery.start_soon(self._monitor_heartbeats)
                nursery.start_soon(self._systemd_watchdog)
                nursery.start_soon(self._retry_state_writes)
                await nursery.start(self.checks.run)
                nursery.start_soon(self._sweep_books)
                nursery.start_soon(self._serve_admin)
                nursery.start_soon(self._record)
                nursery.start_soon(self._export_otel)
                nursery.start_soon(self._manage)
                await self._stop_requested.wait()
                await self._shutdown()
                nursery.cancel_scope.cancel()
        finally:
            try:
                control_path.unlink()
            except OSError:
                pass
            if self.sockets is not None:
                self.sockets.close()
            if self.forkserver is not None:
                stop_forkserver(self.forkserver)
            if ledger is not None:
                ledger.counters.event("supervisor_stopped", pid=os.getpid())
                ledger.save()
            lock.release()
            log(logger, logging.INFO, "supervisor.stopped")

    async def _retry_state_writes(self) -> None:
        """While the state directory refuses writes, try again now and then."""
        assert self.ledger is not None
        while True:
            await trio.sleep(STATE_RETRY_INTERVAL_S)
            self.ledger.retry_save()

    def request_stop(self) -> None:
        self.stopping = True
        self._stop_requested.set()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._reload_logged)
                elif not self.stopping:
                    log(logger, logging.INFO, "signal.stop", signal=signal.Signals(signum).name)
                    self.request_stop()
                else:
                    log(logger, logging.WARNING, "signal.stop_now", signal=signal.Signals(signum).name)
                    for worker in self._alive():
                        await self._send(worker, StopNow())

    async def _reload_logged(self) -> None:
        result = await self.reload()
        log(logger, logging.INFO if result.get("ok") else logging.ERROR, "supervisor.reload", **result)

    async def _shutdown(self) -> None:
        sdnotify.notify("STOPPING=1", "STATUS=draining")
        self._stop_listening()
        async with self._lock:
            async with trio.open_nursery() as nursery:
                for worker in self._alive():
                    if worker.role in (Role.ACTIVE, Role.DRAINING):
                        worker.role = Role.DRAINING
                        # No successor: the draining worker keeps answering the
                        # admin endpoint (readiness 503 "draining", liveness 200).
                        nursery.start_soon(self._send, worker, Drain(handover=False))
                    else:
                        nursery.start_soon(self._retire, worker, KillReason.STOP)
            deadline = trio.current_time() + self.config.drain_timeout_s + DRAIN_GRACE_S
            for worker in list(self.workers):
                with trio.move_on_at(deadline):
                    await worker.exited.wait()
                if not worker.exited.is_set():
                    worker.kill(KillReason.STOP)
                    await worker.exited.wait()

    def _stop_listening(self) -> None:
        """A stop refuses new clients at once instead of queueing them for a
        worker that will never accept them.  ``shutdown`` ends listening for
        every process holding the socket (the workers' inherited copies too);
        sockets adopted from systemd are only closed here: systemd keeps its
        own copy and queues clients for the next start, by design."""
        if self.sockets is None:
            return
        for listener in self.sockets.routes:
            if not self.sockets.activated:
                try:
                    listener.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            listener.close()
        log(logger, logging.INFO, "supervisor.stopped_listening", listeners=len(self.sockets.routes))

    # --- workers ------------------------------------------------------------------------

    async def _manage(self) -> None:
        """Restore the invariants: ``target`` active workers, and a standby if enabled."""
        assert self.sockets is not None
        while not self.stopping:
            self._changed = trio.Event()
            short = False
            async with self._lock:
                if self.stopping:
                    return
                try:
                    while len(self.actives) < self.target and not self.stopping:
                        candidate = (
                            self.standby if self.standby is not None and not self.standby.exited.is_set() else None
                        )
                        if candidate is None:
                            candidate = await self._spawn(self.config, self.sockets)
                        else:
                            self.standby = None
                        if not await self._activate(candidate):
                            break  # it died: try again (spawning backs off)
                    short = len(self.actives) < self.target
                    if not short and self.config.supervisor.standby and self.standby is None and not self.stopping:
                        self.standby = await self._spawn(self.config, self.sockets)
                except Stopping:
                    return
            if short:
                continue
            await self._changed.wait()

    async def _monitor_heartbeats(self) -> None:
        sup = self.config.supervisor
        period = min(0.25, sup.heartbeat_timeout_s / 4)
        while True:
            await trio.sleep(period)
            logs.flush_suppressed()
            now = trio.current_time()
            for worker in self._alive():
                if worker.last_heartbeat is None:
                    if now - worker.started > STARTUP_TIMEOUT_S:
                        log(logger, logging.ERROR, "worker.startup_timeout", worker=worker.id, pid=worker.pid)
                        worker.kill(KillReason.HANG)
                elif now - worker.last_heartbeat > sup.heartbeat_timeout_s:
                    log(
                        logger,
                        logging.ERROR,
                        "worker.hung",
                        worker=worker.id,
                        pid=worker.pid,
                        silent_s=round(now - worker.last_heartbeat, 3),
                    )
                    worker.kill(KillReason.HANG)
            # Stable: every worker serving, the newest of them for stable_after.
            active = self.actives[-1] if self.actives else None
            if (
                active is not None
                and len(self.actives) >= self.target
                and active.serving_since is not None
                and self.consecutive_failures
                and now - active.serving_since >= sup.stable_after_s
            ):
                log(logger, logging.INFO, "worker.stable", pid=active.pid, after_failures=self.consecutive_failures)
                self.consecutive_failures = 0
                self.next_spawn_at = 0.0
                if self.ledger is not None:
                    self.ledger.worker_stable(active.pid)
                self._send_facts()

    async def _systemd_watchdog(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        if interval is None:
            return
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            if any(
                a.last_heartbeat is not None and now - a.last_heartbeat <= self.config.supervisor.heartbeat_timeout_s
                for a in self.actives
            ):
                sdnotify.notify("WATCHDOG=1")

    def status(self) -> dict[str, Any]:
        """What ``proxyctl status`` shows: the supervisor, its workers, each
        route as the serving and draining workers report it, the ledger."""
        now = trio.current_time()
        assert self.ledger is not None and self.sockets is not None
        # Every worker that serves or drains counts: open connections now, and
        # everything accepted since the supervisor started (exited workers too).
        reporting = [
            w.snapshot for w in self.workers if w.role in (Role.ACTIVE, Role.DRAINING) and w.snapshot is not None
        ]
        live = self.active.snapshot if self.active is not None else None
        routes = supervised_routes(
            self.config,
            self.sockets.routes,
            live.routes if live is not None else (),
            [s.routes for s in reporting],
            self.ledger.retired_totals,
        )
        problems = supervisor_problems(
            self.config,
            routes,
            stopping=self.stopping,
            serving=bool(self.actives),
            consecutive_failures=self.consecutive_failures,
        )
        problems += self.ledger.problems(str(self.state_dir))
        standby = self.standby
        alerts = self.ledger.as_json()
        return {
            "running": True,
            "stopping": self.stopping,
            "healthy": not problems,
            "problems": problems,
            "warnings": exposure_warnings(self.config) + certificate_warnings(self.config),
            "faults": self.faults_view(),
            "version": __version__,
            "state_dir": str(self.state_dir),
            "supervisor": {
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started_unix, 3),
                # How new workers start: forked from the fork server, or exec'd.
                "worker_spawn": "fork" if self.forkserver is not None and self.forkserver.alive else "exec",
                "forkserver_pid": self.forkserver.pid if self.forkserver is not None else None,
            },
            "worker": self.active.as_json(now) if self.active is not None else None,
            # Every serving worker (``worker`` is the longest serving of them).
            "workers": [w.as_json(now) for w in self.actives],
            "workers_target": self.target,
            "standby": standby.as_json(now) if standby is not None else None,
            "draining_workers": [w.as_json(now) for w in self.workers if w.role is Role.DRAINING],
            "consecutive_failures": self.consecutive_failures,
            "restarts": dict(self.ledger.counters.data["worker_restarts"]),
            "counters": self.ledger.counters.data,
            "alerts_firing": alerts["firing"],
            "alerts": alerts,
            "admin": _admin_address(self.sockets),
            "profile": self.config.profile,
            "config_source": self.config.source,
            "routes": routes,
        }


def _admin_address(sockets: Sockets | None) -> str | None:
    if sockets is None or sockets.admin is None:
        return None
    return format_sockaddr(sockets.admin.getsockname())


def run_supervised(
    config: ProxyConfig,
    state_dir: Path,
    reload_config: Callable[[], ProxyConfig],
    *,
    log_format: str,
    log_level: str,
    on_ready: Callable[[Supervisor], None] | None = None,
) -> None:
    supervisor = Supervisor(
        config, state_dir, reload_config, log_format=log_format, log_level=log_level, on_ready=on_ready
    )
    # First of all: the fork server must inherit neither the PID lock nor a socket.
    forkserver = ForkServer.start() if config.supervisor.worker_spawn == "fork" else None
    try:
        lock = PidLock(state_dir)
        lock.acquire()  # before binding: a second instance says "already running", not "port busy"
        try:
            supervisor.bind()
        except BaseException:
            lock.release()
            raise
    except BaseException:
        if forkserver is not None:
            stop_forkserver(forkserver)
        raise
    supervisor.forkserver = forkserver
    trio.run(supervisor.run, lock)


def stop_forkserver(forkserver: ForkServer, wait_s: float = 2.0) -> None:
    """Close its socket (it exits once its children have) and reap it."""
    forkserver.close()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            pid, _ = os.waitpid(forkserver.pid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid or time.monotonic() >= deadline:
            return
        time.sleep(0.005)
