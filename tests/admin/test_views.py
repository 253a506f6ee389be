"""The operator's views through the admin endpoint, over real traffic:
/api/mcp, /api/history, /api/config, /api/tap, the request log, route
state, quality deductions and reconnects."""

from __future__ import annotations

import io
import itertools
import json

import trio
import trio_websocket

from mcp_sidecar import logs
from mcp_sidecar.admin.history import History
from mcp_sidecar.demo.drive import DEMO_TRACE_ID, drive_mcp
from mcp_sidecar.demo.servers import serve_http, serve_ws
from mcp_sidecar.net.http import ClientExchange, request

from ..conftest import free_port, start_proxy, wait_until

TOKEN = "Adm1nT0kenForTheTapTests0123"


async def get(port: int, target: str, **kwargs):
    return await request("127.0.0.1", port, target, **kwargs)


async def get_json(port: int, target: str, **kwargs):
    reply = await get(port, target, **kwargs)
    assert reply.status == 200, (target, reply.status, reply.body[:300])
    return json.loads(reply.body)


async def mcp_proxy(nursery, **extra):
    """Routes r (the demo HTTP upstream: streamable HTTP and HTTP+SSE) and
    ws (the demo WebSocket upstream), with the admin endpoint."""
    http_up = await nursery.start(serve_http, "127.0.0.1", 0)
    ws_up = await nursery.start(serve_ws, "127.0.0.1", 0)
    doc = {
        "route": [
            {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "health_interval": 0},
            {"name": "ws", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{ws_up}", "health_interval": 0},
        ],
        **extra,
    }
    return await start_proxy(nursery, doc, admin=True)


async def test_api_mcp_per_method_per_transport_era_and_sessions(nursery) -> None:
    with trio.fail_after(30):
        proxy = await mcp_proxy(nursery)
        await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        await wait_until(lambda: proxy.route("r").active == 0 and proxy.route("ws").active == 0)
        view = await get_json(proxy.admin_port, "/api/mcp")
        assert view["window_s"] == 60.0 and [r["route"] for r in view["routes"]] == ["r", "ws"]
        r, ws = view["routes"]
        call = r["methods"]["tools/call"]
        assert (call["requests"], call["outcomes"], call["transports"], call["in_flight"]) == (
            2,
            {"ok": 2},
            {"http": 2},
            0,
        )
        assert call["rate_per_s"] > 0 and 0 < call["p50_ms"] <= call["p95_ms"] <= call["p99_ms"]
        assert r["methods"]["initialize"]["transports"] == {"http": 1, "legacy-sse": 1}
        assert list(r["transports"]) == ["legacy-sse", "http"] and list(ws["transports"]) == ["websocket"]
        assert ws["methods"]["ping"]["requests"] == 1 and ws["progress_notifications"] == 2
        # Every session ended: DELETE (streamable HTTP), the stream closed (HTTP+SSE), the socket closed (WebSocket).
        assert (r["sessions_open"], ws["sessions_open"], r["sessions"]) == (0, 0, [])
        assert (await get(proxy.admin_port, "/api/mcp?route=nope")).status == 404
        only = await get_json(proxy.admin_port, "/api/mcp?route=ws")
        assert [x["route"] for x in only["routes"]] == ["ws"]

        # An open WebSocket session is listed (its id is the connection's: no secret), then ends with it.
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{proxy.port('ws')}/", subprotocols=["mcp"]) as c:
            await c.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
            await c.get_message()
            (session,) = (await get_json(proxy.admin_port, "/api/mcp?route=ws"))["routes"][0]["sessions"]
            assert session["transport"] == "websocket" and session["requests"] == 1
            assert session["last_method"] == "initialize" and session["client"].startswith("127.0.0.1:")
        await wait_until(lambda: proxy.route("ws").active == 0)
        assert (await get_json(proxy.admin_port, "/api/mcp?route=ws"))["routes"][0]["sessions_open"] == 0


async def test_a_streamable_session_id_is_shown_hashed(nursery) -> None:
    with trio.fail_after(20):
        proxy = await mcp_proxy(nursery)
        headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
        init = await get(
            proxy.port("r"),
            "/mcp",
            method="POST",
            headers=headers,
            body=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).encode(),
        )
        session_id = init.headers["mcp-session-id"]
        await get(
            proxy.port("r"),
            "/mcp",
            method="POST",
            headers=[*headers, ("mcp-session-id", session_id)],
            body=b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}',
        )
        body = (await get(proxy.admin_port, "/api/mcp")).body.decode()
        assert session_id not in body
        sessions = json.loads(body)["routes"][0]["sessions"]
        assert any(s["session"].startswith("s-") and s["last_method"] == "tools/list" for s in sessions)


