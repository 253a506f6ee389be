"""TCP faults: the shaper's decisions (sans-io, exact times) and every
fault through a real proxy against a raw client and the demo echo server."""

from __future__ import annotations

import random
import time

import trio

from mcp_sidecar.config.faults import parse_fault
from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.faults.tcp import Ending, Shaper
from mcp_sidecar.net.http import request

from ..conftest import fault_doc, start_proxy, wait_until


def specs(*tables):
    return [parse_fault({"route": "r", **t}) for t in tables]


# --- the shaper, sans-io -------------------------------------------------------------------------


def test_latency_delays_each_chunk_from_its_arrival_and_keeps_order() -> None:
    shaper = Shaper(specs({"kind": "latency", "latency": "100ms", "jitter": "50ms"}), random.Random(7))
    times = []
    for i in range(200):
        pieces, ending = shaper.chunk(b"x", i * 0.001)
        assert ending is Ending.NONE and [p.data for p in pieces] == [b"x"]
        times.append(pieces[0].at)
    assert times == sorted(times)  # jitter never reorders
    assert all(0.05 + i * 0.001 <= t for i, t in enumerate(times))
    delays = [t - i * 0.001 for i, t in enumerate(times)]
    assert max(delays) < 0.15 + 0.1  # (order kept: a late one can hold the next back a little)
    steady = Shaper(specs({"kind": "latency", "latency": "100ms"}))
    assert [steady.chunk(b"a", t)[0][0].at for t in (0.0, 5.0)] == [0.1, 5.1]  # not cumulative


def test_bandwidth_paces_bulk_at_its_rate() -> None:
    shaper = Shaper(specs({"kind": "bandwidth", "rate": 1000}))
    pieces, _ = shaper.chunk(b"x" * 1000, 0.0)
    assert [len(p.data) for p in pieces] == [100] * 10  # a tenth of a second's worth each
    assert [round(p.at, 3) for p in pieces] == [round(0.1 * (i + 1), 3) for i in range(10)]
    more, _ = shaper.chunk(b"y" * 100, 0.2)  # arrived while the first still drains: queued behind it
    assert round(more[0].at, 3) == 1.1


def test_slicer_cuts_within_its_bounds_with_pauses() -> None:
    shaper = Shaper(
        specs({"kind": "slicer", "average_size": 10, "size_variation": 3, "delay": "5ms"}), random.Random(3)
    )
    pieces, _ = shaper.chunk(bytes(range(100)), 0.0)
    assert b"".join(p.data for p in pieces) == bytes(range(100))
    assert all(7 <= len(p.data) <= 13 for p in pieces[:-1])
    assert [round(p.at, 3) for p in pieces] == [round(0.005 * i, 3) for i in range(len(pieces))]


def test_limit_data_and_reset_after_bytes_end_the_connection_there() -> None:
    limit = Shaper(specs({"kind": "limit_data", "bytes": 10}))
    assert limit.chunk(b"12345", 0.0)[1] is Ending.NONE
    pieces, ending = limit.chunk(b"6789abcdef", 0.0)
    assert (b"".join(p.data for p in pieces), ending) == (b"6789a", Ending.CLOSE)
    reset = Shaper(specs({"kind": "reset_peer", "after_bytes": 3}))
    pieces, ending = reset.chunk(b"abcdef", 0.0)
    assert (b"".join(p.data for p in pieces), ending) == (b"abc", Ending.RESET)


def test_timeout_lets_nothing_through() -> None:
    shaper = Shaper(specs({"kind": "timeout", "timeout": "1s"}))
    assert shaper.chunk(b"data", 0.0) == ([], Ending.NONE) and shaper.holds_everything


# --- through the proxy ------------------------------------------------------------------------------


async def faulty(nursery, *faults, protocol: str = "tcp"):
    echo = await nursery.start(serve_echo, "127.0.0.1", 0)
    return await start_proxy(nursery, fault_doc(f"127.0.0.1:{echo}", *faults, protocol=protocol), admin=True)


