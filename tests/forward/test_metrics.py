"""The worker's own instruments expose exactly what prometheus_client's would."""

from __future__ import annotations

import prometheus_client
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from mcp_sidecar.forward import metrics as m

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@given(
    st.lists(st.sampled_from([0.0, 0.0005, 0.001, 0.005, 0.01, 0.1, 0.5, 1.0, 2.0, 100.0]), max_size=30),
    st.lists(st.integers(0, 5), max_size=10),
)
def test_histogram_and_counter_match_prometheus_client(values, increments):
    ours_registry = CollectorRegistry()
    instruments = m.Instruments()
    ours_registry.register(instruments)
    ours_h = m.Histogram("x_seconds", "doc", ["route"], buckets=BUCKETS, registry=instruments)
    ours_c = m.Counter("x_events", "doc", ["route"], registry=instruments)

    theirs_registry = CollectorRegistry()
    theirs_h = prometheus_client.Histogram("x_seconds", "doc", ["route"], buckets=BUCKETS, registry=theirs_registry)
    theirs_c = prometheus_client.Counter("x_events", "doc", ["route"], registry=theirs_registry)

    for value in values:
        ours_h.labels("r").observe(value)
        theirs_h.labels("r").observe(value)
    for amount in increments:
        ours_c.labels("r").inc(amount)
        theirs_c.labels("r").inc(amount)

    assert _samples(ours_registry) == _samples(theirs_registry)
    text = generate_latest(ours_registry).decode()
    assert "_created" not in text
    if values:
        assert f'x_seconds_bucket{{le="+Inf",route="r"}} {float(len(values))}' in text


def test_worker_metrics_have_no_created_series():
    metrics = m.Metrics()
    metrics.for_route("r")
    metrics.http_requests.labels("r", "GET", "200").inc()
    text = generate_latest(metrics.registry).decode()
    assert "mcp_sidecar_http_requests_total{" in text
    assert "_created" not in text