async def test_history_is_bounded_and_lines_up(nursery) -> None:
    history = History(5.0, 3)
    for i in range(5):
        methods = {"r": {"ping": {"rps": float(i)}}} if i >= 3 else {"r": {}}
        history.record(100.0 + 5 * i, {"r": {"connections": i}}, methods)
    data = history.as_json()
    assert (data["points"], data["t"]) == (3, [110.0, 115.0, 120.0])
    assert data["routes"]["r"]["connections"] == [2, 3, 4]
    assert data["methods"]["r"]["ping"]["rps"] == [None, 3.0, 4.0]  # a method first seen later is padded
    assert all(len(column) == 3 for column in data["routes"]["r"].values())

    with trio.fail_after(30):
        proxy = await mcp_proxy(nursery)
        admin = proxy.admin
        assert admin.history is not None and admin.history.length == 180  # 15 minutes at 5 s
        admin.source.sample(5.0)
        await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        routes, methods = admin.source.sample(5.0)
        admin.history.record(1.0, routes, methods)
        got = await get_json(proxy.admin_port, "/api/history?route=r")
        assert got["interval_s"] == 5.0 and list(got["routes"]) == ["r"]
        at = got["t"].index(1.0)  # the point recorded here (the sampler's own task may have ticked too)
        series = got["routes"]["r"]
        assert all(len(column) == got["points"] for column in series.values())
        assert series["mcp_rps"][at] > 0 and series["bytes_in_per_s"][at] > 0 and series["p95_ms"][at] > 0
        assert set(got["methods"]["r"]) >= {"initialize", "tools/list", "tools/call"}
        assert got["methods"]["r"]["tools/call"]["rps"][at] > 0


async def test_history_off(nursery) -> None:
    with trio.fail_after(10):
        proxy = await mcp_proxy(nursery, observe={"history": 0})
        reply = await get(proxy.admin_port, "/api/history")
        assert reply.status == 404 and b"history is off" in reply.body


async def test_api_config_is_config_show_without_secrets(nursery) -> None:
    with trio.fail_after(10):
        proxy = await mcp_proxy(nursery, admin={"token": TOKEN})
        reply = await get(proxy.admin_port, "/api/config")
        assert TOKEN not in reply.body.decode()
        doc = json.loads(reply.body)
        assert [r["name"] for r in doc["config"]["route"]] == ["r", "ws"]
        assert doc["config"]["observe"]["history"] == "900s" and doc["secrets_set"] == ["admin.token (config)"]
        from mcp_sidecar.config.render import render_toml

        assert doc["toml"] == render_toml(proxy.config)


async def _tap(port: int, query: str = "", token: str | None = TOKEN):
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    exchange = ClientExchange(stream)
    headers = [("authorization", f"Bearer {token}")] if token else []
    await exchange.send(f"127.0.0.1:{port}", "/api/tap" + query, "GET", b"", headers)
    head = await exchange.head()
    return stream, exchange, head


async def _lines(exchange, count: int) -> list[dict]:
    out, pending = [], b""
    async for chunk in exchange.body():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out += [json.loads(line) for line in lines if line]
        if len(out) >= count:
            break
    return out


async def test_tap_streams_messages_redacted_and_costs_nothing_when_gone(nursery) -> None:
    with trio.fail_after(30):
        proxy = await mcp_proxy(nursery, admin={"token": TOKEN})
        route = proxy.route("r").observation
        assert route.taps == ()  # nobody taps: the hot path tests an empty tuple
        _, _, refused = await _tap(proxy.admin_port, token=None)
        assert refused.status_code == 401
        stream, exchange, head = await _tap(proxy.admin_port, "?route=r&method=tools/call")
        assert head.status_code == 200 and dict(head.headers)[b"content-type"] == b"application/x-ndjson"
        assert len(route.taps) == 1 and proxy.route("ws").observation.taps == ()
        headers = [("content-type", "application/json"), ("accept", "application/json")]
        secret = "hunter2-Pa55word-never-shown"
        await get(
            proxy.port("r"),
            "/mcp",
            method="POST",
            headers=headers,
            body=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).encode(),
        )
        await get(
            proxy.port("r"),
            "/mcp",
            method="POST",
            headers=headers,
            body=json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 7,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "hi", "password": secret}},
                }
            ).encode(),
        )
        first, request_rec, response_rec = await _lines(exchange, 3)
        about = first["tap"]
        assert {k: about[k] for k in ("route", "method", "target", "max_bytes", "queue")} == {
            "route": "r",
            "method": "tools/call",
            "target": None,
            "max_bytes": None,
            "queue": 1000,
        }
        # What a recording's header needs: the sidecar's version, the routes' settings, the clocks.
        assert about["sidecar"] and set(about["routes"]) == {"r", "ws"} and about["started_mono"] > 0
        assert (request_rec["kind"], request_rec["method"], request_rec["id"], request_rec["direction"]) == (
            "request",
            "tools/call",
            7,
            "client_to_upstream",
        )
        assert secret not in json.dumps(request_rec) and '"password":"REDACTED"' in request_rec["params"]
        assert (response_rec["kind"], response_rec["method"], response_rec["outcome"]) == (
            "response",
            "tools/call",
            "ok",
        )
        assert response_rec["latency_ms"] > 0 and "hi" in response_rec["result"]
        await stream.aclose()
        await wait_until(lambda: route.taps == () and not proxy.proxy.taps.subscribers)