async def read_until_end(stream: trio.SocketStream) -> tuple[bytes, str]:
    """What arrives before the end, and how it ended ("eof" or "reset")."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        return data, "reset"
    return data, "eof"


async def roundtrip(port: int, payload: bytes = b"ping") -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        started = time.perf_counter()
        await stream.send_all(payload)
        got = b""
        while len(got) < len(payload):
            got += await stream.receive_some(65536)
        assert got == payload
        return time.perf_counter() - started
    finally:
        await stream.aclose()


async def test_latency_and_its_direction(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "latency", "latency": "150ms", "direction": "upstream"})
        took = await roundtrip(proxy.port("r"))
        assert 0.15 <= took < 0.6, took  # (functional; its accuracy is measured by scripts/bench)
        assert proxy.route("r").faults.injected == {"latency": 1}
        metrics = (await request("127.0.0.1", proxy.admin_port, "/metrics")).body.decode()
        assert 'mcp_sidecar_faults_injected_total{kind="latency",route="r"} 1.0' in metrics
        assert 'mcp_sidecar_faults_injected_total{kind="cut",route="r"} 0.0' in metrics


async def test_bandwidth_limits_a_bulk_transfer(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "bandwidth", "rate": "256KiB"})
        took = await roundtrip(proxy.port("r"), b"z" * (128 * 1024))
        assert 0.45 <= took < 1.5, took  # 128 KiB at 256 KiB/s: half a second


async def test_slicer_delivers_in_slices(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "slicer", "average_size": 100, "size_variation": 20, "delay": "10ms"})
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
        await stream.send_all(bytes(1000))
        sizes = []
        while sum(sizes) < 1000:
            sizes.append(len(await stream.receive_some(65536)))
        await stream.aclose()
        assert max(sizes) <= 120 * 2 and len(sizes) >= 5, sizes  # (two slices may meet in the kernel)


async def test_reset_peer_after_bytes_and_after_a_time(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "reset_peer", "after_bytes": 5})
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
        await stream.send_all(b"0123456789")
        assert await read_until_end(stream) == (b"01234", "reset")
        await stream.aclose()
        timed = await faulty(nursery, {"kind": "reset_peer", "after": "200ms"})
        stream = await trio.open_tcp_stream("127.0.0.1", timed.port("r"))
        started = time.perf_counter()
        await stream.send_all(b"hi")
        data, how = await read_until_end(stream)
        assert (data, how) == (b"hi", "reset") and time.perf_counter() - started >= 0.2
        await stream.aclose()
        await wait_until(lambda: timed.route("r").ended.get("fault") == 1)


async def test_timeout_holds_everything_then_closes(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "timeout", "timeout": "300ms"})
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
        started = time.perf_counter()
        await stream.send_all(b"never echoed")
        assert await read_until_end(stream) == (b"", "eof")
        assert time.perf_counter() - started >= 0.3
        await stream.aclose()


async def test_limit_data_closes_after_its_bytes(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "limit_data", "bytes": 10})
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
        await stream.send_all(b"0123456789abcdef")
        assert await read_until_end(stream) == (b"0123456789", "eof")
        await stream.aclose()


async def test_slow_close_holds_the_end(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "slow_close", "delay": "300ms"})
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
        await stream.send_all(b"bye")
        await stream.send_eof()  # the echo server closes after our EOF: its close is held
        started = time.perf_counter()
        assert await read_until_end(stream) == (b"bye", "eof")
        assert time.perf_counter() - started >= 0.3
        await stream.aclose()


async def test_down_refuses_new_connections_at_once(nursery) -> None:
    with trio.fail_after(30):
        proxy = await faulty(nursery, {"kind": "down", "count": 2})
        for _ in range(2):
            try:  # (the reset may come before connect returns, or as the first read)
                stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
            except OSError as exc:
                assert "reset" in str(exc.__cause__.exceptions[0]).lower()  # type: ignore[union-attr]
                continue
            assert await read_until_end(stream) == (b"", "reset")
            await stream.aclose()
        assert await roundtrip(proxy.port("r")) < 5  # count 2: the third is served
        assert proxy.route("r").rejected == {"fault": 2}
