"""The tap hub: who is watching the MCP messages of which route.

Rules this module keeps:

* Zero cost while nobody taps: each ``RouteObservation`` holds the tuple
  of subscribers that want its messages (empty when none), rebuilt here
  when one comes or goes; the hot path tests only that tuple.
* Each subscriber has a bounded queue (a trio memory channel).  A message
  that does not fit is dropped for that subscriber and counted
  (``dropped``, and ``mcp_sidecar_tap_dropped_total``); forwarding never
  waits for a reader.
* A recording under a supervisor (a ``lines`` filter) gets its messages as
  the bytes its workers encoded (``offer_line``), never as records: no
  record crosses the channel for it, nothing is encoded twice.
* Subscribing is the admin endpoint's business (it owns the receiving end
  and unsubscribes when its client goes); this module never blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import trio

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
        #: Records (dicts), or for a ``lines`` filter (mono, encoded body) pairs.
        self.send, self.receive = trio.open_memory_channel[Any](queue)
        self.dropped = 0
        self.delivered = 0

    def offer(self, record: dict[str, Any]) -> None:
        if self.filter.lines or not self.filter.wants(record):
            return
        self._put(record)

    def offer_line(self, route: str, mono: float, body: bytes) -> None:
        """A message a worker encoded for a recording (its filter applied there)."""
        if self.filter.lines and self.filter.wants_route(route):
            self._put((mono, body))

    def _put(self, item: Any) -> None:
        try:
            self.send.send_nowait(item)
            self.delivered += 1
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


class TapHub:
    """The worker's tap subscribers, and each route's share of them."""

    def __init__(
        self, routes: Iterable[RouteObservation], on_change: Callable[[list[TapSubscriber]], None] | None = None
    ) -> None:
        self.routes = list(routes)
        self.subscribers: list[TapSubscriber] = []
        #: Dropped by subscribers already gone (the metric is a total), and by a relay on the way.
        self.dropped_gone = 0
        #: Told when the subscribers change (the supervisor's hub tells its workers).
        self.on_change = on_change

    def subscribe(self, tap_filter: TapFilter | AnyOf, queue: int = DEFAULT_QUEUE) -> TapSubscriber:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise TapBusy(f"at most {MAX_SUBSCRIBERS} taps at a time")
        subscriber = TapSubscriber(tap_filter, queue)
        self.subscribers.append(subscriber)
        self._rebuild()
        return subscriber

    def unsubscribe(self, subscriber: TapSubscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
            self.dropped_gone += subscriber.dropped
            subscriber.send.close()
            self._rebuild()

    @property
    def dropped(self) -> int:
        return self.dropped_gone + sum(s.dropped for s in self.subscribers)

    def _rebuild(self) -> None:
        for route in self.routes:
            route.taps = tuple(s for s in self.subscribers if s.filter.wants_route(route.route))
            asked = [s.filter.max_bytes for s in route.taps if s.filter.max_bytes is not None]
            route.tap_bound = max([route.tap_max_bytes, *asked])
        if self.on_change is not None:
            self.on_change(self.subscribers)

    def offer(self, record: dict[str, Any]) -> None:
        """A record from elsewhere (a worker's relay): to every subscriber that wants it."""
        for subscriber in self.subscribers:
            subscriber.offer(record)

    def offer_line(self, route: str, mono: float, body: bytes) -> None:
        """A recording's line from a worker's relay: to the recordings of its route."""
        for subscriber in self.subscribers:
            subscriber.offer_line(route, mono, body)
