"""A supervised worker process: ``python -m mcp_sidecar.supervise.worker CHANNEL_FD``.

Life of a worker (the supervisor drives it over the channel):

1. receives ``("config", config, plan, log_format, log_level)``; adopts the
   inherited listening sockets named in ``plan``; answers ``("loaded", pid)``
   and starts heartbeating -- it is now a *standby*;
2. on ``("activate",)`` starts the accept loops and the admin endpoint and
   answers ``("serving",)``;
3. on ``("drain", handover)`` (or SIGTERM) stops accepting, drains, and exits
   0; with ``handover`` (a restart or reload: a successor serves) it also
   stops answering on the admin socket so that the next worker answers
   there, without (a stop) it keeps answering the probes through the drain;
4. ``("facts", dict)`` updates what /api/status and the metrics show about
   supervision; ``("stop_now",)`` closes every connection.

Heartbeats (``("heartbeat", snapshot)``, every ``heartbeat_interval``) come
from the event loop itself, so a stalled loop stops them and the supervisor
replaces the worker.  If the channel closes (the supervisor died), the
worker drains and exits rather than holding the ports as an orphan.
SIGINT is ignored: a terminal's Ctrl-C reaches the supervisor, which decides.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from typing import Any

import trio

from .. import logs
from ..config.addresses import HostPort
from ..admin.server import AdminServer
from .channel import Channel, ChannelClosed
from ..config.model import ProxyConfig
from ..net.listeners import BoundListener
from ..logs import log
from ..forward.proxy import Proxy

logger = logging.getLogger(__name__)


def snapshot(proxy: Proxy) -> dict[str, Any]:
    """What the supervisor keeps of this worker: enough for `proxyctl status`."""
    return {
        "pid": os.getpid(),
        "draining": proxy.draining,
        "routes": [
            {
                "name": rt.config.name,
                "connections_active": rt.active,
                "connections_total": rt.total,
                "upstream_healthy": rt.health.healthy,
                "upstream_state": rt.health.state_name,
                "circuit": rt.breaker.state,
                "upstream_connect_failures": dict(rt.connector.failures),
            }
            for rt in proxy.routes
        ],
    }


def adopt(config: ProxyConfig, plan: list[tuple[int, int, str, int]]) -> list[BoundListener]:
    """Wrap inherited listening fds: plan items are (route index, fd, host, port)."""
    listeners = []
    for index, fd, host, port in plan:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        listeners.append(BoundListener(config.routes[index], sock, HostPort(host, port)))
    return listeners


async def _heartbeat(channel: Channel, proxy: Proxy, interval_s: float) -> None:
    try:
        while True:
            await channel.send("heartbeat", snapshot(proxy))
            await trio.sleep(interval_s)
    except ChannelClosed:
        pass  # the receiving side notices and decides


async def _sigterm_drains(proxy: Proxy) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            proxy.begin_drain()


async def child_main(channel_fd: int) -> int:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=channel_fd)))
    channel = Channel(stream)
    kind, config, plan, admin_fd, log_format, log_level, heartbeat_s = await channel.receive()
    assert kind == "config"
    logs.configure(log_format, log_level)
    proxy = Proxy(config, adopt(config, plan))
    facts: dict[str, Any] = {}
    proxy.supervisor_facts = lambda: dict(facts) if facts else None
    admin = None
    if admin_fd is not None:
        admin_sock = socket.socket(fileno=admin_fd)
        admin = AdminServer(proxy, admin_sock, config.admin)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_heartbeat, channel, proxy, heartbeat_s)
        nursery.start_soon(_sigterm_drains, proxy)
        await channel.send("loaded", os.getpid())
        # Standby: wait to be activated (or told to go away).
        try:
            while True:
                message = await channel.receive()
                if message[0] == "activate":
                    break
                if message[0] == "facts":
                    facts.clear()
                    facts.update(message[1])
                elif message[0] in ("drain", "stop_now"):
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
        await channel.send("serving")
        log(logger, logging.INFO, "worker.serving", pid=os.getpid())

        async def follow_supervisor() -> None:
            try:
                while True:
                    message = await channel.receive()
                    if message[0] == "facts":
                        facts.clear()
                        facts.update(message[1])
                    elif message[0] == "drain":
                        if message[1]:
                            admin_scope.cancel()  # the next worker answers on the admin port
                        proxy.begin_drain()
                    elif message[0] == "stop_now":
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
