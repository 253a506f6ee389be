"""A supervised worker process: ``python -m mcp_sidecar.supervise.worker CHANNEL_FD``.

Rules this module keeps:

* It speaks the protocol of ``messages.py`` over the channel its supervisor
  passed it: configured and heartbeating it is a *standby*; activated it
  accepts on the inherited listening sockets and answers the admin endpoint.
* Heartbeats come from the event loop itself, so a stalled loop stops them
  and the supervisor replaces the worker.
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

import trio

from .. import logs
from ..admin.server import AdminServer
from ..admin.status import route_statuses
from ..config.addresses import HostPort
from ..config.model import ProxyConfig
from ..forward.proxy import Proxy
from ..logs import log
from ..net.listeners import BoundListener
from .channel import Channel, ChannelClosed
from .messages import (Activate, Configure, Drain, Facts, Heartbeat, ListenerPlan, Loaded, Serving, StopNow,
                       SupervisionFacts, WorkerSnapshot)

logger = logging.getLogger(__name__)


def snapshot(proxy: Proxy) -> WorkerSnapshot:
    """What the supervisor keeps of this worker: enough for `proxyctl status`."""
    return WorkerSnapshot(os.getpid(), proxy.draining, route_statuses(proxy))


def adopt(config: ProxyConfig, plan: tuple[ListenerPlan, ...]) -> list[BoundListener]:
    """Wrap the inherited listening descriptors."""
    listeners = []
    for item in plan:
        sock = socket.socket(fileno=item.fd)
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


class _Facts:
    """The supervisor's latest facts, as the worker's views show them."""

    def __init__(self) -> None:
        self.latest: SupervisionFacts | None = None

    def __call__(self) -> dict | None:
        return self.latest.as_json() if self.latest is not None else None


async def child_main(channel_fd: int) -> int:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=channel_fd)))
    channel = Channel(stream)
    setup = await channel.receive()
    assert isinstance(setup, Configure), setup
    logs.configure(setup.log_format, setup.log_level)
    config = setup.config
    proxy = Proxy(config, adopt(config, setup.listeners))
    facts = _Facts()
    proxy.supervisor_facts = facts
    admin = AdminServer(proxy, socket.socket(fileno=setup.admin_fd), config.admin) if setup.admin_fd is not None \
        else None

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeat, channel, proxy, setup.heartbeat_interval_s)
        nursery.start_soon(_sigterm_drains, proxy)
        await channel.send(Loaded(os.getpid()))
        # Standby: wait to be activated (or told to go away).
        try:
            while True:
                message = await channel.receive()
                if isinstance(message, Activate):
                    break
                if isinstance(message, Facts):
                    facts.latest = message.facts
                elif isinstance(message, (Drain, StopNow)):
                    nursery.cancel_scope.cancel()
                    return 0
        except ChannelClosed:
            nursery.cancel_scope.cancel()
            return 0

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


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(trio.run(child_main, int(sys.argv[1])))


if __name__ == "__main__":
    main()
