"""A supervised worker's tap relay: the supervisor's recordings get each
message as the line its worker encoded, its tap clients the records; each
filter applied again where the line lands."""

from __future__ import annotations

import socket
import time

import pytest
import trio
import trio.testing

from mcp_sidecar.admin.server import MAX_TAP_BODY_BYTES
from mcp_sidecar.forward.metrics import Metrics
from mcp_sidecar.forward.observation import RouteObservation
from mcp_sidecar.forward.tap import TapHub
from mcp_sidecar.observe.jsonrpc import decode
from mcp_sidecar.observe.mcp import McpTracker
from mcp_sidecar.observe.recording import BUFFER_BYTES, queue_for
from mcp_sidecar.observe.tap import TapFilter, tap_record
from mcp_sidecar.supervise.channel import MAX_MESSAGE_BYTES, Channel
from mcp_sidecar.supervise.messages import TapBatch
from mcp_sidecar.supervise.taprelay import RELAY_QUEUE, TapRelay

MIB = 1024 * 1024


def record(route: str, body: bytes, max_bytes: int = 65536) -> dict:
    (message,) = decode(body)
    return tap_record(
        route,
        "client",
        message,
        at_unix=time.time(),
        transport="http",
        session="abc",
        size=len(body),
        method=message.method,
        answered=None,
        max_bytes=max_bytes,
        at_mono=time.monotonic(),
        client="127.0.0.1:5000",
    )


class Sent:
    """The relay's channel: what it sent."""

    def __init__(self) -> None:
        self.batches: list[TapBatch] = []
        self.arrived = trio.Event()

    async def send(self, message: TapBatch) -> None:
        self.batches.append(message)
        self.arrived.set()
        self.arrived = trio.Event()


async def test_a_recordings_lines_and_the_taps_records_cross_apart_in_batches() -> None:
    hub = TapHub([])
    sent = Sent()
    relay = TapRelay(hub, sent)  # type: ignore[arg-type]
    relay.want((TapFilter("mcp", max_bytes=65536, lines=True), TapFilter(method="ping")))
    assert relay.recorder is not None and relay.subscriber is not None
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            call = ("mcp", 1.5, "tools/call", None, "echo", b'{"wall":1}')
            relay.recorder.put(call)
            ping = record("other", b'{"jsonrpc":"2.0","id":8,"method":"ping"}')
            relay.subscriber.offer(ping)
            relay.subscriber.offer(record("other", b'{"jsonrpc":"2.0","id":9,"method":"tools/list"}'))  # not wanted
            while len(sent.batches) < 2:
                await sent.arrived.wait()
            assert sorted((b.records, b.lines) for b in sent.batches) == sorted([((ping,), ()), ((), (call,))])
            # Nobody taps any more: the subscriptions go, their relays end.
            relay.want(())
            assert hub.subscribers == []
            nursery.cancel_scope.cancel()


async def test_what_a_relay_held_when_the_filters_changed_is_still_sent() -> None:
    hub = TapHub([])
    sent = Sent()
    relay = TapRelay(hub, sent)  # type: ignore[arg-type]
    relay.want((TapFilter("mcp", lines=True),))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            await trio.testing.wait_all_tasks_blocked()
            old = relay.recorder
            assert old is not None
            old.put(("mcp", 1.0, "ping", None, "", b"{}"))
            relay.want((TapFilter("mcp", lines=True), TapFilter("other", lines=True)))
            assert relay.recorder is not old
            relay.recorder.put(("other", 2.0, "ping", None, "", b"{}"))  # type: ignore[union-attr]
            while sum(len(b.lines) for b in sent.batches) < 2:
                await sent.arrived.wait()
            assert [line[0] for b in sent.batches for line in b.lines] == ["mcp", "other"]
            nursery.cancel_scope.cancel()


def test_the_supervisor_gives_each_recording_the_lines_its_filter_wants() -> None:
    hub = TapHub([])
    whole = hub.subscribe_lines(TapFilter("mcp", lines=True), 10)
    calls = hub.subscribe_lines(TapFilter("mcp", method="tools/call", lines=True), 10)
    other = hub.subscribe_lines(TapFilter("other", target="echo", lines=True), 10)
    tap = hub.subscribe(TapFilter("mcp"))
    lines = (
        ("mcp", 1.0, "tools/call", None, "echo", b"1"),
        ("mcp", 2.0, "x/y", "other", "", b"2"),
        ("other", 3.0, "tools/call", None, "echo", b"3"),
        ("other", 4.0, "tools/call", None, "add", b"4"),
    )
    hub.offer_lines(lines)
    assert whole.take(10) == list(lines[:2])
    assert calls.take(10) == [lines[0]]
    assert other.take(10) == [lines[2]]
    with pytest.raises(trio.WouldBlock):  # (lines are for recordings, never a tap client's)
        tap.receive.receive_nowait()


