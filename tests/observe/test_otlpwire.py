"""The OTLP wire format the sidecar writes, decoded by the OpenTelemetry
project's generated messages: every value type, every size, any text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mcp_sidecar.observe.otelspans import SPAN_KIND_SERVER, SpanData
from mcp_sidecar.observe.otlpwire import export_request

values = st.one_of(
    st.text(max_size=300),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
spans = st.builds(
    SpanData,
    trace_id=st.binary(min_size=16, max_size=16),
    span_id=st.binary(min_size=8, max_size=8),
    parent_span_id=st.one_of(st.just(b""), st.binary(min_size=8, max_size=8)),
    name=st.text(max_size=200),
    start_ns=st.integers(min_value=0, max_value=2**64 - 1),
    end_ns=st.integers(min_value=0, max_value=2**64 - 1),
    attributes=st.dictionaries(st.text(min_size=1, max_size=40), values, max_size=20),
    status_code=st.sampled_from([1, 2]),
    status_message=st.text(max_size=50),
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
        assert {kv.key: _value(kv.value) for kv in read.attributes} == span.attributes
        assert (read.status.code, read.status.message) == (span.status_code, span.status_message)
