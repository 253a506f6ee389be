"""Running the forwarding worker in this process, with signal handling.

SIGTERM or SIGINT starts a graceful drain (stop accepting, let connections
finish up to ``drain_timeout``, exit 0); a second one closes every
connection at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import trio

from ..admin.server import AdminServer
from ..config.model import ProxyConfig
from ..forward.proxy import Proxy
from ..forward.recorder import run_recorders
from ..logs import log
from ..net.listeners import Sockets

logger = logging.getLogger(__name__)


async def _watch_signals(proxy: Proxy) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not proxy.draining:
                log(logger, logging.INFO, "signal.drain", signal=name)
                proxy.begin_drain()
            else:
                log(logger, logging.WARNING, "signal.stop_now", signal=name)
                proxy.stop_now()


async def run_worker(
    config: ProxyConfig,
    sockets: Sockets,
    on_ready: Callable[[Proxy, AdminServer | None], None] | None = None,
) -> None:
    """Serve until drained.  The admin endpoint answers through the drain
    (readiness says 503 "draining") and stops with the proxy."""
    proxy = Proxy(config, sockets.routes)
    admin = AdminServer(proxy, sockets.admin, config.admin) if sockets.admin is not None else None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, proxy)
        nursery.start_soon(run_recorders, config, proxy.taps)
        if admin is not None:
            await nursery.start(admin.serve)
        await nursery.start(proxy.serve)
        if on_ready is not None:
            on_ready(proxy, admin)
        # serve() runs on in the nursery; once it has drained, stop watching signals.
        await proxy.stopped.wait()
        nursery.cancel_scope.cancel()
