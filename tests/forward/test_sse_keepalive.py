"""The proxy's own SSE keepalive (``sse_keepalive``), end to end: a silent
event stream gets comment lines between its events -- a chunk of its own on a
chunked stream, plain lines on one that runs until the close -- and every
event still arrives whole; off by default."""

from __future__ import annotations

import trio

from mcp_sidecar.demo.servers import serve_http
from mcp_sidecar.net.http import ClientExchange
from mcp_sidecar.observe.sse import Comment, SseEvent, SseParser

from ..conftest import connect, receive_exactly, route_doc, start_proxy, wait_until
from .test_mcp_eras import MODERN
from .test_observation import sample

LISTEN = (
    b'{"jsonrpc":"2.0","id":"l1","method":"subscriptions/listen","params":{"notifications":{},'
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}'
)


async def _listen(port: int) -> tuple[trio.SocketStream, ClientExchange]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    exchange = ClientExchange(stream)
    headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", MODERN),
        ("mcp-method", "subscriptions/listen"),
    ]
    await exchange.send(f"127.0.0.1:{port}", "/mcp", "POST", LISTEN, headers)
    return stream, exchange


async def test_a_silent_listen_stream_gets_comment_lines_and_stays_a_valid_stream(nursery) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)  # its listen streams are silent
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}", sse_keepalive="0.2s"))
        stream, exchange = await _listen(proxy.port())
        parser, events, comments = SseParser(), [], 0
        async with stream:
            async for chunk in exchange.body():  # h11 decodes the chunked framing: it must stay valid
                for item in parser.feed(chunk):
                    if isinstance(item, SseEvent):
                        events.append(item)
                    elif isinstance(item, Comment):
                        comments += 1
                if comments >= 3:
                    break
        assert [e.event for e in events] == ["message"]  # the acknowledgement, whole
        assert "subscriptions/acknowledged" in events[0].data
        await wait_until(lambda: proxy.route().active == 0)
        assert sample(proxy, "mcp_sidecar_sse_keepalives_total") >= 3
        assert sample(proxy, "mcp_stream_duration_seconds_count", kind="listen", end="client_closed") == 1


async def test_a_stream_that_runs_until_the_close_gets_plain_comment_lines(nursery, scripted_upstream) -> None:
    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}", sse_keepalive="0.2s"))
        client = await connect(proxy.port())
        request = b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        await client.send_all(request)
        upstream = await scripted_upstream.accepted.receive()
        await receive_exactly(upstream, len(request))
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        first = b"event: endpoint\r\ndata: /message?sessionId=abc\r\n\r\n"
        await upstream.send_all(head + first)
        assert await receive_exactly(client, len(head + first)) == head + first
        keepalive = b": keepalive\r\n"  # the stream's own line endings
        assert await receive_exactly(client, len(keepalive)) == keepalive  # after ~0.2 s of silence
        later = b'data: {"jsonrpc":"2.0","id":1,"result":{}}\r\n\r\n'
        await upstream.send_all(later)
        got = b""
        while not got.endswith(later):  # (more keepalives may come first: each a whole line)
            got += await client.receive_some(4096)
        assert got.replace(keepalive, b"") == later
        await upstream.aclose()
        await client.aclose()


async def test_no_keepalive_unless_asked_for(nursery) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"))
        stream, exchange = await _listen(proxy.port())
        async with stream:
            body = exchange.body()
            first = await body.__anext__()  # the acknowledgement
            assert b"subscriptions/acknowledged" in first
            with trio.move_on_after(0.6):
                extra = await body.__anext__()
                raise AssertionError(f"the proxy added {extra!r}")
        assert sample(proxy, "mcp_sidecar_sse_keepalives_total") == 0
