"""A client that leaves while the upstream is still being connected to: its
request is not delivered later, and it counts against nobody."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from ..conftest import connect, route_doc, start_proxy, wait_until

REQUEST = (
    b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 58\r\n\r\n"
    b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}'
)


def _not_yet_listening() -> socket.socket:
    """A bound port that refuses connections until ``listen()`` is called."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def _delivered(upstream: socket.socket) -> bytes:
    """The first connection's bytes once the upstream listens."""
    await trio.lowlevel.wait_readable(upstream)
    conn, _ = upstream.accept()
    with trio.socket.from_stdlib_socket(conn) as tconn:
        return await tconn.recv(65536)


@pytest.mark.parametrize(
    "protocol, leave, delivered",
    [
        ("auto", "close", False),  # an HTTP request abandoned with FIN
        ("http", "close", False),
        ("tcp", "reset", False),  # a reset always means gone
        ("tcp", "close", True),  # opaque TCP: FIN after data is a half-close, part of the stream
    ],
)
async def test_a_client_leaving_before_the_upstream_answers(nursery, protocol, leave, delivered) -> None:
    with trio.fail_after(15):
        upstream = _not_yet_listening()
        port = upstream.getsockname()[1]
        proxy = await start_proxy(
            nursery, route_doc(f"127.0.0.1:{port}", protocol=protocol, connect_retry_window="6s", breaker_failures=1)
        )
        client = await connect(proxy.port())
        await client.send_all(REQUEST)
        await wait_until(lambda: proxy.route().connector.failed_attempts >= 2)  # the upstream refuses meanwhile
        if leave == "reset":
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()
        else:
            await client.send_eof()
        failed = proxy.route().connector.failed_attempts
        if delivered:
            # The half-closed client still waits: the upstream gets the request once it listens.
            await wait_until(lambda: proxy.route().connector.failed_attempts >= failed + 2)
            upstream.listen(16)
            assert await _delivered(upstream) == REQUEST
            await client.aclose()
        else:
            await wait_until(lambda: proxy.route().active == 0)  # given up at the next attempt
            upstream.listen(16)
            with pytest.raises(BlockingIOError):  # no tool call with nobody listening, now or later
                upstream.accept()
            assert proxy.route().ended == {"client_gone": 1}
            assert proxy.route().breaker.state == "closed" and proxy.route().breaker.failures == 0
            if leave == "close":
                await client.aclose()
        upstream.close()
