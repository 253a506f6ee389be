"""A supervised worker process, forked by the fork server or exec'd as
``python -m mcp_sidecar.supervise.worker CHANNEL_FD``.

Rules this module keeps:

* It speaks the protocol of ``messages.py`` over the channel its supervisor
  passed it: configured and heartbeating it is a *standby*; activated it
  accepts on the inherited listening sockets and answers the admin endpoint.
* A standby waits without an event loop (``standby``: blocking reads,
  heartbeats between them): until it serves it builds nothing and dirties
  almost none of the memory it shares with the fork server.  Once activated
  it runs trio, and heartbeats come from the event loop itself, so a
  stalled loop stops them and the supervisor replaces the worker.
* If the channel closes (the supervisor died), the worker drains and exits
  rather than hold the ports as an orphan.
* SIGTERM drains; SIGINT is ignored: a terminal's Ctrl-C reaches the
  supervisor, which decides.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import trio

from .. import logs
from ..admin.server import AdminServer
from ..admin.status import route_statuses
from ..config.addresses import HostPort
from ..config.model import ProxyConfig
from ..forward.proxy import Proxy
from ..logs import log
from ..net.listeners import BoundListener
from .channel import BlockingChannel, Channel, ChannelClosed
from .messages import (
    Activate,
    Configure,
    Drain,
    Facts,
    Heartbeat,
    ListenerPlan,
    Loaded,
    Serving,
    StopNow,
    SupervisionFacts,
    WorkerSnapshot,
)

logger = logging.getLogger(__name__)


def snapshot(proxy: Proxy) -> WorkerSnapshot:
    """What the supervisor keeps of this worker: enough for `proxyctl status`."""
    proxy.observe_queue.drain()
    return WorkerSnapshot(os.getpid(), proxy.draining, route_statuses(proxy))


def adopt(
    config: ProxyConfig, plan: tuple[ListenerPlan, ...], fd_map: dict[int, int] | None = None
) -> list[BoundListener]:
    """Wrap the inherited listening descriptors (``fd_map``: the supervisor's
    numbers to ours, when they came over a socket rather than through exec)."""
    listeners = []
    for item in plan:
        sock = socket.socket(fileno=(fd_map or {}).get(item.fd, item.fd))
        sock.setblocking(False)
        listeners.append(BoundListener(config.routes[item.route_index], sock, HostPort(item.host, item.port)))
    return listeners


async def _heartbeat(channel: Channel, proxy: Proxy, interval_s: float) -> None:
    try:
        while True:
            await channel.send(Heartbeat(snapshot(proxy)))
            await trio.sleep(interval_s)
    except ChannelClosed:
        pass  # the receiving side notices and decides


async def _sigterm_drains(proxy: Proxy) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            proxy.begin_drain()


class _Leave(Exception):
    """SIGTERM reached a standby: it just leaves."""


def _leave(signum: int, frame: object) -> None:
    raise _Leave


def standby(sock: socket.socket) -> tuple[Configure, SupervisionFacts | None, bytes] | None:
    """Wait to be activated, with no event loop: receive the configuration,
    say ``Loaded``, heartbeat every interval; the setup, the latest facts and
    the bytes read past ``Activate`` -- or None: told to go, or orphaned."""
    channel = BlockingChannel(sock)
    facts: SupervisionFacts | None = None
    previous = signal.signal(signal.SIGTERM, _leave)
    try:
        setup = channel.receive()
        assert isinstance(setup, Configure), setup
        logs.configure(setup.log_format, setup.log_level)
        channel.send(Loaded(os.getpid()))
        idle = WorkerSnapshot(os.getpid(), False, ())
        interval = setup.heartbeat_interval_s
        next_beat = time.monotonic() + interval
        while True:
            message = channel.receive(max(0.0, next_beat - time.monotonic()))
            if message is None:  # (a heartbeat is due)
                channel.send(Heartbeat(idle))
                next_beat = time.monotonic() + interval
            elif isinstance(message, Activate):
                return setup, facts, bytes(channel.buffer)
            elif isinstance(message, Facts):
                facts = message.facts
            elif isinstance(message, (Drain, StopNow)):
                return None
    except (ChannelClosed, _Leave):
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Facts:
    """The supervisor's latest facts, as the worker's views show them."""

    def __init__(self) -> None:
        self.latest: SupervisionFacts | None = None

    def __call__(self) -> dict[str, Any] | None:
        return self.latest.as_json() if self.latest is not None else None


def worker_main(channel_fd: int, fd_map: dict[int, int] | None = None) -> int:
    """A worker's life: standby without an event loop, then serving under trio."""
    sock = socket.socket(fileno=channel_fd)
    activated = standby(sock)
    if activated is None:
        return 0
    setup, latest, buffered = activated
    return trio.run(serve_activated, sock, setup, latest, buffered, fd_map)


async def serve_activated(
    sock: socket.socket,
    setup: Configure,
    latest: SupervisionFacts | None,
    buffered: bytes,
    fd_map: dict[int, int] | None,
) -> int:
    sock.setblocking(False)
    channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), buffered)
    config = setup.config
    listeners = adopt(config, setup.listeners, fd_map)
    admin_fd = None if setup.admin_fd is None else (fd_map or {}).get(setup.admin_fd, setup.admin_fd)
    facts = _Facts()
    facts.latest = latest
    proxy = Proxy(config, listeners)
    proxy.supervisor_facts = facts
    admin = AdminServer(proxy, socket.socket(fileno=admin_fd), config.admin) if admin_fd is not None else None

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeat, channel, proxy, setup.heartbeat_interval_s)
        nursery.start_soon(_sigterm_drains, proxy)
        admin_scope = trio.CancelScope()

        async def serve_admin(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            assert admin is not None
            with admin_scope:
                await admin.serve(task_status=task_status)

        if admin is not None:
            await nursery.start(serve_admin)
        await nursery.start(proxy.serve)
        await channel.send(Serving())
        log(logger, logging.INFO, "worker.serving", pid=os.getpid())

        async def follow_supervisor() -> None:
            try:
                while True:
                    message = await channel.receive()
                    if isinstance(message, Facts):
                        facts.latest = message.facts
                    elif isinstance(message, Drain):
                        if message.handover:
                            admin_scope.cancel()  # the next worker answers on the admin port
                        proxy.begin_drain()
                    elif isinstance(message, StopNow):
                        admin_scope.cancel()
                        proxy.stop_now()
            except ChannelClosed:
                log(logger, logging.WARNING, "worker.orphaned", detail="supervisor gone; draining")
                admin_scope.cancel()
                proxy.begin_drain()

        nursery.start_soon(follow_supervisor)
        await proxy.stopped.wait()
        nursery.cancel_scope.cancel()
    return 0


def run_forked(channel_fd: int, fd_map: dict[int, int]) -> int:
    """The worker's life in a process forked by the fork server (forkserver.py)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return worker_main(channel_fd, fd_map)


def main() -> None:
    """An exec'd worker (``worker_spawn = "exec"``, or no fork server)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(worker_main(int(sys.argv[1])))


if __name__ == "__main__":
    main()
