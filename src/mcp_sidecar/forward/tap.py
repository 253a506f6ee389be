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
  message as its encoded line (``recording.line_body``), never as a record.
  In the worker that forwarded the message, the route's ``McpRecords`` hands
  it what the line is made of (``Waiting``: references, no copy) and the
  line is built when the recording, or the relay to a supervisor's, takes
  its batch: hundreds of lines built in a row cost about half of the same
  lines built one by one between the forwarding's other work (measured:
  the interpreter's caches stay warm).  A supervisor's recordings get lines
  already built, relayed as bytes (``offer_lines``).
* A recording's buffer is bounded in bytes (a built line's size; a waiting
  message's carrier's plus ``WAITING_BYTES``: what it keeps alive), woken
  once per batch: a message costs the hot path one tuple and one append.
  Past ``WAITING_LIMIT_BYTES`` of waiting messages their lines are built
  at once (a burst waits as lines, not as the bodies that carried it).
* A line that cannot be built (a defect of ours) is lost, counted
  (``mcp_sidecar_observer_errors_total{protocol="mcp"}``) and logged once,
  as an observer's defect is; it never reaches the forwarding.
* Subscribing is the admin endpoint's and the recorders' business (they own
  the receiving end and unsubscribe when done); this module never blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import trio

from ..observe.recording import Line, line_body
from ..observe.tap import AnyOf, TapFilter, shown_names
from .failopen import log_bug
from .observation import STRICT, RouteObservation
from .routeobservation import Waiting

#: Messages a subscriber's queue holds before it drops.
DEFAULT_QUEUE = 1000
MAX_SUBSCRIBERS = 16
#: What a message waiting for its line is counted as holding besides its
#: carrier's bytes (its facts, its exchange's), bytes.
WAITING_BYTES = 1024

