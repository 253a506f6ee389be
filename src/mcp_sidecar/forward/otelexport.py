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
  never grows memory: each export is bounded (``export_timeout``), retried
  ``MAX_ATTEMPTS`` times with backoff on a connection failure, a timeout or
  429/502/503/504 (the OTLP spec's retryable answers), then its spans are
  dropped and counted; the queue keeps its bound meanwhile.
* One exporter per worker (the supervisor makes no spans); the protobuf wire
  format written by observe/otlpwire.py (the generated messages cost 62 us
  a span, measured), sent with the project's own h11 client: no SDK, no
  thread (an SDK span costs more than this whole path, and its batch
  processor is a thread).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
import urllib.parse
from collections import deque
from typing import Any

import h11
import trio

from .. import __version__
from ..config.otel import OtelConfig
from ..logs import log
from ..net.http import ClientExchange
from ..observe.events import McpOutcome
from ..observe.otelspans import Sampler, SpanData, mcp_attributes, parse_traceparent, span_name
from ..observe.otlpwire import export_request

logger = logging.getLogger(__name__)

#: A batch waits at most this long for more spans (seconds).
EXPORT_INTERVAL_S = 1.0
MAX_ATTEMPTS = 3
#: The first retry's wait; doubled for each next one.
RETRY_BACKOFF_S = 0.5
RETRYABLE = frozenset({429, 502, 503, 504})


class Tracer:
    """Spans of one worker: made by ``outcome``, exported by ``run``."""

    def __init__(self, config: OtelConfig, metrics: Any) -> None:
        self.config = config
        self.sampler = Sampler(config.sampler, config.sampler_arg)
        self.pending: deque[SpanData] = deque()
        # (the counters' one child each, made now: a scrape shows 0 while nothing happened)
        self.count_exported = metrics.otel_exported.labels()
        self.count_dropped = metrics.otel_dropped.labels()
        self.count_failures = metrics.otel_failures.labels()
        self.exported = 0
        self.dropped = 0
        self.failures = 0
        self._wakeup: trio.Event | None = None
        #: Set when a full batch waits (the exporter then stops waiting for more).
        self._full: trio.Event | None = None
        self._random = random.Random()
        self.resource = resource_attributes(config)

    def _id(self, bits: int) -> bytes:
        value = 0
        while not value:
            value = self._random.getrandbits(bits)
        return value.to_bytes(bits // 8, "big")

    def outcome(self, route: str, outcome: McpOutcome) -> None:
        """A request's outcome: its span, if sampled, queued (never waits)."""
        if outcome.duration_s is None:
            return
        parent = parse_traceparent(outcome.trace)
        trace_id = parent.trace_id if parent is not None else self._id(128)
        if not self.sampler.sampled(trace_id, parent):
            return
        if len(self.pending) >= self.config.queue_spans:
            self._drop(1)
            return
        end = time.time_ns()
        attributes, code, message = mcp_attributes(route, outcome)
        self.pending.append(
            SpanData(
                trace_id,
                self._id(64),
                parent.span_id if parent is not None else b"",
                span_name(outcome),
                end - int(outcome.duration_s * 1e9),
                end,
                attributes,
                code,
                message,
            )
        )
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
        """Export batches until cancelled (the worker's task)."""
        url = urllib.parse.urlsplit(self.config.traces_endpoint or "")
        while True:
            if not self.pending:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            if len(self.pending) < self.config.batch_spans:
                full = self._full = trio.Event()
                with trio.move_on_after(EXPORT_INTERVAL_S):
                    await full.wait()
                self._full = None
            batch = [self.pending.popleft() for _ in range(min(len(self.pending), self.config.batch_spans))]
            body = encode(batch, self.resource)
            if await self._send(url, body):
                self.exported += len(batch)
                self.count_exported.inc(len(batch))
            else:
                self.failures += 1
                self.count_failures.inc()
                self._drop(len(batch))

    async def _send(self, url: urllib.parse.SplitResult, body: bytes) -> bool:
        """POST one batch, retried (see the module's rules); True once accepted."""
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                await trio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            status, why = await self._post(url, body)
            if status is not None and 200 <= status < 300:
                return True
            if status is not None and status not in RETRYABLE:
                break
        log(logger, logging.WARNING, "otel.export_failed", endpoint=self.config.traces_endpoint, error=why)
        return False

    async def _post(self, url: urllib.parse.SplitResult, body: bytes) -> tuple[int | None, str]:
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        headers = [("content-type", "application/x-protobuf"), *self.config.headers]
        try:
            with trio.fail_after(self.config.export_timeout_s):
                if url.scheme == "https":
                    stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                        host, port, ssl_context=ssl.create_default_context()
                    )
                else:
                    stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    exchange = ClientExchange(stream)
                    await exchange.send(url.netloc, url.path or "/", "POST", body, headers)
                    response = await exchange.read()
        except trio.TooSlowError:
            return None, f"no answer within {self.config.export_timeout_s:g} s"
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, ValueError) as exc:
            return None, str(exc) or type(exc).__name__
        return response.status, f"HTTP {response.status}"


def resource_attributes(config: OtelConfig) -> dict[str, str]:
    """The resource every span is from: the service, this host, the pod, the user's."""
    attributes = {
        "service.name": config.service_name,
        "service.version": __version__,
        "host.name": socket.gethostname(),
    }
    attributes.update(config.resource_attributes)
    return attributes


def encode(spans: list[SpanData], resource: dict[str, str]) -> bytes:
    """An OTLP ``ExportTraceServiceRequest`` of these spans, serialized (observe/otlpwire.py)."""
    return export_request(spans, resource, ("mcp-sidecar", __version__))