def channel_pair() -> tuple[Channel, Channel]:
    """A worker's and its supervisor's ends of a real channel."""
    a, b = socket.socketpair()
    return tuple(Channel(trio.SocketStream(trio.socket.from_stdlib_socket(s))) for s in (a, b))  # type: ignore[return-value]


async def test_a_burst_of_large_records_crosses_in_frames_the_supervisor_accepts() -> None:
    """Regression: the records' batches were bounded in number only (256), so
    a burst of large bodies (a tap asking for 1 MiB of each) made one frame
    over the channel's bound; the supervisor refused it and lost the worker's
    channel (its heartbeats, its reports: the worker was replaced)."""
    worker_end, supervisor_end = channel_pair()
    relay = TapRelay(TapHub([]), worker_end)
    relay.want((TapFilter("mcp", max_bytes=MIB),))
    assert relay.subscriber is not None
    text = b"x" * (MIB - 200)
    burst = 24  # 24 MiB of bodies, offered before the relay wakes: one batch, as the old code built it
    bigs = [
        record("mcp", b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"text":"%s"}}' % (i, text), MIB)
        for i in range(burst)
    ]
    for big in bigs:
        relay.subscriber.offer(big)
    received: list[TapBatch] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            while sum(len(b.records) for b in received) < burst:
                received.append(await supervisor_end.receive())
            nursery.cancel_scope.cancel()
    assert [r for b in received for r in b.records] == bigs
    assert len(received) > 1
    assert relay.subscriber.dropped == 0


def test_the_relays_queue_is_bounded_by_the_bodies_it_may_hold() -> None:
    """Regression: 4096 records whatever their bound (4 GiB at 1 MiB each):
    now as many as a tap client's own queue holds at that bound."""
    hub = TapHub([])
    relay = TapRelay(hub, Channel(None))  # type: ignore[arg-type]
    relay.want((TapFilter("mcp", max_bytes=MIB), TapFilter(method="ping")))
    assert relay.subscriber is not None
    assert relay.subscriber.send.statistics().max_buffer_size == queue_for(MIB) < RELAY_QUEUE
    # Small bodies, the routes' own bound: the whole queue.
    route = RouteObservation("mcp", Metrics(), McpTracker())
    assert route.tap_max_bytes == 2048
    hub.routes = [route]
    relay.want((TapFilter(method="ping"),))
    assert relay.subscriber.send.statistics().max_buffer_size == RELAY_QUEUE
    # A route whose records are cut at 1 MiB: bounded as if asked.
    route.tap_max_bytes = MIB
    relay.want((TapFilter(method="ping"),))
    assert relay.subscriber.send.statistics().max_buffer_size == queue_for(MIB)
    relay.want(())


async def test_a_message_at_the_largest_body_bound_crosses_alone() -> None:
    """A record cut at the largest bound a tap may ask (and a recording's line
    at the largest ``max_body_bytes``) fits in a frame the supervisor accepts;
    each goes alone, the rest of the burst after it."""
    worker_end, supervisor_end = channel_pair()
    relay = TapRelay(TapHub([]), worker_end)
    relay.want((TapFilter("mcp", max_bytes=MAX_TAP_BODY_BYTES), TapFilter("mcp", lines=True)))
    assert relay.subscriber is not None and relay.recorder is not None
    text = b"y" * (MAX_TAP_BODY_BYTES - 100)
    huge = record(
        "mcp", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"t":"%s"}}' % text, MAX_TAP_BODY_BYTES
    )
    small = record("mcp", b'{"jsonrpc":"2.0","id":2,"method":"ping"}', MAX_TAP_BODY_BYTES)
    relay.subscriber.offer(huge)
    relay.subscriber.offer(small)
    # A truncated line's body is its escaped text: up to twice the bound ("\\" for every "\").
    escaped = b'"' + b"\\\\" * (BUFFER_BYTES // 2 - 1024) + b'"'
    line = ("mcp", 1.0, "tools/call", None, "", escaped)
    relay.recorder.put(line)
    assert relay.recorder.lines == [line]
    assert len(huge["params"]) > MAX_MESSAGE_BYTES // 5 and len(escaped) > MAX_MESSAGE_BYTES // 5
    received: list[TapBatch] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            while sum(len(b.records) + len(b.lines) for b in received) < 3:
                received.append(await supervisor_end.receive())
            nursery.cancel_scope.cancel()
    assert sorted((len(b.records), len(b.lines)) for b in received) == [(0, 1), (1, 0), (1, 0)]
    assert [r["id"] for b in received for r in b.records] == [1, 2]
