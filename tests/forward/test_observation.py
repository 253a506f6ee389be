"""In-line observation end to end: the demo's MCP transports through the
proxy, with trio-websocket and h11 clients; bytes never change."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.demo.servers import serve_echo, serve_http, serve_ws
from mcp_sidecar.forward.observation import Mode
from mcp_sidecar.forward.pump import HAVE_SPLICE
from mcp_sidecar.net.http import request

from ..conftest import (
    MESSAGE_MEMBERS,
    TELLING_METHODS,
    connect,
    echo_roundtrip,
    feed_json_exchange,
    receive_all,
    receive_exactly,
    route_doc,
    start_proxy,
    wait_until,
)


def sample(proxy, name: str, **labels) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``
    (route "r" unless given)."""
    wanted = {"route": "r", **labels}
    return sum(
        s.value
        for f in proxy.registry().collect()
        for s in f.samples
        if s.name == name and wanted.items() <= s.labels.items()
    )


def label_values(proxy, name: str, label: str) -> set[str]:
    return {
        s.labels[label] for f in proxy.registry().collect() for s in f.samples if s.name == name and label in s.labels
    }


async def mcp_post(port: int, message, accept: str = "application/json, text/event-stream"):
    return await request(
        "127.0.0.1",
        port,
        "/mcp",
        method="POST",
        body=json.dumps(message).encode(),
        headers=[("content-type", "application/json"), ("accept", accept)],
    )


async def test_streamable_http_mcp_is_measured(nursery) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"))
        reply = await mcp_post(
            proxy.port(),
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}},
        )
        assert json.loads(reply.body)["result"]["serverInfo"]["name"] == "mcp-sidecar-demo"
        session = reply.headers["mcp-session-id"]
        reply = await mcp_post(
            proxy.port(), {"jsonrpc": "2.0", "id": 2, "method": "ping"}, accept="text/event-stream"
        )  # answered as SSE
        assert reply.headers["content-type"] == "text/event-stream"
        assert b'"id": 2' in reply.body
        await mcp_post(
            proxy.port(),
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "hi"}},
            },
        )
        await mcp_post(proxy.port(), {"jsonrpc": "2.0", "id": 4, "method": "no/such"})
        await mcp_post(proxy.port(), {"jsonrpc": "2.0", "method": "notifications/initialized"})
        await wait_until(lambda: proxy.route().active == 0)

        assert sample(proxy, "mcp_requests_total", method="initialize", status="ok") == 1
        assert sample(proxy, "mcp_requests_total", method="ping", status="ok") == 1
        assert sample(proxy, "mcp_requests_total", method="tools/call", status="ok", transport="http") == 1
        assert sample(proxy, "mcp_requests_total", method="other", status="-32601") == 1
        assert sample(proxy, "mcp_response_duration_seconds_count", method="tools/call") == 1
        assert sample(proxy, "mcp_sidecar_http_requests_total", method="POST", status="200") == 4
        assert sample(proxy, "mcp_sidecar_http_requests_total", method="POST", status="202") == 1
        assert sample(proxy, "mcp_sidecar_http_response_seconds_count") == 5
        assert sample(proxy, "mcp_sidecar_sse_events_total") == 1
        assert session.startswith("demo-")


