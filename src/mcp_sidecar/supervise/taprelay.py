"""A supervised worker's tap: the MCP messages its supervisor's tap clients
want, relayed in batches over the channel.

Rules this module keeps:

* One subscription in the worker's hub for all of the supervisor's tap
  clients (``AnyOf`` their filters, sent as ``TapOn``); none while nobody
  taps, so an untapped worker builds no tap record.
* A recording's messages (a ``lines`` filter) cross as their encoded lines
  (``recording.message_body``: the supervisor only numbers and writes
  them), the tap clients' as records.
* Bounded: the subscription's queue holds ``RELAY_QUEUE`` records (fewer
  while a recording asks for larger bodies: ``recording.queue_for``); beyond,
  records are dropped and the count goes with the next batch (the clients'
  ``dropped`` includes them).  A batch holds at most ``BATCH_RECORDS`` and
  waits at most ``BATCH_WAIT_S`` after its first record.
"""

from __future__ import annotations

from typing import Any

import trio

from ..forward.tap import TapHub, TapSubscriber
from ..observe.recording import message_body, queue_for
from ..observe.tap import AnyOf
from .channel import Channel, ChannelClosed
from .messages import TapBatch

RELAY_QUEUE = 4096
BATCH_RECORDS = 256
#: A record waits at most this long for others to share its message.
BATCH_WAIT_S = 0.02


class TapRelay:
    """The worker's one subscription on behalf of its supervisor's tap clients."""

    def __init__(self, hub: TapHub, channel: Channel) -> None:
        self.hub = hub
        self.channel = channel
        self.subscriber: TapSubscriber | None = None
        self._changed = trio.Event()
        self._reported_dropped = 0
        #: The recordings' filters (their messages go as encoded lines) and the others'.
        self.line_filters: tuple[Any, ...] = ()
        self.record_filters: tuple[Any, ...] = ()

    def want(self, filters: tuple[Any, ...]) -> None:
        """What the supervisor's clients want now (nothing: stop relaying)."""
        if self.subscriber is not None:
            self.hub.unsubscribe(self.subscriber)
            self.subscriber = None
        self.line_filters = tuple(f for f in filters if f.lines)
        self.record_filters = tuple(f for f in filters if not f.lines)
        if filters:
            wanted = AnyOf(tuple(filters))
            bound = wanted.max_bytes  # (a recording's bodies: fewer of them fit the same bytes)
            self.subscriber = self.hub.subscribe(
                wanted, RELAY_QUEUE if bound is None else min(RELAY_QUEUE, queue_for(bound))
            )
        self._changed.set()

    async def run(self) -> None:
        try:
            while True:
                subscriber = self.subscriber
                if subscriber is None:
                    await self._changed.wait()
                    self._changed = trio.Event()
                    continue
                await self._relay(subscriber)
        except ChannelClosed:
            pass

    async def _relay(self, subscriber: TapSubscriber) -> None:
        """Batches from one subscription, until it is replaced: after a first
        record, what gathers over ``BATCH_WAIT_S`` is taken without waiting
        (one wakeup per batch, not one per record)."""
        receive = subscriber.receive
        try:
            while True:
                records = [await receive.receive()]
                await trio.sleep(BATCH_WAIT_S)
                ended = False
                while len(records) < BATCH_RECORDS:
                    try:
                        records.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                    except trio.EndOfChannel:
                        ended = True
                        break
                dropped = self.hub.dropped - self._reported_dropped
                self._reported_dropped += dropped
                await self.channel.send(self._batch(records, dropped))
                if ended:
                    return
        except trio.EndOfChannel:
            return

    def _batch(self, records: list[dict[str, Any]], dropped: int) -> TapBatch:
        """The records for the taps, the recordings' as lines (encoded once, here)."""
        line_filters, record_filters = self.line_filters, self.record_filters
        if not line_filters:
            return TapBatch(tuple(records), dropped)
        lines = []
        kept = []
        for record in records:
            if any(f.wants(record) for f in line_filters):
                lines.append((record["route"], record.get("mono", 0.0), message_body(record)))
            if record_filters and any(f.wants(record) for f in record_filters):
                kept.append(record)
        return TapBatch(tuple(kept), dropped, tuple(lines))
