"""The OTLP wire format the sidecar writes, decoded by the OpenTelemetry
project's generated messages: every value type, every size, any text; spans
with their events and the histogram metric."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mcp_sidecar.observe.otelhistograms import BOUNDS_S, HistogramPoint
from mcp_sidecar.observe.otelspans import SPAN_KIND_SERVER, SpanData, SpanEvent
from mcp_sidecar.observe.otlpwire import export_metrics_request, export_request

values = st.one_of(
    st.text(max_size=300),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
attributes = st.dictionaries(st.text(min_size=1, max_size=40), values, max_size=20)
events = st.builds(
    SpanEvent,
    name=st.text(max_size=60),
    time_ns=st.integers(min_value=0, max_value=2**64 - 1),
    attributes=st.dictionaries(st.text(min_size=1, max_size=40), values, max_size=4),
)
spans = st.builds(
    SpanData,
    trace_id=st.binary(min_size=16, max_size=16),
    span_id=st.binary(min_size=8, max_size=8),
    parent_span_id=st.one_of(st.just(b""), st.binary(min_size=8, max_size=8)),
    name=st.text(max_size=200),
    start_ns=st.integers(min_value=0, max_value=2**64 - 1),
    end_ns=st.integers(min_value=0, max_value=2**64 - 1),
    attributes=attributes,
    status_code=st.sampled_from([1, 2]),
    status_message=st.text(max_size=50),
    trace_state=st.text(max_size=512),
    events=st.lists(events, max_size=4).map(tuple),
    dropped_events=st.integers(min_value=0, max_value=2**32 - 1),
    shared=st.sampled_from([None, {"mcp.method.name": "tools/call", "server.port": 8080}]),
)


def _value(value):
    return getattr(value, value.WhichOneof("value"))


@given(st.lists(spans, max_size=5), st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=50), max_size=5))
def test_what_the_sidecar_writes_is_what_the_standard_reads(written, resource) -> None:
    request = ExportTraceServiceRequest.FromString(export_request(written, resource, ("mcp-sidecar", "9.9")))
    (resource_spans,) = request.resource_spans
    assert {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes} == resource
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("mcp-sidecar", "9.9")
    assert len(scope_spans.spans) == len(written)
    for read, span in zip(scope_spans.spans, written, strict=True):
        assert (read.trace_id, read.span_id, read.parent_span_id, read.name) == (
            span.trace_id,
            span.span_id,
            span.parent_span_id,
            span.name,
        )
        assert (read.kind, read.start_time_unix_nano, read.end_time_unix_nano) == (
            SPAN_KIND_SERVER,
            span.start_ns,
            span.end_ns,
        )
        assert [(kv.key, _value(kv.value)) for kv in read.attributes] == [
            *(span.shared or {}).items(),
            *span.attributes.items(),
        ]
        assert (read.status.code, read.status.message) == (span.status_code, span.status_message)
        assert (read.trace_state, read.dropped_events_count) == (span.trace_state, span.dropped_events)
        assert [(e.name, e.time_unix_nano, {kv.key: _value(kv.value) for kv in e.attributes}) for e in read.events] == [
            (e.name, e.time_ns, e.attributes) for e in span.events
        ]


points = st.builds(
    HistogramPoint,
    attributes=st.dictionaries(st.text(min_size=1, max_size=40), values, max_size=8).map(lambda d: tuple(d.items())),
    counts=st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=15, max_size=15),
    count=st.integers(min_value=0, max_value=2**64 - 1),
    total=st.floats(allow_nan=False),
    low=st.floats(allow_nan=False),
    high=st.floats(allow_nan=False),
)


@given(
    st.lists(points, max_size=5), st.integers(min_value=0, max_value=2**63), st.integers(min_value=0, max_value=2**63)
)
def test_the_histogram_the_sidecar_writes_is_what_the_standard_reads(written, start, now) -> None:
    body = export_metrics_request(
        ("m.d", "what", "s"), written, BOUNDS_S, (start, now), {"k": "v"}, ("mcp-sidecar", "1")
    )
    (resource_metrics,) = ExportMetricsServiceRequest.FromString(body).resource_metrics
    assert {kv.key: _value(kv.value) for kv in resource_metrics.resource.attributes} == {"k": "v"}
    (scope_metrics,) = resource_metrics.scope_metrics
    (metric,) = scope_metrics.metrics
    assert (metric.name, metric.description, metric.unit) == ("m.d", "what", "s")
    assert metric.histogram.aggregation_temporality == 2  # cumulative
    assert len(metric.histogram.data_points) == len(written)
    for read, point in zip(metric.histogram.data_points, written, strict=True):
        assert (read.start_time_unix_nano, read.time_unix_nano, read.count) == (start, now, point.count)
        assert (read.sum, list(read.bucket_counts), list(read.explicit_bounds)) == (
            point.total,
            point.counts,
            list(BOUNDS_S),
        )
        assert {kv.key: _value(kv.value) for kv in read.attributes} == dict(point.attributes)
        if point.count:
            assert (read.min, read.max) == (point.low, point.high)
        else:
            assert not read.HasField("min") and not read.HasField("max")
