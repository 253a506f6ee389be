"""An OTLP/HTTP receiver for the tests: what the sidecar exports, decoded with
the OpenTelemetry project's generated messages (opentelemetry-proto)."""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass
class Receiver:
    """An OTLP/HTTP receiver: what it was sent, and how it answers."""

    port: int = 0
    requests: int = 0
    resources: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    #: Each metrics export: (resource attributes, {metric name: (unit, temporality, points)}).
    metric_exports: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    #: Statuses to answer, in order (then 200); None: accept and never answer.
    statuses: deque = field(default_factory=deque)
    blackhole: bool = False
    #: Set at each accepted export (a test awaits the next one).
    arrived: trio.Event = field(default_factory=trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        target = b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                    continue
                if isinstance(event, h11.Request):
                    target = event.target
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            self.requests += 1
            if self.blackhole:
                await trio.sleep_forever()
            status = self.statuses.popleft() if self.statuses else 200
            if status == 200:
                if target.endswith(b"/v1/metrics"):
                    self.take_metrics(body)
                else:
                    self.take(body)
                self.arrived.set()
                self.arrived = trio.Event()
            await stream.send_all(
                conn.send(h11.Response(status_code=status, headers=[("content-length", "0")]))
                + conn.send(h11.EndOfMessage())
            )

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            self.resources.append(resource)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "trace_state": span.trace_state,
                            "kind": span.kind,
                            "duration_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
                            "status": span.status.code,
                            "attributes": attributes(span.attributes),
                            "events": [(e.name, attributes(e.attributes)) for e in span.events],
                            "dropped_events": span.dropped_events_count,
                            "instance": resource.get("service.instance.id"),
                        }
                    )

    def take_metrics(self, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        for resource_metrics in request.resource_metrics:
            metrics = {}
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    points = [
                        {
                            "attributes": attributes(p.attributes),
                            "count": p.count,
                            "sum": p.sum,
                            "buckets": list(p.bucket_counts),
                            "bounds": list(p.explicit_bounds),
                            "min": p.min,
                            "max": p.max,
                            "start": p.start_time_unix_nano,
                            "time": p.time_unix_nano,
                        }
                        for p in metric.histogram.data_points
                    ]
                    metrics[metric.name] = (metric.unit, metric.histogram.aggregation_temporality, points)
            self.metric_exports.append((attributes(resource_metrics.resource.attributes), metrics))


def attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in pairs}


async def start_receiver(nursery: trio.Nursery, **settings: Any) -> Receiver:
    receiver = Receiver(**settings)
    listeners = await nursery.start(functools.partial(trio.serve_tcp, receiver.handle, 0, host="127.0.0.1"))
    receiver.port = listeners[0].socket.getsockname()[1]
    return receiver
