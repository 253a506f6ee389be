"""A worker's life as the supervisor leads it: spawned (forked or exec'd) and
configured, followed (its messages) and reaped (its exit counted), activated,
retired.

Rules this module keeps:

* ``WorkerLifecycle`` is the part of ``Supervisor`` (supervisor.py) that
  deals with one worker at a time; the supervisor decides which, and when
  (its manager task and its operations).
* An exit is counted by what the worker was doing and why it was killed
  (``Role``, ``KillReason``): a crash or a hang backs the next spawn off
  (``restart_backoff_initial`` doubling to ``restart_backoff_max``).
* Activation gives up as soon as the worker exits, not after the startup
  timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..config.model import ProxyConfig
from ..forward.limits import CountSlots
from ..logs import log
from ..net.listeners import Sockets
from . import sdnotify
from .channel import Channel, ChannelClosed
from .forkserver import ForkServer, ForkServerGone, WorkerProcess
from .ledger import Ledger, RestartCause
from .messages import (
    Activate,
    Answer,
    Configure,
    Drain,
    Facts,
    Heartbeat,
    ListenerPlan,
    Loaded,
    Serving,
    TapBatch,
    ToWorker,
)
from .workers import KillReason, Role, Stopping, Worker, next_worker_id, until

logger = logging.getLogger("mcp_sidecar.supervise.supervisor")

#: A new worker must have loaded its config (imports included) within this.
STARTUP_TIMEOUT_S = 30.0


class WorkerLifecycle:
    """Spawning, following, reaping, activating and retiring workers (the
    supervisor's attributes, declared here for what this part uses)."""

    config: ProxyConfig
    state_dir: Path
    log_format: str
    log_level: str
    on_ready: Callable[[Any], None] | None
    sockets: Sockets | None
    #: The workers serving now (``target`` of them when all is well).
    actives: list[Worker]
    target: int
    #: The current configuration's shared connection counts.
    slots: CountSlots
    standby: Worker | None
    workers: list[Worker]
    stopping: bool
    consecutive_failures: int
    next_spawn_at: float
    ledger: Ledger | None
    forkserver: ForkServer | None
    _nursery: trio.Nursery | None
    _ready_sent: bool

    def _wake(self) -> None:
        raise NotImplementedError

    # (reporting.py's: what the workers' reports, answers and taps change)
    def _reported(self, worker: Worker, message: Heartbeat) -> None:
        raise NotImplementedError

    def _answered(self, message: Answer) -> None:
        raise NotImplementedError

    def _tapped(self, message: TapBatch) -> None:
        raise NotImplementedError

    def _activating(self, worker: Worker) -> None:
        raise NotImplementedError

    def _started_serving(self, worker: Worker) -> None:
        raise NotImplementedError

    def _retired(self, worker: Worker) -> None:
        raise NotImplementedError

    @property
    def active(self) -> Worker | None:
        """The longest-serving active worker (what single-worker views show)."""
        return self.actives[0] if self.actives else None

    def _alive(self) -> list[Worker]:
        return [w for w in self.workers if not w.exited.is_set()]

    def _plan(self, config: ProxyConfig, sockets: Sockets) -> tuple[ListenerPlan, ...]:
        index = {route.name: i for i, route in enumerate(config.routes)}
        return tuple(
            ListenerPlan(index[item.route.name], item.sock.fileno(), item.address.host, item.address.port)
            for item in sockets.routes
        )

    async def _spawn(
        self, config: ProxyConfig, sockets: Sockets, slots: CountSlots | None = None, target: int | None = None
    ) -> Worker:
        """A new worker (standby once loaded) for ``config``: its share of the
        connection counts from ``slots`` (the current configuration's by default)."""
        now = trio.current_time()
        if now < self.next_spawn_at:
            await trio.sleep_until(self.next_spawn_at)
        if self.stopping:  # (the listening sockets may be closed already: nothing to hand over)
            raise Stopping
        plan = self._plan(config, sockets)
        slots = slots if slots is not None else self.slots
        slot = slots.take() if slots.fd is not None else None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [p.fd for p in plan] + ([slots.fd] if slot is not None and slots.fd is not None else [])
        process: WorkerProcess | None = None
        try:
            if self.forkserver is not None and self.forkserver.alive:
                try:
                    process = await self.forkserver.spawn(fds, child.fileno())
                except ForkServerGone as exc:
                    log(
                        logger,
                        logging.WARNING,
                        "forkserver.gone",
                        detail=str(exc),
                        fallback="workers are exec'd from now on",
                    )
                    self.forkserver = None
            if process is None:
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "mcp_sidecar.supervise.worker", str(child.fileno())],
                    pass_fds=[*fds, child.fileno()],
                    stdin=subprocess.DEVNULL,
                )
        except BaseException:
            if slot is not None:
                slots.give_back(slot)
            raise
        finally:
            child.close()
        channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent)))
        worker = Worker(next_worker_id(), process, channel, config)
        worker.slot, worker.counts = slot, slots if slot is not None else None
        self.workers.append(worker)
        assert self._nursery is not None
        self._nursery.start_soon(self._follow, worker)
        self._nursery.start_soon(self._reap, worker)
        try:
            await channel.send(
                Configure(
                    config,
                    plan,
                    None,  # (the admin endpoint is the supervisor's: reporting.py)
                    self.log_format,
                    self.log_level,
                    config.supervisor.heartbeat_interval_s,
                    slot=slot,
                    counts_fd=slots.fd if slot is not None else None,
                    counts_slots=slots.slots,
                    correlate_remotely=True,
                    worker_id=worker.id,
                    workers=target if target is not None else self.target,
                )
            )
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
                    self._reported(worker, message)
                elif isinstance(message, Answer):
                    self._answered(message)
                elif isinstance(message, TapBatch):
                    self._tapped(message)
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
            worker.followed.set()
            with trio.CancelScope(shield=True):
                await worker.channel.aclose()

    async def _reap(self, worker: Worker) -> None:
        worker.returncode = await worker.process.wait()
        with trio.move_on_after(1):
            await worker.followed.wait()  # (its last report, read first)
        worker.exited.set()
        role = worker.role
        worker.role = Role.EXITED
        if worker in self.actives:
            self.actives.remove(worker)
        if self.standby is worker:
            self.standby = None
        self.workers.remove(worker)
        self._retired(worker)
        assert self.ledger is not None
        self.ledger.retire(worker.pid, worker.snapshot)
        expected = (
            worker.expected_exit
            or role is Role.DRAINING
            or worker.kill_reason in (KillReason.RESTART, KillReason.STOP, KillReason.RELOAD)
        )
        if expected:
            log(
                logger,
                logging.INFO,
                "worker.exited",
                worker=worker.id,
                pid=worker.pid,
                role=role,
                returncode=worker.returncode,
            )
            if worker.kill_reason is KillReason.RESTART:
                self._count_restart(RestartCause.RESTART)
        elif not self.stopping or role is Role.ACTIVE:
            self._failed(
                worker, role, RestartCause.HANG if worker.kill_reason is KillReason.HANG else RestartCause.CRASH
            )
        self._wake()

    def _failed(self, worker: Worker, role: Role, cause: RestartCause) -> None:
        assert self.ledger is not None
        self.consecutive_failures += 1
        delay = min(
            self.config.supervisor.restart_backoff_initial_s * 2 ** (self.consecutive_failures - 1),
            self.config.supervisor.restart_backoff_max_s,
        )
        self.next_spawn_at = trio.current_time() + delay
        code = worker.returncode or 0
        detail = f"signal {-code}" if code < 0 else f"exit {code}"
        self.ledger.worker_failed(cause, worker.pid, role, detail, self.consecutive_failures, delay)
        level = (
            logging.ERROR if self.consecutive_failures >= self.config.supervisor.alert_threshold else logging.WARNING
        )
        log(
            logger,
            level,
            f"worker.{cause}",
            worker=worker.id,
            pid=worker.pid,
            role=role,
            detail=detail,
            consecutive_failures=self.consecutive_failures,
            next_spawn_in_s=round(delay, 3),
        )
        if self.consecutive_failures >= self.config.supervisor.alert_threshold:
            log(
                logger,
                logging.ERROR,
                "worker.crash_loop",
                consecutive_failures=self.consecutive_failures,
                backoff_s=round(delay, 3),
            )
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
        if not await until(worker, worker.loaded, STARTUP_TIMEOUT_S):
            if not worker.exited.is_set():
                worker.kill(KillReason.STARTUP)
            return False
        if self.standby is worker:
            self.standby = None
        worker.role = Role.ACTIVE
        self._send_facts()
        self._activating(worker)
        if not await self._send(worker, Activate()):
            return False
        if not await until(worker, worker.serving, STARTUP_TIMEOUT_S):
            if not worker.exited.is_set():
                worker.kill(KillReason.STARTUP)
            return False
        self.actives.append(worker)
        self._started_serving(worker)
        log(logger, logging.INFO, "worker.active", worker=worker.id, pid=worker.pid, serving=len(self.actives))
        if not self._ready_sent:
            self._ready_sent = True
            sdnotify.notify("READY=1", f"MAINPID={os.getpid()}", "STATUS=serving")
            if self.on_ready is not None:
                self.on_ready(self)
        else:
            sdnotify.notify(f"STATUS=serving (worker pid {worker.pid})")
        return True
