"""A supervised worker's tap: the MCP messages its supervisor's tap clients
and recordings want, relayed in batches over the channel.

Rules this module keeps:

* One subscription in the worker's hub for all of the supervisor's tap
  clients (``AnyOf`` their filters, sent as ``TapOn``) and one for all of its
  recordings (its ``lines`` filters); none while nobody taps or records, so
  an untapped worker builds no record and encodes no line.
* A recording's messages cross as their encoded lines (``Line``: built
  here, from what the worker's ``McpRecords`` kept of each message, a step
  at a time, the forwarding served between; the supervisor only numbers and
  writes them), the tap clients' as records.
* Bounded: the records' queue holds ``RELAY_QUEUE`` records, fewer when
  their bodies may be large (``recording.queue_for`` the largest bound a
  filter asks or a route cuts at: what a tap client's own queue holds), the
  lines' ``recording.BUFFER_BYTES`` bytes; beyond, messages are dropped and
  the count goes with the next batch (the clients' ``dropped`` includes them).
* Every batch fits in one channel frame (``channel.MAX_MESSAGE_BYTES``,
  which the supervisor enforces by closing the channel: a frame over it
  would cost the worker): it waits at most ``BATCH_WAIT_S`` after its first
  message and holds at most ``BATCH_RECORDS`` records or ``BATCH_BYTES`` of
  their bodies (or of lines), and one message more (a record's body is cut
  at its bound, at most 16 MiB; a line's escaped text at most twice that,
  and a line never more than the recordings' buffer); all that waits goes,
  in as many batches as it takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import trio

from ..forward.tap import LineSubscriber, TapHub, TapSubscriber
from ..observe.recording import BUFFER_BYTES, queue_for
from ..observe.tap import BODIES, AnyOf
from .channel import Channel, ChannelClosed
from .messages import TapBatch

RELAY_QUEUE = 4096
BATCH_RECORDS = 256
BATCH_BYTES = 1024 * 1024
#: A message waits at most this long for others to share its batch.
BATCH_WAIT_S = 0.02


class TapRelay:
    """The worker's subscriptions on behalf of its supervisor's tap clients and recordings."""

    def __init__(self, hub: TapHub, channel: Channel) -> None:
        self.hub = hub
        self.channel = channel
        self.subscriber: TapSubscriber | None = None
        self.recorder: LineSubscriber | None = None
        self._changed = trio.Event()
        self._reported_dropped = 0

    def want(self, filters: tuple[Any, ...]) -> None:
        """What the supervisor's clients want now (nothing: stop relaying)."""
        for old in (self.subscriber, self.recorder):
            if old is not None:
                self.hub.unsubscribe(old)
        self.subscriber = self.recorder = None
        records = tuple(f for f in filters if not f.lines)
        lines = tuple(f for f in filters if f.lines)
        if records:
            self.subscriber = self.hub.subscribe(AnyOf(records), self._queue(records))
        if lines:
            self.recorder = self.hub.subscribe_lines(AnyOf(lines), BUFFER_BYTES)
        self._changed.set()

    def _queue(self, filters: tuple[Any, ...]) -> int:
        """Records the relay may hold: as many as a tap client's queue holds
        at the largest body bound of the moment (asked, or a route's own)."""
        bound = max([*(route.tap_max_bytes for route in self.hub.routes), *(f.max_bytes or 0 for f in filters)])
        return min(RELAY_QUEUE, queue_for(bound)) if bound else RELAY_QUEUE

    async def run(self) -> None:
        """Relay what the subscriptions of the moment gather, until the channel
        closes.  A change closes them (``want``): their relays send what they
        held and end (never cancelled in the middle of a message), then the
        new ones start."""
        try:
            while True:
                async with trio.open_nursery() as nursery:
                    if self.subscriber is not None:
                        nursery.start_soon(self._relay_records, self.subscriber)
                    if self.recorder is not None:
                        nursery.start_soon(self._relay_lines, self.recorder)
                    await self._changed.wait()
                    self._changed = trio.Event()
        except* ChannelClosed:
            pass

    def _dropped(self) -> int:
        dropped = self.hub.dropped - self._reported_dropped
        self._reported_dropped += dropped
        return dropped

    async def _relay_records(self, subscriber: TapSubscriber) -> None:
        """Batches of records: after a first one, what gathers over
        ``BATCH_WAIT_S`` is taken without waiting (one wakeup per batch), in
        batches bounded in number and in bytes; what was taken is sent even
        when the subscription closes meanwhile."""
        receive = subscriber.receive
        try:
            while True:
                first = await receive.receive()
                await trio.sleep(BATCH_WAIT_S)
                records, size = [first], _body_bytes(first)
                for record in _waiting(receive):
                    if len(records) >= BATCH_RECORDS or size >= BATCH_BYTES:
                        await self.channel.send(TapBatch(tuple(records), self._dropped()))
                        records, size = [], 0
                    records.append(record)
                    size += _body_bytes(record)
                await self.channel.send(TapBatch(tuple(records), self._dropped()))
        except trio.EndOfChannel:
            return

    async def _relay_lines(self, recorder: LineSubscriber) -> None:
        """Batches of lines, the same way; all that waits goes.  The lines of
        what waits are built a step at a time, the forwarding served in
        between (a batch may be a few milliseconds of building)."""
        try:
            while True:
                await recorder.wait()
                await trio.sleep(BATCH_WAIT_S)
                await recorder.build_waiting()
                while recorder.any_waiting():
                    await self.channel.send(TapBatch((), self._dropped(), tuple(recorder.take(BATCH_BYTES))))
        except trio.EndOfChannel:
            return


def _body_bytes(record: dict[str, Any]) -> int:
    """A record's bodies, the bulk of its frame, in characters (at most 4
    bytes each in the frame: the frame's bound allows for that)."""
    return sum(len(record.get(name) or "") for name in BODIES)


def _waiting(receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The records waiting now, oldest first (none more once the queue is closed)."""
    while True:
        try:
            yield receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
