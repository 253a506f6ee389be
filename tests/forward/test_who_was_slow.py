"""Who was slow, live: each MCP request's latency split between the network,
the server, the transfer and the client; a server's buffered event stream
and a client that falls behind, detected and named."""

from __future__ import annotations

import io
import json
import socket

import trio

from mcp_sidecar import logs
from mcp_sidecar.admin.status import mcp_view
from mcp_sidecar.demo.servers import serve_http

from ..conftest import receive_exactly, route_doc, start_proxy, start_scripted_upstream, wait_until
from .test_mcp_eras import mcp_post
from .test_observation import sample

CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "work"}}).encode()
HEAD = (
    b"POST /mcp HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
    b"accept: application/json, text/event-stream\r\ncontent-length: %d\r\n\r\n"
)


def answer(size: int = 0) -> bytes:
    text = "x" * size
    return json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}}).encode()


def response_head(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)


async def one_call(proxy, upstream, serve, client: trio.SocketStream | None = None, read_after: float = 0.0) -> bytes:
    """A tools/call through the proxy, answered by ``serve(stream)`` on the upstream side."""
    stream = client or await trio.open_tcp_stream("127.0.0.1", proxy.port())
    async with stream:
        await stream.send_all(HEAD % len(CALL) + CALL)
        up = await upstream.accepted.receive()
        await receive_exactly(up, len(HEAD % len(CALL)) + len(CALL))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, up)
            await trio.sleep(read_after)  # (a client that does not read yet: the behaviour under test)
            got = b""
            while b"}]}}" not in got[-64:]:
                got += await stream.receive_some(1 << 20)
    return got


def request_log(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines() if '"mcp.request"' in line]


async def test_a_slow_server_and_a_slow_transfer_are_told_apart(nursery) -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    try:
        with trio.fail_after(30):
            upstream = await start_scripted_upstream(nursery)
            proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream.port}", request_log=True))
            body = answer(2000)

            async def thinks(up: trio.SocketStream) -> None:
                await trio.sleep(0.3)
                await up.send_all(response_head(body) + body)

            async def dribbles(up: trio.SocketStream) -> None:
                await up.send_all(response_head(body) + body[:1000])
                await trio.sleep(0.3)
                await up.send_all(body[1000:])

            await one_call(proxy, upstream, thinks)
            await one_call(proxy, upstream, dribbles)
            await wait_until(lambda: len(request_log(out)) == 2)
    finally:
        logs.configure("text", "warning")
    slow_server, slow_transfer = request_log(out)
    for line in (slow_server, slow_transfer):
        parts = line["split_ms"]
        assert set(parts) == {"network", "server", "transfer", "client"}
        # The parts add up to the latency the sidecar saw (plus the client leg's RTT: loopback, microseconds).
        assert abs(sum(parts.values()) - line["latency_ms"]) < 1.0, line
        assert 0 <= parts["network"] < 1.0 and parts["client"] < 1.0
    assert slow_server["split_ms"]["server"] >= 295 and slow_server["split_ms"]["transfer"] < 20
    assert slow_transfer["split_ms"]["transfer"] >= 295 and slow_transfer["split_ms"]["server"] < 20
    split = mcp_view(proxy.proxy, trio.current_time())["routes"][0]["methods"]["tools/call"]["split"]
    assert split["requests"] == 2 and split["server"]["mean_ms"] >= 150 and split["transfer"]["mean_ms"] >= 150
    assert sample(proxy, "mcp_sidecar_mcp_latency_part_seconds_count", method="tools/call", part="server") == 2
    assert sample(proxy, "mcp_sidecar_mcp_latency_part_seconds_sum", method="tools/call", part="transfer") >= 0.3


async def test_a_client_that_falls_behind_is_named(nursery) -> None:
    with trio.fail_after(30):
        upstream = await start_scripted_upstream(nursery)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream.port}"))
        body = answer(900_000)  # (under the observer's 1 MiB bound for a JSON body)

        async def answers(up: trio.SocketStream) -> None:
            await up.send_all(response_head(body) + body)

        # A healthy client: nothing to say.
        await one_call(proxy, upstream, answers)
        assert proxy.route().observation.slow_answers == 0
        # A client with a small window that reads only after 0.5 s.
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", proxy.port()))
        seen = {}

        async def answers_and_looks(up: trio.SocketStream) -> None:
            await answers(up)
            await wait_until(lambda: proxy.route().observation.slow_answers == 1)
            details = [c.as_json(trio.current_time())["slow_client"] for c in proxy.route().connections.values()]
            seen["detail"] = next(d for d in details if d["answers"])

        await one_call(proxy, upstream, answers_and_looks, trio.SocketStream(sock), read_after=0.5)
        # (on loopback the kernel's send buffer took the whole answer: the pump never waited, the client did)
        assert seen["detail"]["answers"] == 1
        split = mcp_view(proxy.proxy, trio.current_time())["routes"][0]
        assert split["slow_client_answers"] == 1
        client = split["methods"]["tools/call"]["split"]["client"]
        assert client["p95_ms"] >= 450  # it read after 0.5 s
        assert client["mean_ms"] < client["p95_ms"]  # the healthy client's answer is in the mean too
        assert sample(proxy, "mcp_sidecar_mcp_slow_client_answers_total") == 1


async def _slow_call(port: int, buffered: bool) -> bytes:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": 4, "buffered": buffered}},
    }
    reply = await mcp_post(port, body, {})
    assert reply.headers["content-type"] == "text/event-stream"
    return reply.body


async def test_a_server_that_buffers_its_event_stream_is_detected_one_that_streams_is_not(nursery) -> None:
    with trio.fail_after(30):
        http_up = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{http_up}"))
        streamed = await _slow_call(proxy.port(), buffered=False)
        assert streamed.count(b"notifications/progress") == 4
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().observation.sse_bursts == 0
        held = await _slow_call(proxy.port(), buffered=True)
        assert held.replace(b'"buffered": true', b"").count(b"notifications/progress") == 4
        await wait_until(lambda: proxy.route().observation.sse_bursts == 1)
        assert sample(proxy, "mcp_sidecar_sse_bursts_total") == 1
        assert mcp_view(proxy.proxy, trio.current_time())["routes"][0]["sse_bursts"] == 1
        # Held back, the server's time shows as its own: the answer came at once after the silence.
        split = mcp_view(proxy.proxy, trio.current_time())["routes"][0]["methods"]["tools/call"]["split"]
        assert split["requests"] == 2 and split["server"]["mean_ms"] >= 150