#: Past this many bytes of messages waiting for their lines (a batch's
#: messages share their body and are counted each: more than they hold),
#: the lines are built there and then: what waits holds no more than this.
WAITING_LIMIT_BYTES = 4 * 1024 * 1024
#: Lines a taker builds between two checkpoints (``LineSubscriber.build_waiting``;
#: a few hundred microseconds of work), so that forwarding is served between.
BUILD_STEP = 64


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
    """A recording: its filter, its lines waiting (built, and messages whose
    lines are not built yet: at most ``limit_bytes`` of them, bounded by what
    they hold, not by how many) and what it missed."""

    __slots__ = (
        "_closed",
        "_wakeup",
        "delivered",
        "dropped",
        "filter",
        "held",
        "limit_bytes",
        "lines",
        "waiting",
        "waiting_bytes",
    )

    def __init__(self, tap_filter: TapFilter | AnyOf, limit_bytes: int) -> None:
        self.filter = tap_filter
        self.limit_bytes = limit_bytes
        #: Lines built, oldest first; then the messages whose lines are not built yet.
        self.lines: list[Line] = []
        self.waiting: list[Waiting] = []
        #: Bytes held: the lines', and what each waiting message is counted as (``_waiting_bytes``).
        self.held = 0
        #: Of which the waiting messages': past ``WAITING_LIMIT_BYTES`` their lines are built.
        self.waiting_bytes = 0
        self.dropped = 0
        self.delivered = 0
        self._wakeup = trio.Event()
        self._closed = False

    def put(self, line: Line) -> None:
        """A line built elsewhere (a worker's, relayed); dropped when full, never blocks."""
        self.put_many([line])

    def put_many(self, lines: list[Line]) -> None:
        """Lines built elsewhere, in order, in one step; each that does not fit is dropped."""
        first = not self.any_waiting()
        size = sum([len(line[5]) for line in lines])
        if self.held + size > self.limit_bytes:  # (not all fit: one at a time)
            fitting = []
            for line in lines:
                if self.held + len(line[5]) > self.limit_bytes:
                    self.dropped += 1
                else:
                    fitting.append(line)
                    self.held += len(line[5])
            lines, size = fitting, 0
        self.lines += lines
        self.held += size
        self.delivered += len(lines)
        if first and lines:
            self._wakeup.set()

    def put_waiting(self, waiting: Waiting) -> None:
        """A message whose line ``take`` builds; dropped when full, never blocks."""
        size = waiting[3]["size"] + WAITING_BYTES  # (``_waiting_bytes``, inline: once per message)
        if self.held + size > self.limit_bytes:
            if self.waiting:
                self._build()  # (what the waiting messages were counted as may be more than their lines)
            if self.held + size > self.limit_bytes:
                self.dropped += 1
                return
        first = not self.waiting and not self.lines  # (``any_waiting``, inline: once per message)
        self.waiting.append(waiting)
        self.held += size
        self.waiting_bytes += size
        self.delivered += 1
        if self.waiting_bytes > WAITING_LIMIT_BYTES:
            self._build()
        if first:
            self._wakeup.set()

    async def build_waiting(self) -> None:
        """Build the lines of the messages waiting now, ``BUILD_STEP`` at a
        time with a checkpoint between, so that forwarding is served while a
        batch is built (what arrives meanwhile is built by ``take``)."""
        for _ in range(len(self.waiting) // BUILD_STEP):
            self._build(BUILD_STEP)
            await trio.lowlevel.checkpoint()

    def _build(self, count: int | None = None) -> None:
        """The lines of the ``count`` oldest waiting messages (None: all), in
        order (what no longer fits is dropped, counted)."""
        waiting = self.waiting
        if count is None or count >= len(waiting):
            self.waiting = []
        else:
            waiting, self.waiting = waiting[:count], waiting[count:]
        lines = self.lines
        for item in waiting:
            size = _waiting_bytes(item)
            self.held -= size
            self.waiting_bytes -= size
            line = _built(item)
            if line is None:
                self.delivered -= 1
                continue
            if self.held + len(line[5]) > self.limit_bytes:
                self.dropped += 1
                self.delivered -= 1
                continue
            lines.append(line)
            self.held += len(line[5])

    def any_waiting(self) -> bool:
        """Whether a line (built or not) waits."""
        return bool(self.lines or self.waiting)

    async def wait(self) -> None:
        """Until a line waits; ``trio.EndOfChannel`` once closed and empty."""
        while not self.any_waiting():
            if self._closed:
                raise trio.EndOfChannel
            await self._wakeup.wait()
            self._wakeup = trio.Event()

    def take(self, at_most_bytes: int) -> list[Line]:
        """The oldest lines waiting (built now if they were not), up to
        ``at_most_bytes`` (at least one, if one could be built)."""
        if self.waiting:
            self._build()
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
            route.record_all = all(s.filter.wants_all_of(route.route) for s in route.recorders)
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
        """Recordings' lines from a worker's relay: to the recordings that want them
        (a recording of all of a route takes its lines without a test each)."""
        for recorder in self.subscribers:
            if not isinstance(recorder, LineSubscriber):
                continue
            wanted = recorder.filter
            whole: dict[str, bool] = {}
            chosen = []
            for line in lines:
                route = line[0]
                everything = whole.get(route)
                if everything is None:
                    everything = whole[route] = wanted.wants_all_of(route)
                if everything or wanted.wants_message(route, line[2], line[3], line[4]):
                    chosen.append(line)
            recorder.put_many(chosen)


def _waiting_bytes(waiting: Waiting) -> int:
    """What a message waiting for its line is counted as holding: the body,
    event or frame that carried it (its bodies are views of it) and its facts."""
    return int(waiting[3]["size"]) + WAITING_BYTES


def _built(waiting: Waiting) -> Line | None:
    """A waiting message's line; None (counted, logged once) if building it
    met a defect of ours."""
    route, origin, message, shown, mono, max_bytes, names, http_session = waiting
    try:
        answered = shown["answered"]
        if names is None:
            names = shown_names(message, shown["method"], answered)
        target = answered.target if answered is not None else shown["target"]
        body = line_body(
            route.route, origin, message, shown, max_bytes=max_bytes, names=names, http_session=http_session
        )
    except Exception as exc:
        if STRICT:
            raise
        route.child(route.metrics.observer_errors, "mcp").inc()
        log_bug(exc, route=route.route, protocol="mcp", where="recording")
        return None
    return (route.route, mono, names[0], names[1], target, body)


def _bound(default: int, subscribers: tuple[TapSubscriber | LineSubscriber, ...]) -> int:
    """Bodies are cut at the largest bound the subscribers asked for (at least the route's)."""
    return max([default, *(s.filter.max_bytes for s in subscribers if s.filter.max_bytes is not None)])
