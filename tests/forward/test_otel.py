"""OpenTelemetry: every observed MCP request as a span, exported over OTLP/HTTP
to a real receiver in the test (its protobuf decoded with opentelemetry-proto):
attributes, parents from traceparent (header and _meta), sampling, a collector
that refuses, is down or never answers, and the configuration's checks."""

from __future__ import annotations

import json
import os
from collections import deque
from typing import Any

import pytest
import trio

from mcp_sidecar.config.otel import otel_config
from mcp_sidecar.config.parse import Environment, build_config
from mcp_sidecar.demo.drive import DEMO_TRACE_ID, drive_mcp, drive_mcp_modern
from mcp_sidecar.demo.servers import serve_http, serve_ws
from mcp_sidecar.errors import ConfigError
from mcp_sidecar.observe.otelspans import Sampler, parse_traceparent

from ..conftest import free_port, start_proxy, wait_until
from ..otlp import start_receiver
from .test_mcp_eras import mcp_post


async def mcp_proxy(nursery, receiver_port: int, **otel: Any):
    http_up = await nursery.start(serve_http, "127.0.0.1", 0)
    ws_up = await nursery.start(serve_ws, "127.0.0.1", 0)
    return await start_proxy(
        nursery,
        {
            "otel": {"endpoint": f"http://127.0.0.1:{receiver_port}", **otel},
            "route": [
                {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "health_interval": 0},
                {"name": "ws", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{ws_up}", "health_interval": 0},
            ],
        },
    )


def call(i: int, traceparent: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
    return body, ({"traceparent": traceparent} if traceparent else {})


async def test_every_transport_and_era_gives_spans_parented_to_the_callers_context(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        proxy = await mcp_proxy(nursery, receiver.port, service_name="sidecar-under-test")
        ws_upstream = int(proxy.config.routes[1].upstreams[0].port)
        await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        await drive_mcp_modern("127.0.0.1", proxy.port("r"))
        # 2025 HTTP: 4 requests; WebSocket: 3; legacy SSE: 2; 2026: 5 (listen included)
        await wait_until(lambda: len(receiver.spans) == 14)
    spans = receiver.spans
    assert receiver.resources[0]["service.name"] == "sidecar-under-test" and receiver.resources[0]["host.name"]
    by_era = {}
    for span in spans:
        by_era.setdefault(span["attributes"]["mcp_sidecar.era"], []).append(span["name"])
    assert sorted(by_era) == ["2024-11-05-sse", "streamable-http-2025", "streamable-http-2026", "websocket"]
    assert sorted(by_era["websocket"]) == ["initialize", "ping", "tools/call slow"]
    # The HTTP request with a traceparent header (tools/list) and the WebSocket call with one in _meta.
    (listed,) = [
        s
        for s in spans
        if s["name"] == "tools/list"
        and s["attributes"]["mcp_sidecar.route"] == "r"
        and s["attributes"]["mcp_sidecar.era"] == "streamable-http-2025"
    ]
    assert (listed["trace_id"], listed["parent_span_id"]) == (DEMO_TRACE_ID, "00f067aa0ba902b7")
    (slow_ws,) = [
        s for s in spans if s["name"] == "tools/call slow" and s["attributes"]["mcp_sidecar.era"] == "websocket"
    ]
    assert (slow_ws["trace_id"], slow_ws["parent_span_id"]) == (DEMO_TRACE_ID, "b7ad6b7169203331")
    assert slow_ws["kind"] == 2 and slow_ws["status"] == 1 and slow_ws["duration_ms"] >= 100
    attributes = slow_ws["attributes"]
    assert attributes["mcp.method.name"] == "tools/call" and attributes["gen_ai.tool.name"] == "slow"
    assert attributes["mcp.session.id"].startswith("conn:") and attributes["jsonrpc.request.id"] == "2"
    assert attributes["network.transport"] == "tcp" and attributes["network.protocol.name"] == "websocket"
    assert attributes["mcp.protocol.version"] == "2025-06-18" and attributes["mcp_sidecar.route"] == "ws"
    assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == ws_upstream
    assert {f"mcp_sidecar.latency.{p}_ms" for p in ("network", "server", "transfer", "client")} <= set(attributes)
    # Without a traceparent: a root span of its own trace.
    (discover,) = [s for s in spans if s["name"] == "server/discover"]
    assert discover["parent_span_id"] == "" and discover["trace_id"] != DEMO_TRACE_ID
    assert discover["attributes"]["mcp.protocol.version"] == "2026-07-28"
    http_session = [s for s in spans if s["attributes"]["mcp_sidecar.era"] == "streamable-http-2025"]
    assert all(s["attributes"]["mcp.session.id"].startswith("s-") for s in http_session[1:])  # hashed
    assert len({s["span_id"] for s in spans}) == 14


async def test_an_error_answer_is_an_error_span(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        proxy = await mcp_proxy(nursery, receiver.port)
        body = {"jsonrpc": "2.0", "id": 5, "method": "resources/list", "params": {}}
        await mcp_post(proxy.port("r"), body, {})
        await wait_until(lambda: len(receiver.spans) == 1)
    (span,) = receiver.spans
    assert span["status"] == 2 and span["attributes"]["error.type"] == "-32601"
    assert span["attributes"]["rpc.response.status_code"] == "-32601"


async def test_sampling_follows_the_parent_or_the_ratio(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        proxy = await mcp_proxy(nursery, receiver.port)
        tracer = proxy.proxy.tracer
        unsampled = f"00-{DEMO_TRACE_ID}-00f067aa0ba902b7-00"
        await mcp_post(proxy.port("r"), *call(1, unsampled))
        await wait_until(lambda: proxy.route("r").observation.stats.methods.get("tools/call") is not None)
        assert not tracer.pending and tracer.exported == 0  # the caller did not sample it: neither do we
        await mcp_post(proxy.port("r"), *call(2, f"00-{DEMO_TRACE_ID}-00f067aa0ba902b7-01"))
        await wait_until(lambda: len(receiver.spans) == 1)
        off = await start_receiver(nursery)
        quiet = await mcp_proxy(nursery, off.port, sampler="always_off")
        await mcp_post(quiet.port("r"), *call(3))
        await wait_until(lambda: quiet.route("r").observation.stats.methods.get("tools/call") is not None)
        assert not quiet.proxy.tracer.pending and off.requests == 0
    half = Sampler("traceidratio", 0.5)
    ids = [bytes(8) + i.to_bytes(8, "big") for i in (0, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)]
    assert [half.sampled(i, None) for i in ids] == [True, True, True, False, False]
    parent = parse_traceparent(f"00-{DEMO_TRACE_ID}-00f067aa0ba902b7-00")
    assert Sampler("traceidratio", 1.0).sampled(ids[-1], parent) and not Sampler("parentbased_always_on").sampled(
        ids[0], parent
    )
    assert parse_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert parse_traceparent("ff-" + DEMO_TRACE_ID + "-00f067aa0ba902b7-01") is None


async def test_a_collector_that_answers_503_gets_the_batch_again(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery, statuses=deque([503, 503]))
        proxy = await mcp_proxy(nursery, receiver.port)
        for i in range(3):
            await mcp_post(proxy.port("r"), *call(i))
        await wait_until(lambda: len(receiver.spans) == 3)
        assert receiver.requests == 3 and proxy.proxy.tracer.failures == 0  # two refusals, then accepted
        assert proxy.proxy.tracer.dropped == 0


@pytest.mark.parametrize("collector", ["down", "blackhole"])
async def test_a_collector_down_or_silent_changes_nothing_but_the_dropped_count(nursery, collector) -> None:
    with trio.fail_after(40):
        port = free_port() if collector == "down" else (await start_receiver(nursery, blackhole=True)).port
        proxy = await mcp_proxy(nursery, port, queue_spans=5, export_timeout="300ms")
        tracer = proxy.proxy.tracer
        for i in range(30):
            reply = await mcp_post(proxy.port("r"), *call(i))
            assert reply.status == 200 and json.loads(reply.body)["id"] == i  # forwarding goes on
            assert len(tracer.pending) <= 5  # bounded while the exporter waits
        await wait_until(lambda: tracer.dropped == 30 and tracer.failures >= 1)
        assert tracer.exported == 0


def test_the_configuration_and_the_environment_are_checked() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%3D,tenant=t1",
        "OTEL_SERVICE_NAME": "svc",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "POD_NAME": "sidecar-7d9f",
    }
    config = otel_config("t.toml", {}, env)
    assert config.traces_endpoint == "http://collector:4318/v1/traces"
    assert config.headers == (("x-api-key", "abc="), ("tenant", "t1"))
    assert (config.service_name, config.sampler, config.sampler_arg) == ("svc", "parentbased_traceidratio", 0.25)
    assert config.resource_attributes == (("k8s.pod.name", "sidecar-7d9f"), ("deployment.environment", "prod"))
    # The file wins; the signal's own endpoint is taken as it is.
    mine = otel_config("t.toml", {"traces_endpoint": "https://tempo:4318/otlp/v1/traces", "sampler": "always_on"}, env)
    assert (mine.traces_endpoint, mine.sampler) == ("https://tempo:4318/otlp/v1/traces", "always_on")
    assert not otel_config("t.toml", {}, {**env, "OTEL_SDK_DISABLED": "true"}).enabled
    assert not otel_config("t.toml", {}, {}).enabled  # off unless an endpoint is set
    for table, variables, where in (
        ({"endpoint": "collector:4318"}, {}, "t.toml: otel.endpoint"),
        ({"sampler": "sometimes"}, {}, "t.toml: otel.sampler"),
        ({"sampler_arg": 2}, {}, "t.toml: otel.sampler_arg"),
        ({"headers": "novalue"}, {}, "t.toml: otel.headers"),
        ({"queue_spans": 0}, {}, "t.toml: otel.queue_spans"),
        ({"exporter": "x"}, {}, "t.toml: otel.exporter"),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x"}, "$OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({}, {"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "$OTEL_TRACES_SAMPLER"),
        ({}, {"OTEL_TRACES_SAMPLER_ARG": "half"}, "$OTEL_TRACES_SAMPLER_ARG"),
        ({}, {"OTEL_EXPORTER_OTLP_HEADERS": "a=b,c"}, "$OTEL_EXPORTER_OTLP_HEADERS"),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "$OTEL_EXPORTER_OTLP_PROTOCOL"),
    ):
        with pytest.raises(ConfigError) as caught:
            otel_config("t.toml", table, variables)
        assert str(caught.value).startswith(where), str(caught.value)
    # Through the whole configuration: the environment the caller passes in.
    document = {"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]}
    built = build_config(
        document, source="t.toml", environment=Environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    )
    assert built.otel.traces_endpoint == "http://c:4318/v1/traces"


async def test_config_validate_names_a_bad_variable_in_one_line(tmp_path) -> None:
    from ..conftest import PROXYCTL

    config = tmp_path / "c.toml"
    config.write_text('[[route]]\nname = "r"\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:9"\n')
    base = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    with trio.fail_after(30):
        bad = await trio.run_process(
            [*PROXYCTL, "config", "validate", str(config)],
            env={**base, "OTEL_TRACES_SAMPLER": "bogus"},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        good = await trio.run_process(
            [*PROXYCTL, "config", "validate", str(config)], env=base, capture_stdout=True, capture_stderr=True
        )
    said = bad.stderr.decode().strip()
    assert bad.returncode == 2 and "\n" not in said and said.startswith("proxyctl: error: $OTEL_TRACES_SAMPLER: ")
    assert good.returncode == 0


def test_the_metrics_and_notification_settings_are_checked() -> None:
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert otel_config("t.toml", {}, base).metrics_endpoint is None  # metrics only when asked
    on = otel_config("t.toml", {}, {**base, "OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "15000"})
    assert (on.metrics_endpoint, on.metrics_interval_s) == ("http://collector:4318/v1/metrics", 15.0)
    own = otel_config(
        "t.toml",
        {"metrics": True, "metrics_endpoint": "https://m:4318/custom", "metrics_interval": "30s"},
        {**base, "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "k=v"},
    )
    assert (own.metrics_endpoint, own.metrics_interval_s, own.metrics_headers) == (
        "https://m:4318/custom",
        30.0,
        (("k", "v"),),
    )
    assert own.headers == ()  # (the metrics' own headers are theirs)
    only_metrics = otel_config("t.toml", {"metrics": True}, {**base, "OTEL_TRACES_EXPORTER": "none"})
    assert not only_metrics.enabled and only_metrics.metrics_enabled
    assert not otel_config("t.toml", {"metrics": True}, {**base, "OTEL_SDK_DISABLED": "true"}).metrics_enabled
    assert otel_config("t.toml", {"notifications": True}, base).notifications
    for table, variables, where in (
        ({"metrics": True}, {}, "t.toml: otel.metrics: metrics are asked for but no endpoint"),
        ({"metrics": "yes"}, base, "t.toml: otel.metrics: expected true or false"),
        ({"metrics_interval": "10ms"}, base, "t.toml: otel.metrics_interval: must be at least 1s"),
        ({"notifications": 1}, base, "t.toml: otel.notifications"),
        ({}, {**base, "OTEL_METRICS_EXPORTER": "prometheus"}, "$OTEL_METRICS_EXPORTER: expected otlp or none"),
        ({}, {**base, "OTEL_TRACES_EXPORTER": "zipkin"}, "$OTEL_TRACES_EXPORTER: expected otlp or none"),
        ({}, {**base, "OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "$OTEL_METRIC_EXPORT_INTERVAL: expected milliseconds"),
        ({}, {**base, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}, "$OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
        ({"metrics_endpoint": "nope"}, base, "t.toml: otel.metrics_endpoint"),
    ):
        with pytest.raises(ConfigError) as caught:
            otel_config("t.toml", table, variables)
        assert str(caught.value).startswith(where), str(caught.value)
