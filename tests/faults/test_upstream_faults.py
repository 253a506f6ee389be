"""The upstream dies, half-closes or falls silent under many connections;
the circuit is open while clients flood in."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from ..conftest import connect, free_port, receive_all, receive_exactly, route_doc, scaled, start_proxy, wait_until


async def test_refusals_while_the_circuit_is_open_are_bounded_by_max_connections(nursery) -> None:
    with trio.fail_after(20):
        proxy = await start_proxy(
            nursery,
            route_doc(
                f"127.0.0.1:{free_port()}",
                connect_retry_window=0,
                breaker_failures=1,
                breaker_open="30s",
                max_connections=50,
            ),
        )
        rt = proxy.route()
        first = await connect(proxy.port())
        with pytest.raises(trio.BrokenResourceError):
            await first.receive_some(10)
        await first.aclose()
        await wait_until(lambda: rt.breaker.state == "open")
        silent = []  # they send nothing: each refusal waits for a request head (up to 1 s)
        for _ in range(scaled(300)):
            s = trio.socket.socket()
            try:
                await s.connect(("127.0.0.1", proxy.port()))
            except OSError:
                pass
            silent.append(s)
        await wait_until(lambda: sum(rt.rejected.values()) >= scaled(300))
        assert rt.refusing <= 50
        assert rt.rejected["max_connections"] >= scaled(300) - 50
        assert rt.rejected["circuit_open"] <= 50
        for s in silent:
            s.close()
        await wait_until(lambda: rt.refusing == 0)


async def test_upstream_death_resets_every_client_and_leaks_nothing(nursery, scripted_upstream) -> None:
    n = scaled(50)
    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        clients = [await connect(proxy.port()) for _ in range(n)]
        upstreams = []
        for c in clients:
            await c.send_all(b"hello")
            up = await scripted_upstream.accepted.receive()
            assert await receive_exactly(up, 5) == b"hello"
            await up.send_all(b"world")
            assert await receive_exactly(c, 5) == b"world"
            upstreams.append(up)
        for up in upstreams:  # the upstream process dies: every connection is reset
            up.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await up.aclose()
        for c in clients:
            with pytest.raises(trio.BrokenResourceError):
                await receive_all(c)
            await c.aclose()
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"upstream_reset": n}
        assert proxy.proxy.observe_memory.used == 0


async def test_upstream_half_close_first_keeps_the_other_direction(nursery, scripted_upstream) -> None:
    n = scaled(50)
    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}", protocol="tcp"))
        pairs = []
        for i in range(n):
            c = await connect(proxy.port())
            await c.send_all(b"x")
            up = await scripted_upstream.accepted.receive()
            assert await receive_exactly(up, 1) == b"x"
            await up.send_all(b"answer %d" % i)
            await up.send_eof()  # the upstream is done talking, still listening
            pairs.append((c, up))
        for i, (c, up) in enumerate(pairs):
            assert await receive_all(c) == b"answer %d" % i
            await c.send_all(b"late %d" % i)  # after the upstream's FIN, still delivered
            assert await receive_exactly(up, len(b"late %d" % i)) == b"late %d" % i
            await c.send_eof()
            assert await receive_all(up) == b""
            await c.aclose()
            await up.aclose()
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"closed": n}


async def test_a_silent_upstream_is_cut_by_the_idle_timeout(nursery, scripted_upstream) -> None:
    n = scaled(100)
    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}", idle_timeout="400ms"))
        clients = []
        for _ in range(n):
            c = await connect(proxy.port())
            await c.send_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            clients.append(c)
        t0 = trio.current_time()
        for c in clients:  # the upstream accepts, reads nothing, says nothing
            assert await receive_all(c) == b""
            await c.aclose()
        elapsed = trio.current_time() - t0
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"idle_timeout": n}
        assert elapsed < 0.4 * 1.25 + 1.0
