"""OpenTelemetry beyond one span per answered request: the caller's
tracestate, progress notifications and a stream's early end as span events,
requests that never got an answer, notifications as spans (opt-in), and the
OTLP metrics -- all read back by a real OTLP/HTTP receiver."""

from __future__ import annotations

import json
from typing import Any

import trio

from mcp_sidecar.demo.drive import DEMO_TRACE_ID, drive_mcp
from mcp_sidecar.demo.inspector_v2 import TOKEN_HEADER, InspectorV2, serve_inspector_v2
from mcp_sidecar.demo.servers import serve_http
from mcp_sidecar.net.http import request
from mcp_sidecar.observe.otelhistograms import BOUNDS_S

from ..conftest import route_doc, start_proxy, wait_until
from ..otlp import start_receiver
from .test_inspector_v2 import open_events
from .test_mcp_eras import mcp_post
from .test_otel import call, mcp_proxy

PARENT = f"00-{DEMO_TRACE_ID}-00f067aa0ba902b7-01"


def spans_named(receiver, name: str, era: str | None = None) -> list[dict[str, Any]]:
    return [
        s for s in receiver.spans if s["name"] == name and (era is None or s["attributes"]["mcp_sidecar.era"] == era)
    ]


async def test_the_callers_tracestate_is_the_spans_from_the_header_or_meta(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        proxy = await mcp_proxy(nursery, receiver.port)
        await mcp_post(proxy.port("r"), *call(1, PARENT))  # no tracestate: none
        body, headers = call(2, PARENT)
        await mcp_post(proxy.port("r"), body, {**headers, "tracestate": "vendor=abc,other=x1"})
        body, _ = call(3)
        body["params"]["_meta"] = {"traceparent": PARENT, "tracestate": "rojo=00f067aa0ba902b7"}
        await mcp_post(proxy.port("r"), body, {})
        await wait_until(lambda: len(receiver.spans) == 3)
    by_id = {s["attributes"]["jsonrpc.request.id"]: s for s in receiver.spans}
    assert [by_id[i]["trace_state"] for i in ("1", "2", "3")] == ["", "vendor=abc,other=x1", "rojo=00f067aa0ba902b7"]
    assert all(s["trace_id"] == DEMO_TRACE_ID and s["parent_span_id"] == "00f067aa0ba902b7" for s in by_id.values())
    assert by_id["2"]["attributes"]["gen_ai.operation.name"] == "execute_tool"


async def test_progress_notifications_are_events_of_the_request_that_asked_for_them(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        proxy = await mcp_proxy(nursery, receiver.port)
        await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        await wait_until(lambda: len(spans_named(receiver, "tools/call slow")) == 2)
    (http,) = spans_named(receiver, "tools/call slow", "streamable-http-2025")
    # The demo's slow tool reports 3 steps on the request's own stream, for its token "p1".
    assert http["events"] == [
        ("mcp.progress", {"mcp_sidecar.progress": float(i), "mcp_sidecar.progress.total": 3.0}) for i in (1, 2, 3)
    ]
    (ws,) = spans_named(receiver, "tools/call slow", "websocket")
    assert ws["events"] == []  # its request named no progress token: the notifications are nobody's events
    assert all(s["events"] == [] for s in receiver.spans if s["name"] != "tools/call slow")


async def test_a_stream_the_client_abandons_leaves_a_timed_out_span_with_the_event(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(
            nursery,
            {
                "otel": {"endpoint": f"http://127.0.0.1:{receiver.port}"},
                "route": [
                    {
                        "name": "r",
                        "listen": "127.0.0.1:0",
                        "upstream": f"127.0.0.1:{upstream}",
                        "health_interval": 0,
                        "mcp_request_timeout": "1s",
                    }
                ],
            },
        )
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "slow", "arguments": {"steps": 20}, "_meta": {"progressToken": "t7"}},
        }
        payload = json.dumps(body).encode()
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
        await stream.send_all(
            b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"accept: application/json, text/event-stream\r\n"
            + f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        got = b""
        while b"notifications/progress" not in got:
            got += await stream.receive_some(65536)
        await stream.aclose()  # the client leaves before the answer
        await wait_until(lambda: len(receiver.spans) == 1)
    (span,) = receiver.spans
    assert span["name"] == "tools/call slow" and span["status"] == 2
    assert span["attributes"]["error.type"] == "timeout" and span["duration_ms"] >= 1000
    names = [name for name, _ in span["events"]]
    assert names[0] == "mcp.progress" and names[-1] == "mcp_sidecar.stream.abandoned"
    assert span["events"][-1][1]["mcp_sidecar.stream.end"] in (
        "client_closed",
        "reset",
    )  # (a close with unread bytes: a reset)
    assert set(names[:-1]) == {"mcp.progress"}


async def test_notifications_are_spans_only_when_asked(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        proxy = await mcp_proxy(nursery, receiver.port, notifications=True)
        await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        await wait_until(lambda: len(spans_named(receiver, "notifications/progress")) == 5)
        await wait_until(lambda: len(spans_named(receiver, "notifications/initialized")) >= 1)
    progress = spans_named(receiver, "notifications/progress")
    # 3 on the HTTP request's stream, 2 on the WebSocket (decoded for it: otherwise only counted).
    assert (
        sorted(s["attributes"]["mcp_sidecar.era"] for s in progress) == ["streamable-http-2025"] * 3 + ["websocket"] * 2
    )
    assert all(s["attributes"]["mcp_sidecar.direction"] == "server_to_client" for s in progress)
    (initialized, *_) = spans_named(receiver, "notifications/initialized", "streamable-http-2025")
    assert initialized["attributes"]["mcp_sidecar.direction"] == "client_to_server"
    assert initialized["attributes"]["mcp.session.id"].startswith("s-")
    assert all(s["duration_ms"] == 0 and s["status"] == 0 and s["kind"] == 2 for s in [*progress, initialized])
    # Off (the default): the same conversation makes no notification span.
    quiet = await start_receiver(nursery)
    with trio.fail_after(30):
        other = await mcp_proxy(nursery, quiet.port)
        await drive_mcp("127.0.0.1", other.port("r"), other.port("ws"))
        await wait_until(lambda: len(spans_named(quiet, "tools/call slow")) == 2)
    assert not [s for s in quiet.spans if s["name"].startswith("notifications/")]


async def test_otlp_metrics_are_the_conventions_histogram_cumulative(nursery) -> None:
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        proxy = await mcp_proxy(nursery, receiver.port, metrics=True, metrics_interval="1s")
        for i in range(2):
            await mcp_post(proxy.port("r"), *call(i))
        await mcp_post(proxy.port("r"), {"jsonrpc": "2.0", "id": 9, "method": "resources/list"}, {})
        await wait_until(lambda: receiver.metric_exports)
        await mcp_post(proxy.port("r"), *call(3))
        count = len(receiver.metric_exports)
        await wait_until(lambda: len(receiver.metric_exports) > count)
    resource, first = receiver.metric_exports[0]
    assert resource["service.name"] == "mcp-sidecar" and resource["service.instance.id"]
    unit, temporality, points = first["mcp.server.operation.duration"]
    assert (unit, temporality) == ("s", 2)  # seconds, cumulative
    by_method = {p["attributes"]["mcp.method.name"]: p for p in points}
    echo = by_method["tools/call"]
    assert echo["attributes"] == {
        "mcp.method.name": "tools/call",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "echo",
        "network.transport": "tcp",
        "network.protocol.name": "http",
        "mcp_sidecar.route": "r",
    }
    assert echo["count"] == 2 and sum(echo["buckets"]) == 2 and echo["bounds"] == list(BOUNDS_S)
    assert 0 < echo["min"] <= echo["max"] <= echo["sum"]
    failed = by_method["resources/list"]["attributes"]
    assert failed["error.type"] == "-32601" and failed["rpc.response.status_code"] == "-32601"
    _, later = receiver.metric_exports[-1]
    again = {p["attributes"]["mcp.method.name"]: p for p in later["mcp.server.operation.duration"][2]}
    assert again["tools/call"]["count"] == 3 and again["tools/call"]["start"] == echo["start"]  # cumulative


async def test_an_inspector_v2_session_gives_spans_with_its_progress(nursery) -> None:
    """The Inspector v2 API: the request on POST /api/mcp/send, its progress and
    answer on the session's event stream (another connection)."""
    with trio.fail_after(30):
        receiver = await start_receiver(nursery)
        app = InspectorV2()
        upstream = await nursery.start(serve_inspector_v2, app, "127.0.0.1", 0)
        proxy = await start_proxy(
            nursery, {**route_doc(f"127.0.0.1:{upstream}"), "otel": {"endpoint": f"http://127.0.0.1:{receiver.port}"}}
        )
        port = proxy.port()
        api = [(TOKEN_HEADER, f"Bearer {app.token}"), ("content-type", "application/json")]
        connected = await request(
            "127.0.0.1", port, "/api/mcp/connect", method="POST", body=b'{"config":{"command":"s"}}', headers=api
        )
        session = json.loads(connected.body)["sessionId"]
        stream, _ = await open_events(port, session, app.token)
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": "t", "traceparent": PARENT}},
        }
        body = json.dumps({"sessionId": session, "message": call}).encode()
        sent = await request("127.0.0.1", port, "/api/mcp/send", method="POST", body=body, headers=api)
        assert sent.status == 200
        await wait_until(lambda: len(receiver.spans) == 1)
        await stream.aclose()
    (span,) = receiver.spans
    assert span["name"] == "tools/call slow" and span["attributes"]["mcp_sidecar.era"] == "inspector-v2"
    assert span["attributes"]["mcp_sidecar.transport"] == "inspector-v2" and span["status"] == 1
    assert (span["trace_id"], span["parent_span_id"]) == (DEMO_TRACE_ID, "00f067aa0ba902b7")
    assert [name for name, _ in span["events"]] == ["mcp.progress"] * 3
