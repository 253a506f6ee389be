"""Peers that vanish without a word (no FIN, no RST) while bytes flow to
them: a laptop shut, a cable pulled, a NAT entry dropped.

The promise (docs/reliability.md): ``user_timeout`` (TCP_USER_TIMEOUT, 30 s
by default) ends such a connection on either leg, so the request it carried
ends upstream too (under MCP 2026-07-28, closing the stream is the
cancellation), instead of the kernel's ~15 minutes of retransmissions.
Tested on a real second host (a network namespace) whose link goes down.
"""

from __future__ import annotations

import subprocess
import sys

import trio

from ..conftest import needs_root, route_doc, start_proxy, wait_until

#: The client on the second host: read a little, say so, then just wait.
_CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
got = 0
while got < 8192:
    got += len(s.recv(65536))
print("reading", flush=True)
time.sleep(120)
"""


async def _streaming_upstream(nursery: trio.Nursery, lost: list[float], gone: trio.Event) -> int:
    """Streams to every connection until it breaks; notes when."""

    async def stream(conn: trio.SocketStream) -> None:
        try:
            while True:
                await conn.send_all(b"e" * 1024)
                await trio.sleep(0.01)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            lost.append(trio.current_time())
            gone.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, stream, listeners)
    return listeners[0].socket.getsockname()[1]


@needs_root
async def test_a_client_that_vanishes_mid_stream_ends_its_upstream_within_user_timeout(nursery, second_host) -> None:
    with trio.fail_after(30):
        lost: list[float] = []
        gone = trio.Event()
        upstream = await _streaming_upstream(nursery, lost, gone)
        proxy = await start_proxy(
            nursery,
            route_doc(f"127.0.0.1:{upstream}", listen=f"{second_host.host_ip}:0", protocol="tcp", user_timeout="1s"),
        )
        client = second_host.popen(
            [sys.executable, "-c", _CLIENT, second_host.host_ip, str(proxy.port())], stdout=subprocess.PIPE, text=True
        )
        try:
            line = await trio.to_thread.run_sync(client.stdout.readline)
            assert line == "reading\n"
            t0 = trio.current_time()
            second_host.link_down()
            with trio.fail_after(15):  # the kernel's default would take ~15 minutes
                await gone.wait()
            assert lost[0] - t0 < 10
            await wait_until(lambda: proxy.route().ended.get("client_reset") == 1)
        finally:
            client.kill()
            client.wait(timeout=10)


async def test_user_timeout_is_set_on_both_legs(nursery) -> None:
    import socket

    with trio.fail_after(10):
        lost: list[float] = []
        upstream = await _streaming_upstream(nursery, lost, trio.Event())
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}", protocol="tcp"))
        client = await trio.open_tcp_stream("127.0.0.1", proxy.port())
        async with client:
            await client.receive_some(1024)
            conn = next(iter(proxy.route().connections.values()))
            for sock in (conn.csock, conn.usock):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000  # the default, 30 s
