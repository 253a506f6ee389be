"""End-to-end forwarding through an in-process proxy on loopback sockets."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.demo.servers import serve_echo

from ..conftest import (
    ScriptedUpstream,
    connect,
    echo_roundtrip,
    free_port,
    ipv6_loopback_available,
    receive_all,
    receive_exactly,
    route_doc,
    start_proxy,
    start_scripted_upstream,
    wait_until,
)

needs_ipv6 = pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback (::1) on this host")

payloads = st.binary(min_size=0, max_size=300_000)
chunkings = st.lists(st.integers(min_value=1, max_value=100_000), min_size=1, max_size=20)
#: pytest-trio runs each hypothesis example in its own trio run, so these
#: tests start their upstream and proxy inside the example, not in fixtures.
fuzz = settings(max_examples=25, deadline=None)


def chunks_of(data: bytes, sizes: list[int]):
    """Split ``data`` by cycling through ``sizes``."""
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        yield data[pos : pos + size]
        pos += size
        i += 1


async def send_chunked(stream: trio.abc.SendStream, data: bytes, sizes: list[int]) -> None:
    for chunk in chunks_of(data, sizes):
        await stream.send_all(chunk)


def abort(stream: trio.SocketStream) -> None:
    """Close with RST."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


#: Small buffers make reads fill the buffer often, which switches the pump
#: to splice(2) and back: both paths are exercised.
pump_settings = st.fixed_dictionaries({"buffer_size": st.sampled_from([4096, 65536, 262144]), "splice": st.booleans()})


@fuzz
@given(payload=payloads, sizes=chunkings, settings_=pump_settings)
async def test_echo_is_byte_exact_with_client_half_close(payload: bytes, sizes, settings_) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
            proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}", **settings_))
            received = await echo_chunked(proxy.port(), payload, sizes)
            nursery.cancel_scope.cancel()
        assert received == payload


async def echo_chunked(port: int, payload: bytes, sizes) -> bytes:
    """Send ``payload`` in chunks, half-close, and read the echo to EOF."""
    received = b""
    async with await connect(port) as client:

        async def reader() -> None:
            nonlocal received
            received = await receive_all(client)

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await send_chunked(client, payload, sizes)
            await client.send_eof()
    return received