async def test_a_slow_tap_loses_messages_counted_and_told(nursery) -> None:
    with trio.fail_after(30):
        proxy = await mcp_proxy(nursery, observe={"tap_queue": 2}, admin={"open_on_loopback": True})
        stream, exchange, head = await _tap(proxy.admin_port, "?route=ws", token=None)  # open on loopback: allowed
        assert head.status_code == 200
        (subscriber,) = proxy.proxy.taps.subscribers
        # A burst the reader cannot keep up with: all offered before the admin task runs again.
        for i in range(10):
            subscriber.offer({"route": "ws", "method": "ping", "n": i})
        assert (subscriber.delivered, subscriber.dropped) == (2, 8)
        lines = await _lines(exchange, 4)
        assert lines[1:] == [
            {"dropped": 8, "dropped_total": 8},  # said before the next message it sends
            {"route": "ws", "method": "ping", "n": 0},
            {"route": "ws", "method": "ping", "n": 1},
        ]
        # Forwarding never waited for the tap: a whole MCP session passes while nobody reads it.
        got = await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        assert got["websocket"] == 3
        metrics = (await get(proxy.admin_port, "/metrics")).body.decode()
        dropped = float(
            next(line.split()[1] for line in metrics.splitlines() if line.startswith("mcp_sidecar_tap_dropped_total"))
        )
        # (the session's own messages fit: the admin task moves them into the socket's buffers)
        assert dropped >= 8 and proxy.proxy.taps.dropped == dropped
        await stream.aclose()


async def test_tap_limits_and_bad_queries(nursery) -> None:
    with trio.fail_after(20):
        proxy = await mcp_proxy(nursery, admin={"open_on_loopback": True})
        for query, status in (
            ("?method=" + "x" * 200, 400),
            ("?method=a%01b", 400),
            ("?route=nope", 404),
            ("?limit=0", 400),
            ("?duration=x", 400),
        ):
            _, _, head = await _tap(proxy.admin_port, query, token=None)
            assert head.status_code == status, query
        stream, exchange, head = await _tap(proxy.admin_port, "?duration=0.2", token=None)
        lines = await _lines(exchange, 99)  # ends by itself after 0.2 s
        assert len(lines) == 1 and (lines[0]["tap"]["route"], lines[0]["tap"]["queue"]) == (None, 1000)
        assert exchange.conn.their_state.__name__ in ("DONE", "MUST_CLOSE")
        await stream.aclose()


async def test_request_log_lines_for_every_transport(nursery) -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    try:
        with trio.fail_after(30):
            proxy = await mcp_proxy(nursery, observe={"request_log": True})
            await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
            await wait_until(lambda: proxy.route("r").active == 0 and proxy.route("ws").active == 0)
    finally:
        logs.configure("text", "warning")
    lines = [json.loads(line) for line in out.getvalue().splitlines() if '"mcp.request"' in line]
    seen = {(line["route"], line["transport"], line["method"]) for line in lines}
    assert seen == {
        ("r", "http", "initialize"),
        ("r", "http", "tools/list"),
        ("r", "http", "tools/call"),
        ("r", "legacy-sse", "initialize"),
        ("r", "legacy-sse", "tools/list"),
        ("ws", "websocket", "initialize"),
        ("ws", "websocket", "tools/call"),
        ("ws", "websocket", "ping"),
    }
    assert len(lines) == 9  # two tools/call over streamable HTTP
    for line in lines:
        assert line["outcome"] == "ok" and line["latency_ms"] > 0 and line["request_bytes"] > 0
        assert line["response_bytes"] > 0 and line["from"] == "client" and isinstance(line["id"], int)
    traced = {(line["transport"], line["method"]) for line in lines if line["trace_id"] == DEMO_TRACE_ID}
    assert traced == {("http", "tools/list"), ("websocket", "tools/call")}  # header, and params._meta


