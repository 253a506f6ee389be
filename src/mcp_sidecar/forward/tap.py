"""The tap hub: who is watching the MCP messages of which route.

Rules this module keeps:

* Zero cost while nobody taps: each ``RouteObservation`` holds the tuples
  of subscribers that want its messages (empty when none), rebuilt here
  when one comes or goes; the hot path tests only those tuples.
* A tap client is a ``TapSubscriber``: records (dicts), in a bounded queue
  (a trio memory channel).  A message that does not fit is dropped for that
  subscriber and counted (``dropped``, and ``mcp_sidecar_tap_dropped_total``);
  forwarding never waits for a reader.
* A recording (a ``lines`` filter) is a ``LineSubscriber``: it gets each
  message as its encoded line (``recording.line_body``, built straight from
  the message by the route's ``McpRecords``; under a supervisor, by the
  worker that forwarded it, relayed as bytes: ``offer_lines``), never as a
  record.  Its buffer is a plain list bounded in bytes (a line's size is
  known: a count bounded for the largest body would hold a few hundred
  lines where tens of thousands fit), woken once per batch: a recording
  costs one encode and one append per message.
* Subscribing is the admin endpoint's and the recorders' business (they own
  the receiving end and unsubscribe when done); this module never blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import trio

from ..observe.recording import Line
from ..observe.tap import AnyOf, TapFilter
from .observation import RouteObservation

#: Messages a subscriber's queue holds before it drops.
DEFAULT_QUEUE = 1000
MAX_SUBSCRIBERS = 16


class TapBusy(Exception):
    """Too many subscribers already (MAX_SUBSCRIBERS)."""


class TapSubscriber:
    """One tap client: its filter, its queue and what it missed."""

    __slots__ = ("delivered", "dropped", "filter", "receive", "send")

    def __init__(self, tap_filter: TapFilter | AnyOf, queue: int) -> None:
        self.filter = tap_filter
        self.send, self.receive = trio.open_memory_channel[dict[str, Any]](queue)
        self.dropped = 0
        self.delivered = 0

    def offer(self, record: dict[str, Any]) -> None:
        if not self.filter.wants(record):
            return
        try:
            self.send.send_nowait(record)
            self.delivered += 1
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def close(self) -> None:
        self.send.close()


class LineSubscriber:
    """A recording: its filter, its encoded lines waiting (at most
    ``limit_bytes`` of them: bounded by what they hold, not by how many) and
    what it missed."""

    __slots__ = ("_closed", "_wakeup", "delivered", "dropped", "filter", "held", "limit_bytes", "lines")

    def __init__(self, tap_filter: TapFilter | AnyOf, limit_bytes: int) -> None:
        self.filter = tap_filter
        self.limit_bytes = limit_bytes
        self.lines: list[Line] = []
        #: Bytes of the lines waiting.
        self.held = 0
        self.dropped = 0
        self.delivered = 0
        self._wakeup = trio.Event()
        self._closed = False

    def put(self, line: Line) -> None:
        size = len(line[5])
        if self.held + size > self.limit_bytes:
            self.dropped += 1
            return
        lines = self.lines
        lines.append(line)
        self.held += size
        self.delivered += 1
        if len(lines) == 1:
            self._wakeup.set()

    async def wait(self) -> None:
        """Until a line waits; ``trio.EndOfChannel`` once closed and empty."""
        while not self.lines:
            if self._closed:
                raise trio.EndOfChannel
            await self._wakeup.wait()
            self._wakeup = trio.Event()

    def take(self, at_most_bytes: int) -> list[Line]:
        """The oldest lines waiting, up to ``at_most_bytes`` (at least one)."""
        lines = self.lines
        size = count = 0
        for line in lines:
            size += len(line[5])
            if count and size > at_most_bytes:
                size -= len(line[5])
                break
            count += 1
        self.held -= size
        if count == len(lines):
            self.lines = []
            return lines
        self.lines = lines[count:]
        return lines[:count]

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()


class TapHub:
    """The worker's tap subscribers, and each route's share of them."""

    def __init__(
        self,
        routes: Iterable[RouteObservation],
        on_change: Callable[[list[TapSubscriber | LineSubscriber]], None] | None = None,
    ) -> None:
        self.routes = list(routes)
        self.subscribers: list[TapSubscriber | LineSubscriber] = []
        #: Dropped by subscribers already gone (the metric is a total), and by a relay on the way.
        self.dropped_gone = 0
        #: Told when the subscribers change (the supervisor's hub tells its workers).
        self.on_change = on_change

    def subscribe(self, tap_filter: TapFilter | AnyOf, queue: int = DEFAULT_QUEUE) -> TapSubscriber:
        """A tap client's records."""
        subscriber = TapSubscriber(tap_filter, queue)
        self._add(subscriber)
        return subscriber

    def subscribe_lines(self, tap_filter: TapFilter | AnyOf, limit_bytes: int) -> LineSubscriber:
        """A recording's lines (``tap_filter.lines``), at most ``limit_bytes`` waiting."""
        subscriber = LineSubscriber(tap_filter, limit_bytes)
        self._add(subscriber)
        return subscriber

    def _add(self, subscriber: TapSubscriber | LineSubscriber) -> None:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise TapBusy(f"at most {MAX_SUBSCRIBERS} taps at a time")
        self.subscribers.append(subscriber)
        self._rebuild()

    def unsubscribe(self, subscriber: TapSubscriber | LineSubscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
            self.dropped_gone += subscriber.dropped
            subscriber.close()
            self._rebuild()

    @property
    def dropped(self) -> int:
        return self.dropped_gone + sum(s.dropped for s in self.subscribers)

    def _rebuild(self) -> None:
        for route in self.routes:
            wanting = [s for s in self.subscribers if s.filter.wants_route(route.route)]
            route.taps = tuple(s for s in wanting if isinstance(s, TapSubscriber))
            route.recorders = tuple(s for s in wanting if isinstance(s, LineSubscriber))
            route.tap_bound = _bound(route.tap_max_bytes, route.taps)
            route.record_bound = _bound(route.tap_max_bytes, route.recorders)
        if self.on_change is not None:
            self.on_change(self.subscribers)

    def offer(self, record: dict[str, Any]) -> None:
        """A record from elsewhere (a worker's relay): to every tap client that wants it."""
        for subscriber in self.subscribers:
            if isinstance(subscriber, TapSubscriber):
                subscriber.offer(record)

    def offer_lines(self, lines: tuple[Line, ...]) -> None:
        """Recordings' lines from a worker's relay: to the recordings that want them."""
        recorders = [s for s in self.subscribers if isinstance(s, LineSubscriber)]
        for line in lines:
            route, _, method, label, target, _ = line
            for recorder in recorders:
                if recorder.filter.wants_message(route, method, label, target):
                    recorder.put(line)


def _bound(default: int, subscribers: tuple[TapSubscriber | LineSubscriber, ...]) -> int:
    """Bodies are cut at the largest bound the subscribers asked for (at least the route's)."""
    return max([default, *(s.filter.max_bytes for s in subscribers if s.filter.max_bytes is not None)])
