"""Driving the demo through the proxy: the self-check ``proxyctl demo``
prints, and one MCP session over each transport.

Rules this module keeps:

* Clients only (the shared h11 client, trio-websocket): it never serves.
* Every step is bounded by the caller's cancel scope; a failed step is
  reported, never raised to the caller of ``self_check``.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import trio

from ..net.http import ClientExchange, HttpResponse, request
from ..observe.sse import SseEvent, SseParser


async def self_check(http_port: int, echo_port: int, host: str = "127.0.0.1") -> list[tuple[str, bool, str]]:
    """Drive one HTTP request and one echo through the proxy; report results."""
    results: list[tuple[str, bool, str]] = []
    t0 = trio.current_time()
    try:
        with trio.fail_after(5):
            response = await request(host, http_port, "/health")
        ok = response.status == 200 and response.body == b'{"status":"ok"}'
        ms = (trio.current_time() - t0) * 1000
        results.append((f"GET http://{host}:{http_port}/health", ok, f"{response.status} in {ms:.1f} ms"))
    except (OSError, trio.TooSlowError, h11.ProtocolError) as exc:
        results.append((f"GET http://{host}:{http_port}/health", False, repr(exc)))
    message = b"hello through mcp-sidecar\n"
    t0 = trio.current_time()
    try:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(host, echo_port)
            async with stream:
                await stream.send_all(message)
                await stream.send_eof()
                received = bytearray()
                while chunk := await stream.receive_some(65536):
                    received += chunk
        ms = (trio.current_time() - t0) * 1000
        results.append(
            (f"echo tcp://{host}:{echo_port}", bytes(received) == message, f"{len(received)} bytes back in {ms:.1f} ms")
        )
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        results.append((f"echo tcp://{host}:{echo_port}", False, repr(exc)))
    return results


#: The W3C trace id the demo client sends on two requests (a traceparent
#: header over HTTP, params._meta.traceparent over WebSocket).
DEMO_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def drive_mcp(host: str, http_port: int, ws_port: int) -> dict[str, int]:
    """One MCP session over each transport, through the given (proxy) ports:
    streamable HTTP (JSON and SSE replies, a slow tool with progress),
    WebSocket (subprotocol mcp, trio-websocket) and the legacy HTTP+SSE pair.
    Returns how many responses each transport got."""
    import trio_websocket

    got = {"streamable_http": 0, "websocket": 0, "http_sse": 0}
    headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]

    async def post(message: dict[str, Any], session: str | None = None, trace: str | None = None) -> HttpResponse:
        extra = [("mcp-session-id", session)] if session else []
        if trace:
            extra.append(("traceparent", f"00-{trace}-00f067aa0ba902b7-01"))
        return await request(
            host, http_port, "/mcp", method="POST", body=json.dumps(message).encode(), headers=headers + extra
        )

    init: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "demo"}},
    }
    reply = await post(init)
    session = reply.headers.get("mcp-session-id")
    await post({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    for i, (method, params) in enumerate(
        [
            ("tools/list", {}),
            ("tools/call", {"name": "echo", "arguments": {"text": "hello"}}),
            ("tools/call", {"name": "slow", "_meta": {"progressToken": "p1"}}),
        ],
        start=2,
    ):
        reply = await post(
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params},
            session,
            DEMO_TRACE_ID if method == "tools/list" else None,
        )
        got["streamable_http"] += reply.body.count(f'"id": {i}'.encode())
    if session:  # a client ends its session (the spec's SHOULD)
        await request(host, http_port, "/mcp", method="DELETE", headers=[("mcp-session-id", session)])

    async with trio_websocket.open_websocket_url(f"ws://{host}:{ws_port}/", subprotocols=["mcp"]) as ws:
        for i, (method, params) in enumerate(
            [
                ("initialize", init["params"]),
                (
                    "tools/call",
                    {
                        "name": "slow",
                        "arguments": {"steps": 2},
                        "_meta": {"traceparent": f"00-{DEMO_TRACE_ID}-b7ad6b7169203331-01"},
                    },
                ),
                ("ping", {}),
            ],
            start=1,
        ):
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}))
            while "id" not in json.loads(await ws.get_message()):
                pass  # progress notifications before the result
            got["websocket"] += 1
        await ws.ping(b"demo")

    stream = await trio.open_tcp_stream(host, http_port)
    async with stream:
        exchange = ClientExchange(stream)
        await exchange.send(f"{host}:{http_port}", "/sse", "GET", b"", [("accept", "text/event-stream")])
        parser = SseParser()
        expected = 2
        async for chunk in exchange.body():
            for sse in parser.feed(chunk):
                if not isinstance(sse, SseEvent):
                    continue
                if sse.event == "endpoint":
                    for i, method in enumerate(("initialize", "tools/list"), start=1):
                        params = init["params"] if method == "initialize" else {}
                        await request(
                            host,
                            http_port,
                            sse.data,
                            method="POST",
                            headers=headers[:1],
                            body=json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}).encode(),
                        )
                elif '"id"' in sse.data:
                    got["http_sse"] += 1
            if got["http_sse"] >= expected:
                break
    return got


def _modern_meta() -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "demo", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }


async def drive_mcp_modern(host: str, http_port: int) -> int:
    """One 2026-07-28 client through the given (proxy) port: no session, no
    initialize; ``server/discover``, tools with their mirrored headers (a
    slow one answered by a stream with progress), then a
    ``subscriptions/listen`` stream opened, acknowledged and closed by the
    client.  Returns how many answers it got (the acknowledgement included)."""
    got = 0
    base = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
    ]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("server/discover", {}),
        ("tools/list", {}),
        ("tools/call", {"name": "echo", "arguments": {"text": "hello from 2026"}}),
        ("tools/call", {"name": "slow", "arguments": {"steps": 2}}),
    ]
    for i, (method, params) in enumerate(calls, start=1):
        headers = [*base, ("mcp-method", method)]
        if "name" in params:
            headers.append(("mcp-name", params["name"]))
        body = {"jsonrpc": "2.0", "id": i, "method": method, "params": {**params, "_meta": _modern_meta()}}
        reply = await request(host, http_port, "/mcp", method="POST", body=json.dumps(body).encode(), headers=headers)
        got += reply.body.count(f'"id": {i}'.encode())
    listen = {
        "jsonrpc": "2.0",
        "id": "listen-1",
        "method": "subscriptions/listen",
        "params": {"notifications": {"toolsListChanged": True}, "_meta": _modern_meta()},
    }
    stream = await trio.open_tcp_stream(host, http_port)
    async with stream:  # closing the stream is how a 2026 client stops listening
        exchange = ClientExchange(stream)
        await exchange.send(
            f"{host}:{http_port}",
            "/mcp",
            "POST",
            json.dumps(listen).encode(),
            [*base, ("mcp-method", "subscriptions/listen")],
        )
        parser = SseParser()
        async for chunk in exchange.body():
            if any(isinstance(e, SseEvent) and "subscriptions/acknowledged" in e.data for e in parser.feed(chunk)):
                got += 1
                break
    return got
