"""The worker's OpenTelemetry spans: made per observed MCP request, queued,
exported over OTLP/HTTP (protobuf) from a trio task.

Rules this module keeps:

* Off, nothing: no ``Tracer`` exists and the route's ``tracer`` is None (one
  test per outcome); protobuf is not even imported.
* Making a span is cheap and never waits: the sampling decision, then a
  plain record appended to a bounded queue (``queue_spans``); a full queue
  drops the span, counted (``mcp_sidecar_otel_spans_dropped_total``).
  Encoding and sending happen in the export task, a batch at a time: as soon
  as ``batch_spans`` wait, else what gathered over ``EXPORT_INTERVAL_S``.
* A collector that is down, slow or refusing never slows forwarding and
  never grows memory: each export is bounded and retried (otlppost.py), then
  its spans are dropped and counted; the queue keeps its bound meanwhile.
* Span events are kept per request until its outcome, bounded
  (``MAX_BOOKED`` requests with events, ``MAX_SPAN_EVENTS`` each): progress
  notifications found by the request's ``_meta.progressToken``, the end of
  its own response stream before its answer (cut or abandoned).
* Notifications are spans only when asked (``[otel] notifications``).
* One exporter per process: each worker exports its spans; the supervisor
  exports those of the requests it correlated (the legacy and Inspector v2
  transports when several workers share a route), each ended at the
  answer's own time.  The protobuf wire
  format written by observe/otlpwire.py (the generated messages cost 62 us
  a span, measured), sent with the project's own h11 client: no SDK, no
  thread (an SDK span costs more than this whole path, and its batch
  processor is a thread).
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import trio

from .. import __version__
from ..config.otel import OtelConfig
from ..observe.events import McpOutcome
from ..observe.mcp import request_key
from ..observe.otelspans import (
    MAX_SPAN_EVENTS,
    STATUS_UNSET,
    Sampler,
    SpanData,
    SpanEvent,
    mcp_attributes,
    notification_attributes,
    progress_event,
    span_name,
    split_trace,
    stream_end_event,
)
from ..observe.otlpwire import export_request
from .otlppost import OtlpPoster

#: A batch waits at most this long for more spans (seconds).
EXPORT_INTERVAL_S = 1.0
#: A stopping process waits at most this long for its last batch (seconds).
FLUSH_TIMEOUT_S = 1.0
#: Requests whose span events are kept until their outcome (the oldest go first).
MAX_BOOKED = 4096
#: Progress tokens remembered, each naming its request.
MAX_TOKENS = 4096


@dataclass(slots=True)
class _Booked:
    """A request's span events so far, and how many more there were."""

    events: list[SpanEvent] = field(default_factory=list)
    dropped: int = 0