async def test_websocket_mcp_frames_and_ping_rtt(nursery) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_ws, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"))
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{proxy.port()}/", subprotocols=["mcp"]) as ws:
            assert ws.subprotocol == "mcp"
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
            assert json.loads(await ws.get_message())["id"] == 1
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            assert json.loads(await ws.get_message())["result"]["tools"][0]["name"] == "echo"
            await ws.send_message(b"\x00binary\xff")
            assert await ws.get_message() == b"\x00binary\xff"
            await ws.ping(b"rtt-1")
            conn = next(iter(proxy.route().connections.values()))
            assert conn.protocol == "websocket" and conn.observation.mcp
            quality = conn.quality.report()
            assert quality["samples"] == 3 and quality["source"] == "ws_ping"  # 2 MCP latencies + 1 ping
            assert (quality["score"], quality["grade"], quality["error_rate"]) == (100, "A", 0.0)
            ws_conn = conn
        await wait_until(lambda: proxy.route().active == 0)
        assert ws_conn.observation.close_frame == {"code": 1000, "reason": "", "from": "client"}
        up, down = "client_to_upstream", "upstream_to_client"
        assert sample(proxy, "mcp_sidecar_websocket_frames_total", direction=up, opcode="text") == 2
        assert sample(proxy, "mcp_sidecar_websocket_frames_total", direction=down, opcode="text") == 2
        assert sample(proxy, "mcp_sidecar_websocket_frames_total", direction=up, opcode="binary") == 1
        assert sample(proxy, "mcp_sidecar_websocket_frames_total", direction=up, opcode="ping") == 1
        assert sample(proxy, "mcp_sidecar_websocket_frames_total", direction=down, opcode="pong") == 1
        assert sample(proxy, "mcp_sidecar_websocket_frames_total", direction=up, opcode="close") == 1
        assert sample(proxy, "mcp_sidecar_websocket_ping_rtt_seconds_count") == 1
        assert sample(proxy, "mcp_sidecar_http_requests_total", method="GET", status="101") == 1
        assert sample(proxy, "mcp_requests_total", method="initialize", status="ok") == 1
        assert sample(proxy, "mcp_requests_total", method="tools/list", status="ok", transport="websocket") == 1


