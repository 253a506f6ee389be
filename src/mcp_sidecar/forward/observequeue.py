"""Observation in batches: the worker's chunks are observed together, once per
scheduler pass, not one at a time between system calls.

Why: measured live (HTTP keep-alive over 50 connections), observing each
chunk right after its ``send`` cost 2-3 times what the same code costs in a
loop, and slowed the surrounding system calls too: the observers' working
set (llhttp, the metric children, the records) and the kernel's evicted
each other from the CPU caches at every chunk.  Observed in a batch, the
same work costs what it costs in a loop.

Rules this module keeps:

* **Order.** A chunk is put in the queue right after it was handed to the
  kernel, before any ``await``, and the queue is one FIFO for the whole
  worker: chunks are observed in the order they were forwarded, across
  directions and connections -- a request is always observed before its
  response, as before.
* **Time.** Each chunk carries the time it was forwarded: latencies are
  those of the bytes, not of the batch (the worker's clock, read at ``put``:
  trio's, a ``MockClock`` in tests).
* **Copies, bounded.** The pump's chunk is a view of the shared scratch
  buffer, so a queued chunk is a copy.  Chunks over ``INLINE_CHUNK_BYTES``
  (bulk bodies) are not copied: the queue is drained, then the chunk is
  observed in place.  At most ``MAX_QUEUED_BYTES`` wait; beyond, the
  producer drains the queue itself.
* **Who drains.** ``run`` (a task of the worker) once per scheduler pass
  while chunks wait; and, before anything that needs the observer up to
  date, whoever needs it: a connection closing, the WebSocket keepalive
  (it inserts frames at frame boundaries and awaits pongs, so it rewrites
  chunks in place), the admin endpoint's reads.
* **Feedback, one batch late.** An observation that stops (opaque traffic,
  shed, a peer's garbage) is seen by the pump at its next chunk, which is
  then not queued: the pump stops feeding and may splice.
* Nothing here raises for a peer's bytes: observing is fail-open
  (observation.py); a defect raises only under the test suite (``STRICT``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio

from ..observe.connection import ConnectionObserver, Mode

#: Modes tested by identity on the hot path.
_HTTP, _WEBSOCKET, _SNIFF = Mode.HTTP, Mode.WEBSOCKET, Mode.SNIFF
#: Chunks larger than this are observed in place (after a drain), not copied.
INLINE_CHUNK_BYTES = 16 * 1024
#: Bytes that may wait in the queue before the producer drains it.
MAX_QUEUED_BYTES = 256 * 1024


class Observed(Protocol):
    """A connection's observation (observation.py), as the queue and the pump see it."""

    queue: ObservationQueue | None
    observer: ConnectionObserver

    def observe(self, side: str, data: Any, at: float | None) -> bool | bytes:
        """Observe ``data`` of ``side`` forwarded at ``at`` (None: now)."""
        ...


class ObservedDirection:
    """What the pump holds for one direction of an observed connection
    (``pump.ChunkObserver``): ``feed`` queues the chunk, or observes it in
    place when it must be (see the rules above)."""

    __slots__ = ("may_rewrite", "observation", "side")

    def __init__(self, observation: Observed, side: str, may_rewrite: bool) -> None:
        self.observation = observation
        self.side = side
        #: The connection has the WebSocket keepalive: chunks may have to be rewritten.
        self.may_rewrite = may_rewrite

    @property
    def rewriting(self) -> bool:
        observer = self.observation.observer
        if observer.mode is not _WEBSOCKET:  # only a WebSocket's keepalive rewrites or holds bytes
            return False
        return observer.rewriting

    def feed(self, data: Any) -> bool | bytes:
        observation = self.observation
        queue = observation.queue
        if queue is not None:
            observer = observation.observer
            mode = observer.mode
            queueable = mode is _HTTP or mode is _SNIFF or (mode is _WEBSOCKET and not observer.rewriting)
            if queueable and 0 < len(data) <= INLINE_CHUNK_BYTES:
                queue.put(observation, self.side, data)
                return True
            queue.drain()  # what came before is observed first
        return observation.observe(self.side, data, None)


class ObservationQueue:
    """The worker's chunks waiting to be observed (one FIFO, see the rules above)."""

    __slots__ = ("_clock", "_items", "_queued", "_wakeup", "batches", "chunks")

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self._items: list[tuple[Observed, str, bytes, float]] = []
        self._queued = 0
        self._wakeup: trio.Event | None = None
        #: Batches observed and chunks queued: how much batching there is.
        self.batches = 0
        self.chunks = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, observed: Observed, side: str, data: Any) -> None:
        """Queue a chunk just forwarded (copied: ``data`` may be the scratch buffer)."""
        items = self._items
        items.append((observed, side, bytes(data), self._clock()))
        self._queued += len(data)
        if len(items) == 1:
            wakeup = self._wakeup
            if wakeup is not None:
                self._wakeup = None
                wakeup.set()
        if self._queued > MAX_QUEUED_BYTES:
            self.drain()

    def drain(self) -> None:
        """Observe every queued chunk, in order, now."""
        items = self._items
        if not items:
            return
        self._items = []
        self._queued = 0
        self.batches += 1
        self.chunks += len(items)
        for observed, side, data, at in items:
            observed.observe(side, data, at)

    async def run(self) -> None:
        """Drain once per scheduler pass while chunks wait (the worker's task)."""
        while True:
            if not self._items:
                wakeup = self._wakeup = trio.Event()
                await wakeup.wait()
            else:
                await trio.lowlevel.checkpoint()
            self.drain()
