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
from ..admin.source import LocalSource
from ..config.addresses import HostPort
from ..config.model import ProxyConfig
from ..forward import faultcontrol
from ..forward.limits import SharedCounts
from ..forward.proxy import Cooperation, Proxy
from ..forward.state import CONN_IDS_PER_WORKER, RouteControl, number_connections_from
from ..logs import log
from ..net.listeners import BoundListener
from .channel import BlockingChannel, Channel, ChannelClosed
from .messages import (
    Activate,
    Answer,
    Configure,
    Drain,
    Facts,
    HealthUpdate,
    Heartbeat,
    ListenerPlan,
    Loaded,
    LogLevel,
    Query,
    Refresh,
    RouteControls,
    RuntimeFaults,
    Serving,
    StopNow,
    SupervisionFacts,
    TapOn,
    WorkerSnapshot,
)
from .report import worker_report
from .taprelay import TapRelay

logger = logging.getLogger(__name__)


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


class _Beat:
    """When the heartbeat task reports: every interval, and at once when the
    supervisor asks (``Refresh``, counted so that it knows which report
    answers it)."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.asked = 0

    def ask(self) -> None:
        self.asked += 1
        self.event.set()


async def _heartbeat(channel: Channel, proxy: Proxy, interval_s: float, beat: _Beat) -> None:
    try:
        while True:
            asked = beat.asked
            await channel.send(Heartbeat(worker_report(proxy), asked))
            with trio.move_on_after(interval_s):
                await beat.event.wait()
            beat.event = trio.Event()
    except ChannelClosed:
        pass  # the receiving side notices and decides


def apply_health(proxy: Proxy, update: HealthUpdate) -> None:
    """The supervisor's checks, applied to this worker's copies."""
    by_name = {rt.name: rt for rt in proxy.routes}
    for name, targets in update.routes:
        rt = by_name.get(name)
        if rt is not None and len(targets) == len(rt.health.targets):
            rt.health.targets[:] = targets


def apply_controls(proxy: Proxy, message: RouteControls) -> None:
    """What operators set on the routes (a route not named is enabled)."""
    set_ = {name: (RouteControl(state), since) for name, state, since in message.controls}
    for rt in proxy.routes:
        control, since = set_.get(rt.name, (RouteControl.ENABLED, None))
        proxy.control_route(rt.name, control, since)


async def _answer(channel: Channel, source: LocalSource, query: Query) -> None:
    """A question of the supervisor's admin endpoint, about this worker's connections."""
    payload: object = None
    if query.kind == "connections":
        args = query.args
        payload = await source.connections(args.get("route"), int(args.get("offset", 0)), int(args.get("limit", 100)))
    elif query.kind == "connection":
        payload = await source.connection(int(query.args["id"]))
    try:
        await channel.send(Answer(query.id, payload))
    except ChannelClosed:
        pass


async def _sigterm_drains(proxy: Proxy) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            proxy.begin_drain()


class _Leave(Exception):
    """SIGTERM reached a standby: it just leaves."""


def _leave(signum: int, frame: object) -> None:
    raise _Leave


class Activated:
    """What a standby received before it was activated."""

    def __init__(self, setup: Configure) -> None:
        self.setup = setup
        self.facts: SupervisionFacts | None = None
        self.health: HealthUpdate | None = None
        self.buffered = b""


def standby(sock: socket.socket) -> Activated | None:
    """Wait to be activated, with no event loop: receive the configuration,
    say ``Loaded``, heartbeat every interval; the setup, the latest facts and
    upstream states, and the bytes read past ``Activate`` -- or None: told to
    go, or orphaned."""
    channel = BlockingChannel(sock)
    previous = signal.signal(signal.SIGTERM, _leave)
    try:
        setup = channel.receive()
        assert isinstance(setup, Configure), setup
        got = Activated(setup)
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
                got.buffered = bytes(channel.buffer)
                return got
            elif isinstance(message, Facts):
                got.facts = message.facts
            elif isinstance(message, HealthUpdate):
                got.health = message
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
    return trio.run(serve_activated, sock, activated, fd_map)


async def serve_activated(sock: socket.socket, activated: Activated, fd_map: dict[int, int] | None) -> int:
    """Serve until drained: accept on the inherited sockets, report to the
    supervisor (which serves the admin endpoint from every worker's reports)."""
    setup = activated.setup
    sock.setblocking(False)
    channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), activated.buffered)
    config = setup.config
    listeners = adopt(config, setup.listeners, fd_map)
    counts = None
    if setup.counts_fd is not None:
        fd = (fd_map or {}).get(setup.counts_fd, setup.counts_fd)
        counts = SharedCounts(fd, len(config.routes), setup.counts_slots, setup.slot)
        os.close(fd)  # (the mapping stays)
    number_connections_from(setup.worker_id * CONN_IDS_PER_WORKER + 1)
    facts = _Facts()
    facts.latest = activated.facts
    proxy = Proxy(
        config,
        listeners,
        Cooperation(
            workers=setup.workers,
            counts=counts,
            relay_stats=True,
            checks_elsewhere=True,
            correlate_remotely=setup.correlate_remotely,
        ),
    )
    proxy.supervisor_facts = facts
    if activated.health is not None:
        apply_health(proxy, activated.health)
    source = LocalSource(proxy)  # (its collector: the report's per-route families)
    relay = TapRelay(proxy.taps, channel)

    async with trio.open_nursery() as nursery:
        beat = _Beat()
        nursery.start_soon(_heartbeat, channel, proxy, setup.heartbeat_interval_s, beat)
        nursery.start_soon(_sigterm_drains, proxy)
        nursery.start_soon(relay.run)
        await nursery.start(proxy.serve)
        await channel.send(Serving())
        log(logger, logging.INFO, "worker.serving", pid=os.getpid(), worker=setup.worker_id)

        async def follow_supervisor() -> None:
            try:
                while True:
                    message = await channel.receive()
                    if isinstance(message, Facts):
                        facts.latest = message.facts
                    elif isinstance(message, Refresh):
                        beat.ask()
                    elif isinstance(message, Query):
                        nursery.start_soon(_answer, channel, source, message)
                    elif isinstance(message, HealthUpdate):
                        apply_health(proxy, message)
                    elif isinstance(message, TapOn):
                        relay.want(message.filters)
                    elif isinstance(message, RouteControls):
                        apply_controls(proxy, message)
                    elif isinstance(message, RuntimeFaults):
                        faultcontrol.apply_runtime(proxy.routes, message.faults, message.suppressed)
                    elif isinstance(message, LogLevel):
                        logs.set_level(message.level)
                    elif isinstance(message, Drain):
                        proxy.begin_drain()
                    elif isinstance(message, StopNow):
                        proxy.stop_now()
            except ChannelClosed:
                log(logger, logging.WARNING, "worker.orphaned", detail="supervisor gone; draining")
                proxy.begin_drain()

        nursery.start_soon(follow_supervisor)
        await proxy.stopped.wait()
        # The last report: what it counted since the previous one stays in the view.
        with trio.move_on_after(1):
            try:
                await channel.send(Heartbeat(worker_report(proxy)))
            except ChannelClosed:
                pass
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
