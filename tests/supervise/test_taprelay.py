"""A supervised worker's tap relay: the supervisor's recordings get each
message as the line its worker encoded, its tap clients the records; each
filter applied again where the line lands."""

from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from mcp_sidecar.forward.tap import TapHub
from mcp_sidecar.observe.jsonrpc import decode
from mcp_sidecar.observe.tap import TapFilter, tap_record
from mcp_sidecar.supervise.messages import TapBatch
from mcp_sidecar.supervise.taprelay import TapRelay


def record(route: str, body: bytes) -> dict:
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
        max_bytes=65536,
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
