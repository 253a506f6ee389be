"""Observation in batches (forward/observequeue.py): the same events as
observing each chunk at once, in the same order, with the times the bytes
were forwarded; copies bounded; the pump told to stop one batch late."""

from __future__ import annotations

import itertools
from typing import Any

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.forward.metrics import Metrics
from mcp_sidecar.forward.observation import Mode, Observation, RouteObservation
from mcp_sidecar.forward.observequeue import INLINE_CHUNK_BYTES, MAX_QUEUED_BYTES, ObservationQueue
from mcp_sidecar.observe.mcp import McpTracker
from mcp_sidecar.observe.quality import Quality

REQUEST = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"


def exchange(n: int) -> tuple[bytes, bytes]:
    body = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"t%d"}}' % (n, n % 3)
    answer = b'{"jsonrpc":"2.0","id":%d,"result":{"n":%d}}' % (n, n)
    return REQUEST % (len(body), body), RESPONSE % (len(answer), answer)


class Recording(Observation):
    """An observation that also keeps every event it applies, with its time."""

    __slots__ = ("seen",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.seen: list[tuple[str, Any, float]] = []
        super().__init__(*args, **kwargs)

    def _apply(self, events: Any, now: float) -> None:
        self.seen += [(type(e).__name__, _key(e), now) for e in events]
        super()._apply(events, now)


def _key(event: Any) -> Any:
    exchange = getattr(event, "exchange", None)
    if exchange is not None:
        return (exchange.method, exchange.path, exchange.status, exchange.request_bytes, exchange.response_bytes)
    message = getattr(event, "message", None)
    return None if message is None else (event.origin, message.id, message.method)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=60, deadline=None)
@given(
    connections=st.integers(1, 4),
    exchanges=st.integers(1, 4),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    drains=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_batched_observation_sees_what_immediate_observation_sees(connections, exchanges, cuts, drains) -> None:
    """The same chunks, fed across interleaved connections, some drained at
    once and some left for a later batch: the same events per connection, in
    the same order, each at the time its chunk was forwarded."""
    now = [0.0]
    # Each connection's chunks, in forwarding order: request pieces, then response pieces.
    script: list[tuple[int, str, bytes]] = []
    for n in range(exchanges):
        for c in range(connections):
            request, response = exchange(n * connections + c)
            script += [(c, "client", piece) for piece in _cut(request, cuts)]
            script += [(c, "upstream", piece) for piece in _cut(response, cuts)]

    def run(queue: ObservationQueue | None) -> list[list[tuple[str, Any, float]]]:
        route = RouteObservation("r", Metrics(), McpTracker(), queue=queue)
        observations = [Recording(route, c, Quality(), "http", clock=lambda: now[0]) for c in range(connections)]
        for i, (c, side, piece) in enumerate(script):
            now[0] = float(i)
            direction = observations[c].client_direction if side == "client" else observations[c].upstream_direction
            assert direction.feed(memoryview(bytearray(piece))) is True  # (a view of a buffer reused next)
            if queue is not None and drains[i % len(drains)]:
                queue.drain()
        if queue is not None:
            queue.drain()
        return [o.seen for o in observations]

    immediate = run(None)
    batched = run(ObservationQueue(clock=lambda: now[0]))
    assert [[(kind, key) for kind, key, _ in seen] for seen in batched] == [
        [(kind, key) for kind, key, _ in seen] for seen in immediate
    ]
    assert batched == immediate  # times included: those of the bytes, not of the batch
    assert sum(len(seen) for seen in immediate) >= 4 * connections * exchanges  # it saw something


def _observation(queue: ObservationQueue, clock=lambda: 0.0) -> Observation:
    return Observation(RouteObservation("r", Metrics(), McpTracker(), queue=queue), 1, Quality(), "http", clock=clock)


def test_chunks_wait_until_the_batch_and_a_closing_connection_drains_first() -> None:
    queue = ObservationQueue(clock=lambda: 0.0)
    observation = _observation(queue)
    request, response = exchange(1)
    observation.client_direction.feed(memoryview(request))
    observation.upstream_direction.feed(memoryview(response))
    assert len(queue) == 2 and observation.traffic is not None and observation.traffic.exchanges == 0
    observation.close()  # its last chunks are observed before it ends
    assert len(queue) == 0
    assert observation.traffic is not None and observation.traffic.exchanges == 1


def test_a_large_chunk_is_observed_in_place_after_what_came_before() -> None:
    queue = ObservationQueue(clock=lambda: 0.0)
    observation = _observation(queue)
    request, _ = exchange(1)
    body = b"x" * (INLINE_CHUNK_BYTES + 1)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    observation.client_direction.feed(memoryview(request))
    observation.upstream_direction.feed(memoryview(head))
    assert len(queue) == 2
    observation.upstream_direction.feed(memoryview(body))  # not copied: the queue first, then this
    assert len(queue) == 0
    assert observation.traffic is not None and observation.traffic.exchanges == 1


def test_what_waits_is_bounded_the_producer_drains_beyond() -> None:
    queue = ObservationQueue(clock=lambda: 0.0)
    observation = _observation(queue)
    observation.client_direction.feed(memoryview(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"))
    piece = memoryview(b"y" * INLINE_CHUNK_BYTES)
    most = 0
    for _ in range(4 * MAX_QUEUED_BYTES // INLINE_CHUNK_BYTES):
        observation.client_direction.feed(piece)
        most = max(most, sum(len(item[2]) for item in queue._items))
    assert most <= MAX_QUEUED_BYTES + INLINE_CHUNK_BYTES
    assert queue.batches >= 3  # drained by the producer, with no task running


def test_the_pump_hears_of_a_stop_at_its_next_chunk() -> None:
    queue = ObservationQueue(clock=lambda: 0.0)
    observation = Observation(RouteObservation("r", Metrics(), McpTracker(), queue=queue), 1, Quality(), "auto")
    assert observation.client_direction.feed(memoryview(b"\x16\x03\x01 not HTTP at all")) is True  # queued
    queue.drain()
    assert observation.mode is Mode.TCP or observation.mode is Mode.FAILED or not observation.observer.observing
    assert observation.client_direction.feed(memoryview(b"more")) is False  # stop feeding: splice may resume
    assert len(queue) == 0


async def test_the_worker_task_drains_once_per_scheduler_pass(autojump_clock) -> None:
    queue = ObservationQueue()
    observation = _observation(queue, clock=trio.current_time)
    request, response = exchange(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5.0)
        forwarded_at = trio.current_time()
        observation.client_direction.feed(memoryview(request))
        await trio.sleep(0.25)  # the answer comes 250 ms later
        observation.upstream_direction.feed(memoryview(response))
        assert len(queue) >= 1
        await trio.testing.wait_all_tasks_blocked()
        assert len(queue) == 0 and queue.batches >= 1
        last = observation.traffic.last if observation.traffic is not None else None
        assert last is not None and last.started == forwarded_at  # the time of the bytes, not of the batch
        assert last.headers_at == forwarded_at + 0.25
        nursery.cancel_scope.cancel()