@fuzz
@given(
    up=payloads,
    down=payloads,
    up_sizes=chunkings,
    down_sizes=chunkings,
    upstream_closes_first=st.booleans(),
    settings_=pump_settings,
)
async def test_both_directions_byte_exact_with_half_close_from_either_side(
    up: bytes,
    down: bytes,
    up_sizes,
    down_sizes,
    upstream_closes_first: bool,
    settings_,
) -> None:
    """Each side sends its own payload; one side half-closes first and the
    other direction must still be delivered completely after that."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            scripted_upstream = await start_scripted_upstream(nursery)
            got_first, got_second, first_data, second_data = await exchange_with_half_close(
                nursery, scripted_upstream, up, down, up_sizes, down_sizes, upstream_closes_first, settings_
            )
            nursery.cancel_scope.cancel()
    assert got_second == first_data
    assert got_first == second_data


async def exchange_with_half_close(
    nursery, scripted_upstream, up, down, up_sizes, down_sizes, upstream_closes_first, settings_
):
    proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}", **settings_))
    client = await connect(proxy.port())
    server = await scripted_upstream.accepted.receive()
    first, first_data, first_sizes = (server, down, down_sizes) if upstream_closes_first else (client, up, up_sizes)
    second, second_data, second_sizes = (client, up, up_sizes) if upstream_closes_first else (server, down, down_sizes)
    # The first side sends everything and half-closes; the second side reads
    # it all to EOF, and only then sends its own data back.
    async with trio.open_nursery() as n:
        n.start_soon(send_then_eof, first, first_data, first_sizes)
        got_second = await receive_all(second)
    await send_then_eof(second, second_data, second_sizes)
    got_first = await receive_all(first)
    await client.aclose()
    await server.aclose()
    return got_first, got_second, first_data, second_data


async def send_then_eof(stream: trio.SocketStream, data: bytes, sizes) -> None:
    await send_chunked(stream, data, sizes)
    await stream.send_eof()


async def test_bulk_transfer_through_splice_is_byte_exact(
    nursery, scripted_upstream: ScriptedUpstream, monkeypatch
) -> None:
    """8 MiB each way with a 4 KiB buffer: many switches between the copy
    and splice paths, while the other direction runs concurrently."""
    from mcp_sidecar.demo.servers import pattern_bytes
    from mcp_sidecar.forward import pump as pump_module

    pipes = []

    class CountingPipe(pump_module.Pipe):
        def __init__(self, size: int) -> None:
            super().__init__(size)
            pipes.append(self)

    monkeypatch.setattr(pump_module, "Pipe", CountingPipe)

    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}", buffer_size=4096))
        client = await connect(proxy.port())
        server = await scripted_upstream.accepted.receive()
        up = pattern_bytes(8 << 20)
        down = up[::-1]
        results = {}

        async def side(name, stream, data):
            async with trio.open_nursery() as n:
                n.start_soon(send_then_eof, stream, data, [65536, 1, 300_000])
                results[name] = await receive_all(stream)

        async with trio.open_nursery() as n:
            n.start_soon(side, "client", client, up)
            n.start_soon(side, "server", server, down)
        assert results["server"] == up
        assert results["client"] == down
        assert len(pipes) == 2  # each direction went bulk, and used splice
        await client.aclose()
        await server.aclose()


async def test_client_reset_reaches_upstream_as_reset(nursery, scripted_upstream: ScriptedUpstream) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        server = await scripted_upstream.accepted.receive()
        await client.send_all(b"x")
        assert await receive_exactly(server, 1) == b"x"
        abort(client)
        with pytest.raises(trio.BrokenResourceError):
            while await server.receive_some(100):
                pass
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"client_reset": 1}


async def test_upstream_reset_reaches_client_as_reset(nursery, scripted_upstream: ScriptedUpstream) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        server = await scripted_upstream.accepted.receive()
        await server.send_all(b"hello")
        assert await receive_exactly(client, 5) == b"hello"
        abort(server)
        with pytest.raises(trio.BrokenResourceError):
            while await client.receive_some(100):
                pass
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"upstream_reset": 1}


@pytest.mark.parametrize("upstream_host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_localhost_upstream_reaches_either_family(nursery, upstream_host: str) -> None:
    """``localhost`` works whether the upstream listens on 127.0.0.1 only or
    on ::1 only (Node's habit), whatever /etc/hosts says."""
    with trio.fail_after(10):
        port = await nursery.start(serve_echo, upstream_host, 0)
        proxy = await start_proxy(nursery, route_doc(f"localhost:{port}"))
        for _ in range(3):  # the preferred family is remembered; all must work
            assert await echo_roundtrip(proxy.port()) == b"ping"
        assert proxy.route().ended == {"closed": 3}
        assert len(proxy.route().recent_clients["127.0.0.1"]) == 3  # seen as reconnects of one client


@needs_ipv6
async def test_ipv6_listen_and_upstream(nursery) -> None:
    from mcp_sidecar.config.parse import build_config
    from mcp_sidecar.forward.proxy import Proxy
    from mcp_sidecar.net.listeners import bind_all

    with trio.fail_after(10):
        port = await nursery.start(serve_echo, "::1", 0)
        config = build_config(forwards=(f"[::1]:0:[::1]:{port}",))
        proxy = Proxy(config, bind_all(config))
        await nursery.start(proxy.serve)
        listen = proxy.routes[0].listeners[0].address
        assert listen.host == "::1"
        assert await echo_roundtrip(listen.port, "::1") == b"ping"


async def test_retry_window_serves_client_when_upstream_starts_late(nursery) -> None:
    with trio.fail_after(15):
        port = free_port()
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{port}", connect_retry_window="8s"))
        client = await connect(proxy.port())
        await client.send_all(b"early bytes")
        # The first attempt is refused (nobody listens yet) ...
        await wait_until(lambda: proxy.route().connector.failed_attempts >= 1)
        # ... then the upstream comes up, and the same client is served.
        await nursery.start(serve_echo, "127.0.0.1", port)
        await client.send_eof()
        assert await receive_all(client) == b"early bytes"
        await client.aclose()
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"closed": 1}


async def test_upstream_down_after_retry_window_resets_client(nursery) -> None:
    with trio.fail_after(10):
        port = free_port()
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{port}", connect_retry_window="200ms"))
        client = await connect(proxy.port())
        t0 = trio.current_time()
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some(10)
        assert trio.current_time() - t0 < 5
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"upstream_unavailable": 1}
        assert set(proxy.route().connector.failures) == {"refused"}  # every attempt refused, none other
        assert proxy.route().connector.failed_attempts >= 2  # it did retry


async def assert_refused_at_once(port: int) -> None:
    """The proxy accepted and reset the connection: the client sees the reset
    at connect, or EOF/reset on its first read, and no byte of data."""
    try:
        stream = await connect(port)
    except OSError:
        return  # reset raced the handshake
    async with stream:
        try:
            assert await stream.receive_some(10) == b""
        except trio.BrokenResourceError:
            pass


async def test_max_connections_rejects_excess_and_recovers(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}", max_connections=2))
        held = [await connect(proxy.port()) for _ in range(2)]
        for stream in held:  # both are really forwarded
            await stream.send_all(b"ok")
            assert await receive_exactly(stream, 2) == b"ok"
        await assert_refused_at_once(proxy.port())
        assert proxy.route().rejected == {"max_connections": 1}
        await held[0].aclose()
        await wait_until(lambda: proxy.route().active == 1)
        assert await echo_roundtrip(proxy.port()) == b"ping"
        await held[1].aclose()
        assert proxy.route().total == 3