class Tracer:
    """Spans of one worker: made by ``outcome``, exported by ``run``."""

    def __init__(self, config: OtelConfig, metrics: Any) -> None:
        self.config = config
        self.sampler = Sampler(config.sampler, config.sampler_arg)
        self.pending: deque[SpanData] = deque()
        # (the counters' one child each, made now: a scrape shows 0 while nothing happened)
        self.count_exported = metrics.otel_exported.labels()
        self.count_dropped = metrics.otel_dropped.labels()
        self.count_failures = metrics.otel_failures.labels("traces")
        self.exported = 0
        self.dropped = 0
        self.failures = 0
        self._wakeup: trio.Event | None = None
        #: Set when a full batch waits (the exporter then stops waiting for more).
        self._full: trio.Event | None = None
        self._random = random.Random()
        self.resource = resource_attributes(config)
        #: (route, session, request key) -> the events of a request under way.
        self._booked: OrderedDict[tuple[str, str | None, int | str], _Booked] = OrderedDict()
        #: (route, session, progress token key) -> the request key it names.
        self._tokens: OrderedDict[tuple[str, str, int | str], int | str] = OrderedDict()

    def _id(self, bits: int) -> bytes:
        value = 0
        while not value:
            value = self._random.getrandbits(bits)
        return value.to_bytes(bits // 8, "big")

    def outcome(self, route: str, outcome: McpOutcome, end_unix: float | None = None) -> None:
        """A request's outcome: its span, if sampled, queued (never waits);
        ended now, or at ``end_unix`` (an answer correlated later)."""
        events: _Booked | None = None
        if self._booked:
            key = request_key(outcome.request_id)
            events = self._booked.pop((route, outcome.session, key), None) if key is not None else None
        duration = outcome.duration_s if outcome.duration_s is not None else outcome.waited_s
        if duration is None:  # (a request pushed out of the bounded book: nothing to time)
            return
        context = self._context(outcome.trace)
        if context is None:
            return
        end = time.time_ns() if end_unix is None else int(end_unix * 1e9)
        shared, own, code, message = mcp_attributes(route, outcome)
        self._queue(
            SpanData(
                *context[:3],
                span_name(outcome),
                end - int(duration * 1e9),
                end,
                own,
                code,
                message,
                context[3],
                tuple(events.events) if events is not None else (),
                events.dropped if events is not None else 0,
                shared,
            )
        )

    def notification(
        self,
        route: str,
        method: str,
        origin: str,
        transport: str,
        session: str | None,
        version: str | None,
        trace: str | None,
    ) -> None:
        """A notification seen (only when ``[otel] notifications`` asks): a span of no duration."""
        context = self._context(trace)
        if context is None:
            return
        now = time.time_ns()
        attributes = notification_attributes(route, method, origin, transport, session, version)
        self._queue(SpanData(*context[:3], method, now, now, attributes, STATUS_UNSET, "", context[3]))

    def _context(self, trace: str | None) -> tuple[bytes, bytes, bytes, str] | None:
        """A new span's trace id, span id, parent span id and trace state, or
        None: not sampled, or no room in the queue (dropped, counted)."""
        parent, state = split_trace(trace)
        trace_id = parent.trace_id if parent is not None else self._id(128)
        if not self.sampler.sampled(trace_id, parent):
            return None
        if len(self.pending) >= self.config.queue_spans:  # (before anything is built)
            self._drop(1)
            return None
        return trace_id, self._id(64), parent.span_id if parent is not None else b"", state

    def request(self, route: str, session: str, request_id: Any, progress_token: Any) -> None:
        """A request that asked for progress: its notifications will name ``progress_token``."""
        key = request_key(request_id)
        token = request_key(progress_token)
        if key is None or token is None:
            return
        tokens = self._tokens
        tokens[(route, session, token)] = key
        if len(tokens) > MAX_TOKENS:
            tokens.popitem(last=False)

    def progress(self, route: str, session: str, progress_token: Any, progress: Any, total: Any) -> None:
        """A ``notifications/progress``: an event of the request that asked for it."""
        token = request_key(progress_token)
        key = self._tokens.get((route, session, token)) if token is not None else None
        if key is not None:
            self._book(route, session, key, progress_event(progress, total, time.time_ns()))

    def stream_ended(self, route: str, session: str, request_id: Any, end: str, abandoned: bool) -> None:
        """The response stream of this request ended before its answer (``abandoned``: by the client)."""
        key = request_key(request_id)
        if key is not None:
            self._book(route, session, key, stream_end_event(end, abandoned, time.time_ns()))

    def _book(self, route: str, session: str, key: int | str, event: SpanEvent) -> None:
        booked = self._booked
        book = booked.get((route, session, key))
        if book is None:
            book = booked[(route, session, key)] = _Booked()
            if len(booked) > MAX_BOOKED:
                booked.popitem(last=False)
        if len(book.events) < MAX_SPAN_EVENTS:
            book.events.append(event)
        else:
            book.dropped += 1

    def _queue(self, span: SpanData) -> None:
        """A span ``_context`` made room for."""
        self.pending.append(span)
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()
        full = self._full
        if full is not None and len(self.pending) >= self.config.batch_spans:
            self._full = None
            full.set()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self.count_dropped.inc(count)

    async def run(self) -> None:
        """Export batches until cancelled, then what is queued once more (bounded)."""
        poster = OtlpPoster(self.config.traces_endpoint or "", self.config.headers, self.config.export_timeout_s)
        try:
            while True:
                if not self.pending:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                if len(self.pending) < self.config.batch_spans:
                    full = self._full = trio.Event()
                    with trio.move_on_after(EXPORT_INTERVAL_S):
                        await full.wait()
                    self._full = None
                await self._export(poster)
        finally:
            if self.pending:
                with trio.CancelScope(shield=True) as last:
                    last.deadline = trio.current_time() + FLUSH_TIMEOUT_S
                    await self._export(poster, attempts=1)

    async def _export(self, poster: OtlpPoster, attempts: int | None = None) -> None:
        batch = [self.pending.popleft() for _ in range(min(len(self.pending), self.config.batch_spans))]
        if await poster.send(encode(batch, self.resource), attempts):
            self.exported += len(batch)
            self.count_exported.inc(len(batch))
        else:
            self.failures += 1
            self.count_failures.inc()
            self._drop(len(batch))


def resource_attributes(config: OtelConfig) -> dict[str, str]:
    """The resource every span is from: the service, this host, the pod, the user's."""
    attributes = {
        "service.name": config.service_name,
        "service.version": __version__,
        "host.name": socket.gethostname(),
        # (each process its own: a collector tells the workers' cumulative metrics apart by it)
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
    }
    attributes.update(config.resource_attributes)
    return attributes


def encode(spans: list[SpanData], resource: dict[str, str]) -> bytes:
    """An OTLP ``ExportTraceServiceRequest`` of these spans, serialized (observe/otlpwire.py)."""
    return export_request(spans, resource, ("mcp-sidecar", __version__))
