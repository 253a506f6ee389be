"""The supervisor: holds the listening sockets, runs workers, replaces them.

Rules this module keeps:

* The supervisor binds (or adopts from systemd) every listening socket and
  never closes one while a route uses it.  Workers inherit them.  While no
  worker accepts, clients wait in the kernel's backlog: a dead worker costs
  no refused connection.
* One *active* worker serves; one *standby* (pre-started, config loaded,
  sockets adopted, not accepting) waits, so a dead active worker is replaced
  in milliseconds rather than a cold start.  Workers being replaced *drain*.
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

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable

import trio

from .. import __version__, logs
from ..config.addresses import format_sockaddr
from ..config.model import ProxyConfig
from ..config.profiles import exposure_warnings
from ..config.tls import certificate_warnings
from ..errors import SidecarError
from ..logs import log
from ..net.listeners import Sockets, adopt_activated, bind_everything, rebind
from ..net.origins import gate_urls
from . import sdnotify
from .alerts import Alerter, AlertState
from .channel import Channel, ChannelClosed
from .control import open_control_socket, serve_control
from .forkserver import ForkServer, ForkServerGone, WorkerProcess
from .ledger import STATE_RETRY_INTERVAL_S, Ledger, RestartCause, describe_os_error
from .messages import (Activate, Configure, Drain, Facts, Heartbeat, ListenerPlan, Loaded, Serving, StopNow,
                       ToWorker, WorkerSnapshot)
from .statedir import CONTROL_SOCKET, Counters, PidLock

logger = logging.getLogger(__name__)

#: A new worker must have loaded its config (imports included) within this.
STARTUP_TIMEOUT_S = 30.0
#: Extra time granted to draining workers past drain_timeout before SIGKILL.
DRAIN_GRACE_S = 5.0

_worker_ids = itertools.count(1)


class Role(StrEnum):
    """Where a worker is in its life."""

    STARTING = "starting"  # spawned, configuring
    STANDBY = "standby"  # configured, sockets adopted, not accepting
    ACTIVE = "active"  # serving
    DRAINING = "draining"  # replaced or stopping: no new connections
    EXITED = "exited"


class KillReason(StrEnum):
    """Why the supervisor killed a worker (decides how its exit is counted)."""

    HANG = "hang"  # silent past heartbeat_timeout (or never loaded)
    RESTART = "restart"  # proxyctl restart --hard
    RELOAD = "reload"
    STOP = "stop"
    STARTUP = "startup"  # did not come up in time


class Stopping(SidecarError):
    """A worker was to be spawned while the supervisor stops: it is not."""


@dataclass(eq=False)
class Worker:
    """One worker process as the supervisor sees it: its handle, channel,
    role and latest heartbeat."""

    id: int
    process: WorkerProcess
    channel: Channel
    config: ProxyConfig
    role: Role = Role.STARTING
    started: float = field(default_factory=trio.current_time)
    serving_since: float | None = None
    last_heartbeat: float | None = None
    snapshot: WorkerSnapshot | None = None
    kill_reason: KillReason | None = None
    expected_exit: bool = False
    returncode: int | None = None
    loaded: trio.Event = field(default_factory=trio.Event)
    serving: trio.Event = field(default_factory=trio.Event)
    exited: trio.Event = field(default_factory=trio.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, reason: KillReason) -> None:
        if self.returncode is None and self.kill_reason is None:
            self.kill_reason = reason
        try:
            self.process.kill()
        except ProcessLookupError:
            pass

    def as_json(self, now: float) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "state": self.role,
            "uptime_s": round(now - self.started, 3),
            "serving_s": None if self.serving_since is None else round(now - self.serving_since, 3),
            "heartbeat_age_s": None if self.last_heartbeat is None else round(now - self.last_heartbeat, 3),
        }


class Supervisor:
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
        on_ready: Callable[["Supervisor"], None] | None = None,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.reload_config = reload_config
        self.log_format = log_format
        self.log_level = log_level
        self.on_ready = on_ready
        self.sockets: Sockets | None = None
        self.active: Worker | None = None
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
            ledger = self.ledger = Ledger(Counters.load(self.state_dir), None, sup.alert_threshold,
                                          on_state_change=self._send_facts)
            counters = ledger.counters
            counters.data["supervisor_starts"] += 1
            if lock.replaced_stale is not None:
                counters.event("stale_pid_file_replaced", pid=lock.replaced_stale.pid,
                               detail=lock.replaced_stale.stale)
                log(logger, logging.WARNING, "supervisor.stale_pid_file", pid=lock.replaced_stale.pid,
                    detail=lock.replaced_stale.stale)
            if lock.write_error is not None:
                log(logger, logging.WARNING, "supervisor.pid_not_written", path=str(lock.path),
                    error=describe_os_error(lock.write_error),
                    detail="the PID file is locked (what tells that a supervisor runs) but holds no number")
            counters.event("supervisor_started", pid=os.getpid())
            ledger.save()
            if self.sockets is None:
                self.bind()
            control = await open_control_socket(control_path)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                ledger.alerts = Alerter(AlertState(sup.alert_threshold, sup.alert_window_s, sup.alert_min_interval_s),
                                        sup.alert_webhook, nursery)
                if self.forkserver is not None:
                    nursery.start_soon(self.forkserver.run)
                nursery.start_soon(self._watch_signals)
                nursery.start_soon(serve_control, control, self._control)
                nursery.start_soon(self._monitor_heartbeats)
                nursery.start_soon(self._systemd_watchdog)
                nursery.start_soon(self._retry_state_writes)
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

    def _alive(self) -> list[Worker]:
        return [w for w in self.workers if not w.exited.is_set()]

    def _plan(self, config: ProxyConfig, sockets: Sockets) -> tuple[tuple[ListenerPlan, ...], int | None]:
        index = {route.name: i for i, route in enumerate(config.routes)}
        plan = tuple(ListenerPlan(index[l.route.name], l.sock.fileno(), l.address.host, l.address.port)
                     for l in sockets.routes)
        return plan, sockets.admin.fileno() if sockets.admin is not None else None

    async def _spawn(self, config: ProxyConfig, sockets: Sockets) -> Worker:
        now = trio.current_time()
        if now < self.next_spawn_at:
            await trio.sleep_until(self.next_spawn_at)
        if self.stopping:  # (the listening sockets may be closed already: nothing to hand over)
            raise Stopping
        plan, admin_fd = self._plan(config, sockets)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [p.fd for p in plan] + ([admin_fd] if admin_fd is not None else [])
        process: WorkerProcess | None = None
        try:
            if self.forkserver is not None and self.forkserver.alive:
                try:
                    process = await self.forkserver.spawn(fds, child.fileno())
                except ForkServerGone as exc:
                    log(logger, logging.WARNING, "forkserver.gone", detail=str(exc),
                        fallback="workers are exec'd from now on")
                    self.forkserver = None
            if process is None:
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "mcp_sidecar.supervise.worker", str(child.fileno())],
                    pass_fds=[*fds, child.fileno()], stdin=subprocess.DEVNULL,
                )
        finally:
            child.close()
        channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent)))
        worker = Worker(next(_worker_ids), process, channel, config)
        self.workers.append(worker)
        assert self._nursery is not None
        self._nursery.start_soon(self._follow, worker)
        self._nursery.start_soon(self._reap, worker)
        try:
            await channel.send(Configure(config, plan, admin_fd, self.log_format, self.log_level,
                                         config.supervisor.heartbeat_interval_s))
        except ChannelClosed:
            pass  # it died at once; _reap counts it
        log(logger, logging.INFO, "worker.spawned", worker=worker.id, pid=worker.pid)
        return worker

    async def _follow(self, worker: Worker) -> None:
        """Read the worker's messages until its channel closes."""
        try:
            while True:
                message = await worker.channel.receive()
                if isinstance(message, Heartbeat):
                    worker.last_heartbeat = trio.current_time()
                    worker.snapshot = message.snapshot
                    if worker.role is Role.ACTIVE and self.ledger is not None:
                        self.ledger.absorb(message.snapshot)
                elif isinstance(message, Loaded):
                    worker.last_heartbeat = trio.current_time()
                    if worker.role is Role.STARTING:
                        worker.role = Role.STANDBY
                    worker.loaded.set()
                    self._wake()
                elif isinstance(message, Serving):
                    worker.serving_since = trio.current_time()
                    worker.serving.set()
                    self._wake()
        except ChannelClosed:
            pass
        finally:
            with trio.CancelScope(shield=True):
                await worker.channel.aclose()

    async def _reap(self, worker: Worker) -> None:
        worker.returncode = await worker.process.wait()
        worker.exited.set()
        role = worker.role
        worker.role = Role.EXITED
        if self.active is worker:
            self.active = None
        if self.standby is worker:
            self.standby = None
        self.workers.remove(worker)
        assert self.ledger is not None
        self.ledger.retire(worker.pid, worker.snapshot)
        expected = worker.expected_exit or role is Role.DRAINING or worker.kill_reason in (
            KillReason.RESTART, KillReason.STOP, KillReason.RELOAD)
        if expected:
            log(logger, logging.INFO, "worker.exited", worker=worker.id, pid=worker.pid, role=role,
                returncode=worker.returncode)
            if worker.kill_reason is KillReason.RESTART:
                self._count_restart(RestartCause.RESTART)
        elif not self.stopping or role is Role.ACTIVE:
            self._failed(worker, role, RestartCause.HANG if worker.kill_reason is KillReason.HANG else
                         RestartCause.CRASH)
        self._wake()

    def _failed(self, worker: Worker, role: Role, cause: RestartCause) -> None:
        assert self.ledger is not None
        self.consecutive_failures += 1
        delay = min(self.config.supervisor.restart_backoff_initial_s * 2 ** (self.consecutive_failures - 1),
                    self.config.supervisor.restart_backoff_max_s)
        self.next_spawn_at = trio.current_time() + delay
        detail = f"signal {-worker.returncode}" if (worker.returncode or 0) < 0 else f"exit {worker.returncode}"
        self.ledger.worker_failed(cause, worker.pid, role, detail, self.consecutive_failures, delay)
        level = logging.ERROR if self.consecutive_failures >= self.config.supervisor.alert_threshold else logging.WARNING
        log(logger, level, f"worker.{cause}", worker=worker.id, pid=worker.pid, role=role, detail=detail,
            consecutive_failures=self.consecutive_failures, next_spawn_in_s=round(delay, 3))
        if self.consecutive_failures >= self.config.supervisor.alert_threshold:
            log(logger, logging.ERROR, "worker.crash_loop", consecutive_failures=self.consecutive_failures,
                backoff_s=round(delay, 3))
        sdnotify.notify(f"STATUS=worker {cause}; {self.consecutive_failures} consecutive failure(s)")
        self._send_facts()

    def _count_restart(self, cause: RestartCause) -> None:
        assert self.ledger is not None
        self.ledger.count_restart(cause)
        self._send_facts()

    async def _send(self, worker: Worker, message: ToWorker) -> bool:
        try:
            await worker.channel.send(message)
            return True
        except ChannelClosed:
            return False

    def _send_facts(self) -> None:
        if self._nursery is None or self.ledger is None:
            return
        facts = Facts(self.ledger.facts(self.consecutive_failures))
        for worker in self._alive():
            self._nursery.start_soon(self._send, worker, facts)

    async def _retire(self, worker: Worker, reason: KillReason) -> None:
        """Stop a worker that is not serving (a standby) at once."""
        worker.expected_exit = True
        if worker is self.standby:
            self.standby = None
        if not await self._send(worker, Drain(handover=True)):
            worker.kill(reason)
        with trio.move_on_after(2):
            await worker.exited.wait()
        if not worker.exited.is_set():
            worker.kill(reason)

    async def _activate(self, worker: Worker) -> bool:
        """Standby -> active; False if it died on the way (noticed when it
        dies, not when the startup timeout ends)."""
        if not await _until(worker, worker.loaded, STARTUP_TIMEOUT_S):
            if not worker.exited.is_set():
                worker.kill(KillReason.STARTUP)
            return False
        if self.standby is worker:
            self.standby = None
        worker.role = Role.ACTIVE
        self._send_facts()
        if not await self._send(worker, Activate()):
            return False
        if not await _until(worker, worker.serving, STARTUP_TIMEOUT_S):
            if not worker.exited.is_set():
                worker.kill(KillReason.STARTUP)
            return False
        self.active = worker
        log(logger, logging.INFO, "worker.active", worker=worker.id, pid=worker.pid)
        if not self._ready_sent:
            self._ready_sent = True
            sdnotify.notify("READY=1", f"MAINPID={os.getpid()}", "STATUS=serving")
            if self.on_ready is not None:
                self.on_ready(self)
        else:
            sdnotify.notify(f"STATUS=serving (worker pid {worker.pid})")
        return True

    async def _manage(self) -> None:
        """Restore the invariants: an active worker, and a standby if enabled."""
        assert self.sockets is not None
        while not self.stopping:
            self._changed = trio.Event()
            async with self._lock:
                if self.stopping:
                    return
                try:
                    if self.active is None:
                        candidate = (self.standby if self.standby is not None and not self.standby.exited.is_set()
                                     else None)
                        if candidate is None:
                            candidate = await self._spawn(self.config, self.sockets)
                        elif candidate is self.standby:
                            self.standby = None
                        await self._activate(candidate)
                    if (self.active is not None and self.config.supervisor.standby and self.standby is None
                            and not self.stopping):
                        self.standby = await self._spawn(self.config, self.sockets)
                except Stopping:
                    return
            if self.active is None:
                continue  # the candidate died: try again (spawning backs off)
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
                    log(logger, logging.ERROR, "worker.hung", worker=worker.id, pid=worker.pid,
                        silent_s=round(now - worker.last_heartbeat, 3))
                    worker.kill(KillReason.HANG)
            active = self.active
            if (active is not None and active.serving_since is not None and self.consecutive_failures
                    and now - active.serving_since >= sup.stable_after_s):
                log(logger, logging.INFO, "worker.stable", pid=active.pid,
                    after_failures=self.consecutive_failures)
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
            active = self.active
            if (active is not None and active.last_heartbeat is not None
                    and trio.current_time() - active.last_heartbeat <= self.config.supervisor.heartbeat_timeout_s):
                sdnotify.notify("WATCHDOG=1")

    # --- operations -----------------------------------------------------------------------

    async def restart(self, hard: bool = False) -> dict[str, Any]:
        """Graceful: a new worker takes over, the old one drains.  Hard: kill now."""
        async with self._lock:
            if self.stopping:
                return {"ok": False, "stopping": True, "error": "stopping: restart is not possible now"}
            old = self.active
            if old is None:
                return {"ok": False, "error": "no active worker"}
            if hard:
                old.kill(KillReason.RESTART)
                return {"ok": True, "restart": "hard", "old_pid": old.pid}
            assert self.sockets is not None
            new = self.standby if self.standby is not None and not self.standby.exited.is_set() else None
            if new is None:
                try:
                    new = await self._spawn(self.config, self.sockets)
                except Stopping:
                    return {"ok": False, "stopping": True, "error": "stopping: restart is not possible now"}
            if not await self._activate(new):
                return {"ok": False, "error": "the new worker did not start"}
            old.role = Role.DRAINING
            await self._send(old, Drain(handover=True))
            self._count_restart(RestartCause.RESTART)
            assert self.ledger is not None
            self.ledger.record("worker_restart", old_pid=old.pid, new_pid=new.pid)
        self._wake()
        return {"ok": True, "restart": "graceful", "old_pid": old.pid, "new_pid": new.pid}

    async def reload(self) -> dict[str, Any]:
        """Re-read the config; apply it through a graceful restart, or change nothing."""
        async with self._lock:
            if self.stopping:
                return {"ok": False, "stopping": True, "error": "stopping: reload is not possible now"}
            current = self.sockets
            assert current is not None
            sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
            try:
                try:
                    new_config = self.reload_config()
                    new_sockets = rebind(current, new_config)
                except SidecarError as exc:
                    log(logger, logging.ERROR, "reload.rejected", error=str(exc))
                    return {"ok": False, "error": str(exc)}
                try:
                    new = await self._spawn(new_config, new_sockets)
                except Stopping:
                    new_sockets.close_unshared(current)
                    return {"ok": False, "stopping": True, "error": "stopping: reload is not possible now"}
                if not await self._activate(new):
                    new_sockets.close_unshared(current)
                    return {"ok": False, "error": "the new worker did not start; the old one keeps serving"}
                for worker in self._alive():
                    if worker is new:
                        continue
                    if worker.role is Role.ACTIVE:
                        worker.role = Role.DRAINING
                        await self._send(worker, Drain(handover=True))
                    elif worker.role in (Role.STANDBY, Role.STARTING):
                        await self._retire(worker, KillReason.RELOAD)
                self.sockets, self.config = new_sockets, new_config
                current.close_unshared(new_sockets)
                self._count_restart(RestartCause.RELOAD)
                assert self.ledger is not None
                self.ledger.record("reload", routes=[r.name for r in new_config.routes])
                for warning in exposure_warnings(new_config):
                    log(logger, logging.WARNING, "exposure.unprotected", detail=warning)
                for warning in certificate_warnings(new_config):
                    log(logger, logging.WARNING, "tls.certificate_expiry", detail=warning)
                return {"ok": True, "routes": [r.name for r in new_config.routes], "new_pid": new.pid}
            finally:
                sdnotify.notify("READY=1", "STATUS=serving")
                self._wake()

    def status(self) -> dict[str, Any]:
        """What ``proxyctl status`` shows: the supervisor, its workers, each
        route as the serving and draining workers report it, the ledger."""
        now = trio.current_time()
        assert self.ledger is not None and self.sockets is not None
        snap = self.active.snapshot if self.active is not None else None
        by_name = {r.name: r for r in snap.routes} if snap is not None else {}
        # Every worker that serves or drains counts: open connections now, and
        # everything accepted since the supervisor started (exited workers too).
        active: dict[str, int] = {}
        total = dict(self.ledger.retired_totals)
        for w in self.workers:
            if w.role in (Role.ACTIVE, Role.DRAINING) and w.snapshot is not None:
                for r in w.snapshot.routes:
                    active[r.name] = active.get(r.name, 0) + r.connections_active
                    total[r.name] = total.get(r.name, 0) + r.connections_total
        routes = []
        for route in self.config.routes:
            live = by_name.get(route.name)
            routes.append({
                "name": route.name,
                "listen": [str(l.address) for l in self.sockets.routes if l.route.name == route.name],
                "upstream": route.upstream_text,
                # What `proxyctl check` needs to diagnose the running routes.
                "upstreams": [str(u) for u in route.upstreams],
                "health_check": route.settings.health.check,
                "health_path": route.settings.health.path,
                "tls": route.settings.tls.cert is not None,
                "tls_cert_expires_unix": route.tls_material.cert_not_after_unix,
                "gate": route.settings.gate.mode != "off",
                "upstream_tls": {"ca": route.settings.upstream_tls.ca, "name": route.settings.upstream_tls.name,
                                 "verify": route.settings.upstream_tls.verify} if route.settings.upstream_tls.enabled else None,
                "upstream_healthy": live.upstream_healthy if live else None,
                "circuit": live.circuit["state"] if live else "closed",
                "upstream_state": live.upstream_state if live else "unknown",
                "connections_active": active.get(route.name, 0),
                "connections_total": total.get(route.name, 0),
            })
        problems = []
        if self.stopping:
            problems.append("stopping: draining open connections")
        elif self.active is None:
            problems.append("no worker is serving")
        if self.consecutive_failures >= self.config.supervisor.alert_threshold:
            problems.append(f"crash loop: {self.consecutive_failures} consecutive worker failures")
        for r in routes:
            if r["upstream_state"] == "down":
                problems.append(f"route {r['name']}: upstream {r['upstream']} is down")
        problems += self.ledger.problems(str(self.state_dir))
        standby = self.standby
        alerts = self.ledger.as_json()
        return {
            "running": True,
            "stopping": self.stopping,
            "healthy": not problems,
            "problems": problems,
            "warnings": exposure_warnings(self.config) + certificate_warnings(self.config),
            "version": __version__,
            "state_dir": str(self.state_dir),
            "supervisor": {"pid": os.getpid(), "uptime_s": round(time.time() - self.started_unix, 3),
                           # How new workers start: forked from the fork server, or exec'd.
                           "worker_spawn": "fork" if self.forkserver is not None and self.forkserver.alive
                           else "exec",
                           "forkserver_pid": self.forkserver.pid if self.forkserver is not None else None},
            "worker": self.active.as_json(now) if self.active is not None else None,
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

    def _gate_urls(self, name: Any) -> dict[str, Any]:
        """A gated route's URLs, token included: for the operator who asks
        over the control socket (its peer's uid is checked), never logged."""
        assert self.sockets is not None
        route = next((r for r in self.config.routes if r.name == name), None)
        if route is None:
            return {"ok": False, "error": f"no route {name!r} (routes: {', '.join(r.name for r in self.config.routes)})"}
        urls = gate_urls(route, self.sockets.routes)
        if not urls:
            return {"ok": False, "error": f"route {name} is not gated (no token to put in a URL)"}
        return {"ok": True, "route": route.name, "urls": urls}

    # --- control socket -------------------------------------------------------------------

    async def _control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return self.status()
        if self.stopping and command == "stop":
            return {"ok": True, "stopping": True, "already": True, "drain_timeout_s": self.config.drain_timeout_s}
        if self.stopping and command in ("restart", "reload"):
            return {"ok": False, "stopping": True,
                    "error": f"stopping: the workers are draining (up to {self.config.drain_timeout_s:g} s); "
                             f"{command} is not possible now"}
        if command == "restart":
            return await self.restart(hard=bool(request.get("hard")))
        if command == "reload":
            return await self.reload()
        if command == "url":
            return self._gate_urls(request.get("route"))
        if command == "stop":
            self.request_stop()
            return {"ok": True, "stopping": True, "drain_timeout_s": self.config.drain_timeout_s}
        return {"ok": False, "error": f"unknown command {command!r}"}


async def _until(worker: Worker, event: trio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` while the worker lives, at most ``timeout_s``:
    True if it happened and the worker is still alive."""
    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            async def first(ready: trio.Event) -> None:
                await ready.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, event)
            nursery.start_soon(first, worker.exited)
    return event.is_set() and not worker.exited.is_set()


def _admin_address(sockets: Sockets | None) -> str | None:
    if sockets is None or sockets.admin is None:
        return None
    return format_sockaddr(sockets.admin.getsockname())


def run_supervised(config: ProxyConfig, state_dir: Path, reload_config: Callable[[], ProxyConfig], *,
                   log_format: str, log_level: str, on_ready: Callable[[Supervisor], None] | None = None) -> None:
    supervisor = Supervisor(config, state_dir, reload_config, log_format=log_format, log_level=log_level,
                            on_ready=on_ready)
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


