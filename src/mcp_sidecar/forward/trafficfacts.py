"""What a connection's observed HTTP traffic has shown so far, as
``/api/connections`` shows it: its exchanges, the last one, its event stream.

Rules this module keeps:

* One record per connection that carries HTTP, created when it turns out to
  (an idle or opaque connection holds none: ``Observation.traffic`` is None).
* Written per exchange and per event on the hot path (attribute stores, no
  formatting); rendered only when asked (``render``).
* The last exchange is kept by reference and dropped when the connection
  closes (``forget``): a closed connection keeps no request alive.
"""

from __future__ import annotations

from typing import Any

from ..observe.events import Exchange
from ..observe.slowness import BurstDetector


class TrafficFacts:
    __slots__ = (
        "bursts",
        "exchanges",
        "last",
        "sse_events",
        "sse_keepalives",
        "sse_keepalives_sent",
        "sse_last_at",
        "sse_max_gap_s",
        "sse_started",
    )

    def __init__(self) -> None:
        self.exchanges = 0
        self.last: Exchange | None = None
        self.sse_events = 0
        self.sse_keepalives = 0
        #: Comment lines the proxy itself sent into a silent stream (sse_keepalive).
        self.sse_keepalives_sent = 0
        #: Seconds between two consecutive events (keepalives included), the longest so far.
        self.sse_max_gap_s = 0.0
        self.sse_started: float | None = None
        self.sse_last_at: float | None = None
        #: The upstream's event streams, watched for bursts (observe/slowness.py).
        self.bursts: BurstDetector | None = None

    def exchange_done(self, exchange: Exchange) -> None:
        self.exchanges += 1
        self.last = exchange

    def stream_began(self, at: float) -> None:
        """An event-stream response began (its headers arrived)."""
        if self.bursts is None:
            self.bursts = BurstDetector()
        self.bursts.start(at)

    def event(self, at: float, keepalive: bool) -> bool:
        """An event (or a keepalive comment) arrived; True when it makes a burst."""
        if self.sse_last_at is not None:
            self.sse_max_gap_s = max(self.sse_max_gap_s, at - self.sse_last_at)
        self.sse_last_at = at
        if keepalive:
            self.sse_keepalives += 1
            return False
        self.sse_events += 1
        bursts = self.bursts
        if bursts is None:
            bursts = self.bursts = BurstDetector()
        return bursts.event(at)

    def forget(self) -> None:
        self.last = None

    def render(self, now: float, reading_http: bool) -> dict[str, Any]:
        """The ``http`` section (once an exchange completed, or while HTTP is
        being read) and, once events were seen, the ``sse`` one."""
        facts: dict[str, Any] = {}
        if self.exchanges or reading_http:
            last = self.last
            facts["http"] = {"exchanges": self.exchanges, "last": None if last is None else _exchange(last)}
        if self.sse_events or self.sse_keepalives or self.sse_keepalives_sent:
            facts["sse"] = {
                "events": self.sse_events,
                "keepalives": self.sse_keepalives,
                "keepalives_sent": self.sse_keepalives_sent,
                "max_gap_s": round(self.sse_max_gap_s, 3),
                "since_last_s": None if self.sse_last_at is None else round(now - self.sse_last_at, 3),
                "stream_s": None if self.sse_started is None else round(now - self.sse_started, 3),
                # Events the upstream's side let through together after a silence (observe/slowness.py).
                "bursts": 0 if self.bursts is None else self.bursts.bursts,
            }
        return facts


def _exchange(last: Exchange) -> dict[str, Any]:
    return {
        "method": last.method,
        "path": last.path,
        "status": last.status,
        "first_byte_ms": None if last.headers_at is None else round((last.headers_at - last.started) * 1000, 3),
        "total_ms": None if last.ended is None else round((last.ended - last.started) * 1000, 3),
        "request_bytes": last.request_bytes,
        "response_bytes": last.response_bytes,
        "content_type": last.content_type,
    }
