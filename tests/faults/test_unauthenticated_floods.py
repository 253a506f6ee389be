"""Unauthenticated clients flooding a gated or TLS route: they must not hold
the owner out.

The promises (docs/reliability.md): a client that has not passed the TLS
handshake and the gate holds its slot at most ``tls_handshake_timeout`` plus
``gate_head_timeout``; and while the route is at ``max_connections``, each
newcomer sheds the oldest such client instead of being refused.
"""

from __future__ import annotations

import trio

from mcp_sidecar.demo.servers import serve_http
from mcp_sidecar.net.http import request_on

from ..conftest import connect, receive_all, route_doc, start_proxy, wait_until
from ..forward.test_gate import TOKEN, gated


async def test_silent_and_half_head_clients_cannot_hold_the_owner_out(nursery) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, gated(f"127.0.0.1:{upstream}", max_connections=10, gate_head_timeout="2s"))
        flood = []
        for i in range(10):  # the route's every slot: half silent, half a head that never ends
            client = await connect(proxy.port())
            if i % 2:
                await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            flood.append(client)
        await wait_until(lambda: proxy.route().active == 10 and len(proxy.route().unadmitted) == 10)
        # The owner still gets in (the oldest unauthenticated client made room)...
        owner = await connect(proxy.port())
        reply = await request_on(owner, "x", "/health", headers=[("authorization", f"Bearer {TOKEN}")])
        assert reply.status == 200
        assert proxy.route().ended.get("shed") == 1 and proxy.route().rejected.get("max_connections", 0) == 0
        assert await receive_all(flood[0]) == b""  # the shed one: closed without a word
        # ... and the rest are closed when their head is overdue.
        t0 = trio.current_time()
        for client in flood[1:]:
            assert await receive_all(client) == b""
        assert trio.current_time() - t0 < 4
        assert proxy.route().ended.get("head_timeout") == 9
        assert proxy.route().active == 0 and not proxy.route().unadmitted


async def test_a_tls_client_that_never_finishes_its_handshake_is_closed_in_time(nursery, tls_files) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(
            nursery,
            route_doc(
                f"127.0.0.1:{upstream}",
                tls_cert=str(tls_files.cert),
                tls_key=str(tls_files.key),
                tls_handshake_timeout="1s",
            ),
        )
        silent = await connect(proxy.port())
        half = await connect(proxy.port())
        await half.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        t0 = trio.current_time()
        assert await receive_all(silent) == b""
        assert await receive_all(half) == b""
        assert trio.current_time() - t0 < 3
        assert proxy.route().ended.get("tls_handshake_timeout") == 2