async def test_legacy_sse_transport_is_correlated_across_connections(nursery, scripted_upstream) -> None:
    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        stream_conn = await connect(proxy.port())
        await stream_conn.send_all(b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        sse_up = await scripted_upstream.accepted.receive()
        await receive_exactly(sse_up, len(b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"))
        await sse_up.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
            b"event: endpoint\r\ndata: /message?sessionId=abc\r\n\r\n"
        )
        post_conn = await connect(proxy.port())
        body = b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}'
        post = (
            b"POST /message?sessionId=abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await post_conn.send_all(post)
        post_up = await scripted_upstream.accepted.receive()
        assert await receive_exactly(post_up, len(post)) == post
        await post_up.send_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
        await receive_exactly(post_conn, len(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"))
        # The response arrives on the other connection's SSE stream.
        await sse_up.send_all(b'event: message\r\ndata: {"jsonrpc":"2.0","id":7,"result":{"tools":[]}}\r\n\r\n')
        await wait_until(lambda: sample(proxy, "mcp_requests_total", method="tools/list", status="ok") == 1)
        assert sample(proxy, "mcp_sidecar_sse_events_total") == 2
        assert sample(proxy, "mcp_streams_open") == 1  # the GET /sse stream: a gauge
        stream = next(c for c in proxy.route().connections.values() if c.protocol == "sse")
        facts = stream.as_json(trio.current_time())["observed"]["sse"]
        assert facts["events"] == 2 and facts["max_gap_s"] >= 0 and facts["stream_s"] >= 0
        for s in (stream_conn, post_conn, sse_up, post_up):
            await s.aclose()


async def test_a_connect_tunnel_is_left_opaque(nursery, scripted_upstream) -> None:
    """After a 2xx to CONNECT the bytes are another protocol: observation stops
    quietly (no observer error) and the tunnel's bytes pass unchanged."""
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        hello = b"CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\n\r\n"
        await client.send_all(hello)
        upstream = await scripted_upstream.accepted.receive()
        assert await receive_exactly(upstream, len(hello)) == hello
        established = b"HTTP/1.1 200 Connection Established\r\n\r\n"
        await upstream.send_all(established + b"\x16\x03\x03\x00\x02hi")
        assert await receive_exactly(client, len(established) + 7) == established + b"\x16\x03\x03\x00\x02hi"
        tunnel = bytes(range(256)) * 64  # not WebSocket frames: a scanner would give up on them
        await client.send_all(tunnel)
        assert await receive_exactly(upstream, len(tunnel)) == tunnel
        conn = next(iter(proxy.route().connections.values()))
        assert conn.observation.mode == "tcp"
        assert sample(proxy, "mcp_sidecar_observer_errors_total", protocol="http") == 0
        assert sample(proxy, "mcp_sidecar_http_requests_total", method="OTHER", status="200") == 1
        for s in (client, upstream):
            await s.aclose()


async def test_auto_route_with_non_http_bytes_runs_the_opaque_pump(nursery, echo_port: int) -> None:
    """Sniffing decides "tcp" on the first chunk; from then on neither
    direction is observed and bulk goes through splice(2), exactly as with
    protocol "tcp"."""
    if not HAVE_SPLICE:
        pytest.skip("no splice(2) on this platform")
    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}", buffer_size=65536))
        client = await connect(proxy.port())
        payload = bytes(range(256)) * 4096 * 4  # 4 MiB, not an HTTP request line

        async def send() -> None:
            await client.send_all(payload)

        nursery.start_soon(send)
        assert await receive_exactly(client, len(payload)) == payload
        conn = next(iter(proxy.route().connections.values()))
        assert conn.observation.mode is Mode.TCP
        assert conn.c2u.spliced > 0 and conn.u2c.spliced > 0
        assert conn.c2u.spliced + conn.u2c.spliced > len(payload)  # most of it never copied through Python
        assert sample(proxy, "mcp_sidecar_observer_errors_total", protocol="sniff") == 0
        await client.aclose()


async def test_an_upstream_that_speaks_first_is_opaque(nursery, scripted_upstream) -> None:
    """A server-first protocol is not HTTP, whatever the client answers."""
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        upstream = await scripted_upstream.accepted.receive()
        banner = b"220 mail.example ESMTP\r\n"
        await upstream.send_all(banner)
        assert await receive_exactly(client, len(banner)) == banner
        request_like = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        await client.send_all(request_like)
        assert await receive_exactly(upstream, len(request_like)) == request_like
        conn = next(iter(proxy.route().connections.values()))
        assert conn.observation.mode is Mode.TCP and conn.protocol == "tcp"
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        await upstream.send_all(reply)
        assert await receive_exactly(client, len(reply)) == reply
        assert sample(proxy, "mcp_sidecar_http_requests_total", method="GET", status="200") == 0
        for s in (client, upstream):
            await s.aclose()


async def test_mcp_method_header_labels_an_unparsed_request(nursery) -> None:
    with trio.fail_after(10):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"))
        # 2026-07-28: Mcp-Method labels the request; the body is not JSON the observer reads.
        await request(
            "127.0.0.1",
            proxy.port(),
            "/echo",
            method="POST",
            body=b"\x00opaque",
            headers=[("content-type", "application/octet-stream"), ("mcp-method", "tools/call"), ("mcp-name", "echo")],
        )
        await wait_until(lambda: sample(proxy, "mcp_requests_total", method="tools/call", status="ok") == 1)


async def test_label_cardinality_stays_bounded(nursery) -> None:
    with trio.fail_after(30):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"))
        batch = [{"jsonrpc": "2.0", "id": i, "method": f"evil/method-{i}"} for i in range(10_000)]
        reply = await mcp_post(proxy.port(), batch)
        assert len(json.loads(reply.body)) == 10_000
        await wait_until(lambda: sample(proxy, "mcp_requests_total", method="other", status="-32601") == 10_000)
        assert label_values(proxy, "mcp_requests_total", "method") == {"other"}
        assert label_values(proxy, "mcp_sidecar_http_requests_total", "method") == {"POST"}


async def test_malformed_http_is_forwarded_unchanged_and_counted(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"))
        garbage = b"GET / HTTP/1.1\r\nthis is not a header\r\n\r\n\x00\xff" * 3
        assert await echo_roundtrip(proxy.port(), message=garbage) == garbage
        await wait_until(lambda: proxy.route().active == 0)
        assert sample(proxy, "mcp_sidecar_observer_errors_total", protocol="http") == 1


@settings(max_examples=20, deadline=None)
@given(
    tail=st.binary(max_size=20_000),
    prefix=st.sampled_from([b"POST /mcp HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n", b"GE", b"\x16\x03\x01", b""]),
)
async def test_bytes_identical_with_observation_on_or_off(tail: bytes, prefix: bytes) -> None:
    payload = prefix + tail
    results = []
    with trio.fail_after(20):
        for protocol in ("auto", "http", "tcp"):
            async with trio.open_nursery() as nursery:
                echo = await nursery.start(serve_echo, "127.0.0.1", 0)
                proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo}", protocol=protocol))
                stream = await connect(proxy.port())
                async with trio.open_nursery() as n:
                    got = {}

                    async def read(stream: trio.SocketStream, got: dict) -> None:
                        got["data"] = await receive_all(stream)

                    n.start_soon(read, stream, got)
                    for i in range(0, len(payload), 997):
                        await stream.send_all(payload[i : i + 997])
                    await stream.send_eof()
                await stream.aclose()
                results.append(got["data"])
                nursery.cancel_scope.cancel()
    assert results == [payload, payload, payload]


async def test_all_three_mcp_transports_through_the_proxy(nursery) -> None:
    from mcp_sidecar.demo.drive import drive_mcp

    with trio.fail_after(30):
        http_up = await nursery.start(serve_http, "127.0.0.1", 0)
        ws_up = await nursery.start(serve_ws, "127.0.0.1", 0)
        doc = {
            "route": [
                {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "health_interval": 0},
                {"name": "ws", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{ws_up}", "health_interval": 0},
            ]
        }
        proxy = await start_proxy(nursery, doc)
        counts = await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        assert counts == {"streamable_http": 3, "websocket": 3, "http_sse": 2}
        await wait_until(lambda: proxy.route("r").active == 0 and proxy.route("ws").active == 0)

        def mcp(route: str, method: str, transport: str = "") -> float:
            transport = transport or ("websocket" if route == "ws" else "http")
            return sample(proxy, "mcp_requests_total", route=route, method=method, status="ok", transport=transport)

        # streamable HTTP (initialize, tools/list, 2 tools/call), each era under its own label
        assert (mcp("r", "initialize"), mcp("r", "tools/list"), mcp("r", "tools/call")) == (1, 1, 2)
        # the legacy HTTP+SSE transport (initialize, tools/list): responses on the stream, correlated by sessionId
        assert (
            mcp("r", "initialize", "legacy-sse"),
            mcp("r", "tools/list", "legacy-sse"),
            mcp("r", "tools/call", "legacy-sse"),
        ) == (1, 1, 0)
        assert (mcp("ws", "initialize"), mcp("ws", "tools/call"), mcp("ws", "ping")) == (1, 1, 1)
        assert proxy.route("r").observation.tracker.progress == 3  # the slow tool's progress, over SSE
        assert proxy.route("ws").observation.tracker.progress == 2
        assert proxy.route("r").observation.tracker.pending == 0
        registry = proxy.registry()
        assert registry.get_sample_value("mcp_sidecar_websocket_ping_rtt_seconds_count", {"route": "ws"}) == 1
        # time to first byte (response headers) for the two HTTP tools/call requests; progress counted
        assert registry.get_sample_value("mcp_first_byte_seconds_count", {"route": "r", "method": "tools/call"}) == 2
        assert registry.get_sample_value("mcp_progress_notifications_total", {"route": "r"}) == 3


def _buggy_observation(monkeypatch):
    from mcp_sidecar.forward.metrics import Metrics
    from mcp_sidecar.forward.observation import Observation, RouteObservation
    from mcp_sidecar.observe.http import HttpObserver
    from mcp_sidecar.observe.mcp import McpTracker
    from mcp_sidecar.observe.quality import Quality

    def broken(self, data, now):
        raise AttributeError("a defect in our own glue")

    monkeypatch.setattr(HttpObserver, "feed_client", broken)
    route = RouteObservation("r", Metrics(), McpTracker())
    return route, Observation(route, 1, Quality(), "http", clock=lambda: 0.0)


def test_an_observer_bug_is_raised_under_the_test_suite(monkeypatch) -> None:
    from mcp_sidecar.forward import observation as observation_module

    assert observation_module.STRICT  # the suite's environment sets MCP_SIDECAR_STRICT=1
    _route, observation = _buggy_observation(monkeypatch)
    with pytest.raises(AttributeError, match="a defect in our own glue"):
        observation.client_direction.feed(memoryview(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"))


def test_in_production_an_observer_bug_fails_open_counted_and_logged_once(monkeypatch) -> None:
    import io

    from mcp_sidecar import logs
    from mcp_sidecar.forward import failopen
    from mcp_sidecar.forward import observation as observation_module

    monkeypatch.setattr(observation_module, "STRICT", False)
    monkeypatch.setattr(failopen, "_BUGS_LOGGED", set())
    stream = io.StringIO()
    logs.configure("json", "info", stream=stream)
    try:
        for _ in range(3):
            route, observation = _buggy_observation(monkeypatch)
            assert observation.client_direction.feed(memoryview(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) is False
            assert observation.mode == "failed"  # the pump forwards the rest unobserved
            assert route.bugs == 1
            assert sample_route_errors(route) == 0  # not counted as the peer's fault
        lines = [json.loads(item) for item in stream.getvalue().splitlines()]
        bugs = [item for item in lines if item["event"] == "observer.bug"]
        assert len(bugs) == 1 and "AttributeError: a defect in our own glue" in bugs[0]["exception"]
    finally:
        logs.configure("text", "warning")


def sample_route_errors(route) -> float:
    return (
        route.metrics.registry.get_sample_value("mcp_sidecar_observer_errors_total", {"route": "r", "protocol": "http"})
        or 0.0
    )


_MEMBERS = st.fixed_dictionaries({}, optional=MESSAGE_MEMBERS)
#: Mostly requests and answers that meet (ids 0 and 1), with any JSON in their other members.
_ASKED = (
    st.fixed_dictionaries(
        {"id": st.integers(0, 1), "method": TELLING_METHODS},
        optional={k: MESSAGE_MEMBERS[k] for k in ("params", "result", "error")},
    )
    | _MEMBERS
)
_ANSWERED = (
    st.fixed_dictionaries({"id": st.integers(0, 1)}, optional={k: MESSAGE_MEMBERS[k] for k in ("result", "error")})
    | _MEMBERS
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_ASKED, min_size=1, max_size=4), st.lists(_ANSWERED, min_size=1, max_size=4))
def test_any_json_in_any_member_is_observed_tapped_and_recorded_without_a_defect(asked, answered) -> None:
    """A POST of messages whose members hold any JSON, and a JSON answer of
    the same: the whole sink (correlation, metrics, the tap's record, a
    recording's line) takes them; under the test suite (STRICT) a defect of
    ours would raise here."""
    route, observation, tap, recording = _sink_with_tap_and_recording()
    body = json.dumps([{"jsonrpc": "2.0", **m} for m in asked]).encode()
    reply = json.dumps([{"jsonrpc": "2.0", **m} for m in answered]).encode()
    feed_json_exchange(observation, body, reply)
    assert observation.mode != "failed" and route.bugs == 0
    records = []
    while True:
        try:
            records.append(tap.receive.receive_nowait())
        except trio.WouldBlock:
            break
    lines = recording.take(1 << 20)
    assert len(records) == len(lines) >= len(asked)  # (every member a request may hold is read)
    assert all(isinstance(json.loads(line[5]), dict) for line in lines)


def test_the_requests_awaiting_their_first_response_byte_are_bounded() -> None:
    """Regression: every request a client posted was kept until its response
    began (a 1 MiB batch is 25,000 requests, 64 bodies may be pipelined: 1.6
    million per connection, ~150 MB).  Now the first MAX_AWAITING_FIRST_BYTE
    are timed; the rest are still counted and correlated."""
    from mcp_sidecar.forward.mcprecords import MAX_AWAITING_FIRST_BYTE
    from mcp_sidecar.forward.metrics import Metrics
    from mcp_sidecar.forward.observation import Observation, RouteObservation
    from mcp_sidecar.observe.mcp import McpTracker
    from mcp_sidecar.observe.quality import Quality

    route = RouteObservation("r", Metrics(), McpTracker())
    observation = Observation(route, 1, Quality(), "http", clock=lambda: 0.0)
    batch = json.dumps([{"jsonrpc": "2.0", "id": n, "method": "ping"} for n in range(5000)]).encode()
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    observation.client_direction.feed(memoryview(head % len(batch) + batch))
    assert len(observation.records.awaiting_first_byte) == MAX_AWAITING_FIRST_BYTE
    assert route.tracker.pending == 5000
    observation.upstream_direction.feed(memoryview(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"))
    assert observation.records.awaiting_first_byte == []


def _sink_with_tap_and_recording():
    from mcp_sidecar.forward.metrics import Metrics
    from mcp_sidecar.forward.observation import Observation, RouteObservation
    from mcp_sidecar.forward.tap import TapHub
    from mcp_sidecar.observe.mcp import McpTracker
    from mcp_sidecar.observe.quality import Quality
    from mcp_sidecar.observe.tap import TapFilter

    route = RouteObservation("r", Metrics(), McpTracker())
    hub = TapHub([route])
    tap = hub.subscribe(TapFilter("r"), 100)
    recording = hub.subscribe_lines(TapFilter("r", lines=True), 1 << 20)
    return route, Observation(route, 1, Quality(), "http", clock=lambda: 0.0), tap, recording


@settings(max_examples=100, deadline=None)
@given(st.lists(_ASKED, min_size=1, max_size=4), st.lists(_ANSWERED, min_size=1, max_size=4))
def test_any_json_in_any_member_over_a_websocket_and_an_event_stream_is_observed_without_a_defect(
    asked, answered
) -> None:
    """The same over MCP's other two carriers: text frames of a WebSocket (the
    client's masked), and the events of a POST answered by an event stream."""
    from wsproto.connection import Connection as WsConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import TextMessage

    client, server = WsConnection(ConnectionType.CLIENT), WsConnection(ConnectionType.SERVER)
    route, observation, _tap, recording = _sink_with_tap_and_recording()
    observation.client_direction.feed(
        memoryview(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    )
    observation.upstream_direction.feed(
        memoryview(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    )
    for m in asked:
        observation.client_direction.feed(memoryview(client.send(TextMessage(json.dumps({"jsonrpc": "2.0", **m})))))
    for m in answered:
        observation.upstream_direction.feed(memoryview(server.send(TextMessage(json.dumps({"jsonrpc": "2.0", **m})))))
    assert observation.mode != "failed" and route.bugs == 0
    assert len(recording.take(1 << 20)) == len(asked) + len(answered)

    route, observation, _tap, recording = _sink_with_tap_and_recording()
    body = json.dumps([{"jsonrpc": "2.0", **m} for m in asked]).encode()
    events = b"".join(b"event: message\ndata: %s\n\n" % json.dumps({"jsonrpc": "2.0", **m}).encode() for m in answered)
    observation.client_direction.feed(
        memoryview(
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    )
    observation.upstream_direction.feed(
        memoryview(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
            % (len(events), events)
        )
    )
    assert observation.mode != "failed" and route.bugs == 0
    assert len(recording.take(1 << 20)) == len(asked) + len(answered)