async def test_idle_timeout_closes_quiet_connection_only(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}", idle_timeout="300ms"))
        quiet = await connect(proxy.port())
        busy = await connect(proxy.port())
        t0 = trio.current_time()

        async def keep_busy() -> None:
            for _ in range(12):  # 0.6 s of traffic every 50 ms: never idle for 300 ms
                await busy.send_all(b"b")
                assert await receive_exactly(busy, 1) == b"b"
                await trio.sleep(0.05)

        async with trio.open_nursery() as n:
            n.start_soon(keep_busy)
            assert await quiet.receive_some(10) == b""  # closed by the proxy
            closed_after = trio.current_time() - t0
        assert 0.3 <= closed_after < 1.5
        assert proxy.route().ended == {"idle_timeout": 1}
        await busy.send_all(b"still here")
        assert await receive_exactly(busy, 10) == b"still here"
        await busy.aclose()
        await quiet.aclose()


async def test_drain_lets_open_connection_finish_and_refuses_new(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"))
        port = proxy.port()
        open_conn = await connect(port)
        await open_conn.send_all(b"a")
        assert await receive_exactly(open_conn, 1) == b"a"
        proxy.proxy.begin_drain()
        await wait_until(lambda: proxy.route().listeners[0].sock.fileno() < 0)
        with pytest.raises(OSError):
            await connect(port)
        await open_conn.send_all(b"b")  # the open connection still works
        assert await receive_exactly(open_conn, 1) == b"b"
        assert not proxy.proxy.stopped.is_set()
        await open_conn.send_eof()
        assert await receive_all(open_conn) == b""
        await open_conn.aclose()
        await proxy.proxy.stopped.wait()
        assert proxy.route().ended == {"closed": 1}


async def test_drain_timeout_closes_lingering_connections(nursery, echo_port: int) -> None:
    from dataclasses import replace

    from mcp_sidecar.config.parse import build_config
    from mcp_sidecar.forward.proxy import Proxy
    from mcp_sidecar.net.listeners import bind_all

    with trio.fail_after(10):
        config = replace(build_config(route_doc(f"127.0.0.1:{echo_port}")), drain_timeout_s=0.3)
        proxy = Proxy(config, bind_all(config))
        await nursery.start(proxy.serve)
        lingering = await connect(proxy.routes[0].listeners[0].address.port)
        await lingering.send_all(b"x")
        assert await receive_exactly(lingering, 1) == b"x"
        t0 = trio.current_time()
        proxy.begin_drain()
        await proxy.stopped.wait()
        assert 0.25 <= trio.current_time() - t0 < 3
        assert proxy.routes[0].ended == {"drain_timeout": 1}
        assert await lingering.receive_some(10) == b""
        await lingering.aclose()


async def test_allow_list_refuses_other_clients_at_accept(nursery, echo_port) -> None:
    with trio.fail_after(10):
        closed_doc = route_doc(f"127.0.0.1:{echo_port}", allow=["10.0.0.0/8", "::1"])
        refused = await start_proxy(nursery, closed_doc)
        try:  # reset at accept: so fast that the connect itself may see it
            client = await connect(refused.port())
            await client.send_all(b"hello")
            data = await client.receive_some(10)
        except (OSError, trio.BrokenResourceError):
            data = b""
        assert data == b""  # nothing was forwarded
        await wait_until(lambda: refused.route().rejected.get("not_allowed") == 1)
        assert refused.route().total == 0
        open_doc = route_doc(f"127.0.0.1:{echo_port}", allow=["127.0.0.0/8"])
        allowed = await start_proxy(nursery, open_doc)
        assert await echo_roundtrip(allowed.port()) == b"ping"


@needs_ipv6
async def test_allow_list_on_ipv6(nursery, echo_port) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}", listen="[::1]:0", allow=["::1"]))
        assert await echo_roundtrip(proxy.port(), host="::1") == b"ping"


async def test_an_ipv4_mapped_allow_entry_matches_that_ipv4_client_on_a_dual_stack_socket(nursery, echo_port) -> None:
    """A dual-stack socket (systemd's, by default) sees an IPv4 client as
    ``::ffff:a.b.c.d``; allow entries are normalised as clients are."""
    from mcp_sidecar.config.addresses import HostPort
    from mcp_sidecar.config.parse import build_config
    from mcp_sidecar.forward.proxy import Proxy
    from mcp_sidecar.net.listeners import BoundListener

    with trio.fail_after(10):
        config = build_config(route_doc(f"127.0.0.1:{echo_port}", listen="[::]:0", allow=["::ffff:127.0.0.1"]))
        assert config.routes[0].settings.allow == ("127.0.0.1/32",)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual-stack, as systemd hands them over
        sock.bind(("::", 0))
        sock.listen(16)
        sock.setblocking(False)
        proxy = Proxy(config, [BoundListener(config.routes[0], sock, HostPort("::", sock.getsockname()[1]))])
        await nursery.start(proxy.serve)
        assert await echo_roundtrip(sock.getsockname()[1], host="127.0.0.1") == b"ping"
        assert proxy.routes[0].rejected == {}
        assert proxy.routes[0].allows("::ffff:127.0.0.1") and proxy.routes[0].allows("127.0.0.1")
        assert not proxy.routes[0].allows("::ffff:127.0.0.2") and not proxy.routes[0].allows("10.0.0.2")
