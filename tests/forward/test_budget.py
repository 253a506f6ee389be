"""What the proxy does when observation is over its budgets: forward
unobserved, count it; and a closed connection keeps nothing alive."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.demo.servers import serve_http

from ..conftest import connect, receive_all, route_doc, start_proxy, wait_until


async def test_over_budget_connections_are_forwarded_unobserved_and_counted(nursery) -> None:
    """Under CPU pressure, with almost no budget, the first chunk observed puts observation in debt:
    that connection is shed mid-stream and the next one is never observed, yet
    every byte of every exchange arrives, and no observer error is counted."""
    with trio.fail_after(10):
        http = await nursery.start(serve_http, "127.0.0.1", 0)
        doc = route_doc(f"127.0.0.1:{http}")
        doc["proxy"] = {"observe_cpu_share": 1e-9}  # a burst of 1 ns: less than any exchange costs
        proxy = await start_proxy(nursery, doc)
        budget = proxy.proxy.observe_budget
        budget.pressure_utilization = 0.0  # the test's worker counts as saturated, however idle
        await wait_until(lambda: budget.pressure)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
        post = (
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        replies = []
        for _ in range(2):  # two connections, two exchanges each (the last one closes)
            stream = await connect(proxy.port())
            await stream.send_all(post + post.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
            replies.append(await receive_all(stream))
            await stream.aclose()
        for reply in replies:
            assert reply.count(b"HTTP/1.1 200 ") == 2 and reply.count(b'"result"') == 2
        await wait_until(lambda: proxy.route().active == 0)
        registry = proxy.registry()
        assert registry.get_sample_value("mcp_sidecar_observer_shed_total", {"route": "r"}) == 2
        assert (
            registry.get_sample_value("mcp_sidecar_observer_errors_total", {"route": "r", "protocol": "http"}) or 0
        ) == 0
        # The first connection's requests were read, then it was shed: no exchange completed.
        assert (
            registry.get_sample_value(
                "mcp_sidecar_http_requests_total", {"route": "r", "method": "POST", "status": "200"}
            )
            is None
        )
        assert registry.get_sample_value("mcp_sidecar_observer_seconds_total", {"route": "r"}) > 0
        assert proxy.proxy.observe_budget.shed == 2


async def test_a_closed_connection_keeps_nothing_alive(nursery) -> None:
    """Observation <-> Connection and the pump callbacks are cut at close: the
    buffers go with the last reference, not when the cyclic GC runs."""
    import gc
    import weakref

    from mcp_sidecar.demo.servers import serve_http

    from ..conftest import route_doc, start_proxy, wait_until

    with trio.fail_after(10):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"))
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port())
        await stream.send_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        await wait_until(lambda: proxy.route().connections)

        def observed():
            conn = next(iter(proxy.route().connections.values()))
            return (
                conn.observation
                if conn.observation is not None and conn.observation.observer.http is not None
                else None
            )

        await wait_until(observed)
        observation, http = weakref.ref(observed()), weakref.ref(observed().observer.http)
        gc.disable()
        try:
            await stream.aclose()
            await wait_until(lambda: not proxy.route().connections)
            await wait_until(lambda: observation() is None or observation().mode == "closed")
            for _ in range(5):
                await trio.lowlevel.checkpoint()  # let the connection's task finish
            assert http() is None and observation() is None
        finally:
            gc.enable()