async def test_request_log_is_off_by_default_and_per_route(nursery) -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    try:
        with trio.fail_after(30):
            http_up = await nursery.start(serve_http, "127.0.0.1", 0)
            ws_up = await nursery.start(serve_ws, "127.0.0.1", 0)
            proxy = await start_proxy(
                nursery,
                {
                    "route": [
                        {
                            "name": "r",
                            "listen": "127.0.0.1:0",
                            "upstream": f"127.0.0.1:{http_up}",
                            "health_interval": 0,
                        },
                        {
                            "name": "ws",
                            "listen": "127.0.0.1:0",
                            "upstream": f"127.0.0.1:{ws_up}",
                            "health_interval": 0,
                            "request_log": True,
                            "request_log_sample": 0.5,
                        },
                    ]
                },
                admin=True,
            )
            await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
            await wait_until(lambda: proxy.route("ws").active == 0)
            view = await get_json(proxy.admin_port, "/api/mcp")
    finally:
        logs.configure("text", "warning")
    lines = [json.loads(line) for line in out.getvalue().splitlines() if '"mcp.request"' in line]
    assert [line["route"] for line in lines] == ["ws"]  # one of the three WebSocket requests... sampled 1 in 2
    assert view["routes"][0]["request_log"] is None
    assert view["routes"][1]["request_log"] == {
        "sample": 0.5,
        "rate_per_s": 100,
        "written": 1,
        "sampled_out": 2,
        "over_rate": 0,
    }


async def test_route_state_says_why_and_since_when(nursery) -> None:
    with trio.fail_after(20):
        dead = free_port()
        proxy = await start_proxy(
            nursery,
            {
                "route": [
                    {
                        "name": "down",
                        "listen": "127.0.0.1:0",
                        "upstream": f"127.0.0.1:{dead}",
                        "health_interval": "0.05s",
                        "health_fall": 1,
                    }
                ]
            },
            admin=True,
        )
        await wait_until(lambda: proxy.route("down").health.state is False)
        (route,) = (await get_json(proxy.admin_port, "/api/status"))["routes"]
        assert route["state"] == "down" and route["reason"].startswith(f"upstream 127.0.0.1:{dead} is down (")
        assert route["since_unix"] > 0
        status = json.loads((await get(proxy.admin_port, "/api/status")).body)
        assert status["ready"] is False and any("is down" in r for r in status["reasons"])


async def test_short_requests_are_not_reconnects_but_streams_are(nursery) -> None:
    """Regression: several short POSTs from one client were counted as
    reconnects and cost a long-lived SSE stream's grade 25 points."""
    with trio.fail_after(30):
        proxy = await mcp_proxy(nursery)
        port = proxy.port("r")
        for _ in range(8):  # eight short requests, eight connections
            await get(port, "/health")
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        exchange = ClientExchange(stream)
        await exchange.send(f"127.0.0.1:{port}", "/sse", "GET", b"", [("accept", "text/event-stream")])
        await exchange.head()
        await wait_until(lambda: any(c.protocol == "sse" for c in proxy.route("r").connections.values()))
        (conn,) = list(proxy.route("r").connections.values())
        assert conn.reconnects == 0
        assert conn.as_json(trio.current_time())["quality"]["deductions"] == []
        await stream.aclose()
        # Streams that come back again and again are reconnects: the seventh has six before it.
        for i in range(7):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            exchange = ClientExchange(stream)
            await exchange.send(f"127.0.0.1:{port}", "/sse", "GET", b"", [("accept", "text/event-stream")])
            await exchange.head()
            await wait_until(lambda: any(c.protocol == "sse" for c in proxy.route("r").connections.values()))
            if i < 6:
                await stream.aclose()
                await wait_until(lambda: proxy.route("r").active == 0)
        (conn,) = proxy.route("r").connections.values()
        assert conn.reconnects == 7  # the first stream above and six of these
        detail = await get_json(proxy.admin_port, f"/api/connections/{conn.id}")
        assert detail["quality"]["reconnects"] == 7
        assert detail["quality"]["deductions"] == [
            {"points": 25, "reason": "frequent reconnects: 7 earlier streams from this client in 10 min (> 5)"}
        ]
        await stream.aclose()


async def test_the_history_ticks_on_interval_boundaries(nursery) -> None:
    with trio.fail_after(15):
        proxy = await mcp_proxy(nursery, observe={"history": "10s", "history_interval": "1s"})
        history = proxy.admin.history
        assert history.length == 10
        await wait_until(lambda: len(history.t) >= 3, interval=0.05)
        t = list(history.t)
        assert all(b - a == 1.0 for a, b in itertools.pairwise(t)) and t[0] == int(
            t[0]
        )  # one point per second, aligned
        got = await get_json(proxy.admin_port, "/api/history")
        assert got["length"] == 10 and got["routes"]["r"]["connections"][-1] == 0
