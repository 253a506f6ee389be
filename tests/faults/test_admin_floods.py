"""Hostile admin clients: idle floods and slowloris cannot take the probes down."""

from __future__ import annotations

import trio

from mcp_sidecar.admin import server as admin_module
from mcp_sidecar.net.http import request

from ..conftest import connect, route_doc, scaled, start_proxy


async def _probe(port: int, path: str, timeout_s: float) -> int:
    with trio.fail_after(timeout_s):
        return (await request("127.0.0.1", port, path)).status


async def test_idle_flood_never_blocks_liveness(nursery, echo_port) -> None:
    """Far more idle connections than the cap: each probe sheds the oldest."""
    with trio.fail_after(30 * scaled(1)):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        idle = [await connect(proxy.admin_port) for _ in range(scaled(300))]
        answered = 0
        for _ in range(scaled(20)):
            assert await _probe(proxy.admin_port, "/healthz", 1.0) == 200
            answered += 1
            idle.append(await connect(proxy.admin_port))  # the flood goes on between probes
        assert answered == scaled(20)
        assert proxy.admin.shed >= len(idle) - admin_module.MAX_ADMIN_CONNECTIONS
        for s in idle:
            await s.aclose()


async def test_slowloris_cannot_starve_metrics(nursery, echo_port) -> None:
    with trio.fail_after(30 * scaled(1)):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        slow = [await connect(proxy.admin_port) for _ in range(scaled(200))]

        async def trickle(stream) -> None:
            try:
                for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.2)
            except trio.BrokenResourceError:
                pass  # shed or timed out, as it should be

        async with trio.open_nursery() as flood:
            for s in slow:
                flood.start_soon(trickle, s)
            for _ in range(scaled(12)):
                assert await _probe(proxy.admin_port, "/metrics", 2.0) == 200
                assert await _probe(proxy.admin_port, "/readyz", 2.0) == 200
                await trio.sleep(0.1)
            flood.cancel_scope.cancel()
        for s in slow:
            await s.aclose()
