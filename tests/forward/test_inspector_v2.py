"""Inspector v2 through the sidecar: the gate closes the command-execution path,
the API envelope is observed, dropped streams are counted, the check finds
misconfiguration.  The upstream is the v2-like demo (demo/inspector_v2.py)."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.cli.diagnose import Report, check_inspector_v2
from mcp_sidecar.config.addresses import HostPort
from mcp_sidecar.demo.inspector_v2 import TOKEN_HEADER, InspectorV2, serve_inspector_v2
from mcp_sidecar.net.gate import TOKEN_PARAM, cookie_name
from mcp_sidecar.net.http import request

from ..conftest import connect, route_doc, start_proxy, wait_until

GATE = "gate-token-for-v2-tests-0123456789"


def metric(proxy, name: str, **labels) -> float:
    wanted = {"route": "r", **labels}
    return sum(
        s.value
        for f in proxy.registry().collect()
        for s in f.samples
        if s.name == name and wanted.items() <= s.labels.items()
    )


async def open_events(port: int, session: str, token: str, extra: str = "") -> tuple[trio.SocketStream, bytearray]:
    """The session's event stream (GET /api/mcp/events), opened as a browser does; its head read."""
    stream = await connect(port)
    await stream.send_all(
        f"GET /api/mcp/events?sessionId={session} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"{extra}{TOKEN_HEADER}: Bearer {token}\r\n\r\n".encode()
    )
    received = bytearray()
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some(4096)
    return stream, received


async def test_the_gate_closes_the_command_execution_path(nursery) -> None:
    """The v2 attack: load the page, read the embedded token, POST a command
    with no Origin.  Behind the gate, neither the page nor the API answer."""
    with trio.fail_after(10):
        app = InspectorV2()
        upstream = await nursery.start(serve_inspector_v2, app, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}", gate="token", gate_token=GATE))
        port = proxy.port()
        page = await request("127.0.0.1", port, "/")
        assert page.status == 401 and app.token.encode() not in page.body
        attack = {"config": {"command": "/usr/bin/touch", "args": ["/tmp/pwned"]}}
        for headers in (
            [(TOKEN_HEADER, f"Bearer {app.token}")],
            [(TOKEN_HEADER, f"Bearer {app.token}"), ("authorization", "Bearer guess")],
        ):
            reply = await request(
                "127.0.0.1",
                port,
                "/api/mcp/connect",
                method="POST",
                body=json.dumps(attack).encode(),
                headers=[("content-type", "application/json"), *headers],
            )
            assert reply.status == 401
        assert app.started == []  # nothing reached the backend
        # Without the sidecar's gate the same request does start it (the demo only records it).
        direct = await request(
            "127.0.0.1",
            upstream,
            "/api/mcp/connect",
            method="POST",
            body=json.dumps(attack).encode(),
            headers=[("content-type", "application/json"), (TOKEN_HEADER, f"Bearer {app.token}")],
        )
        assert direct.status == 200 and app.started == [attack["config"]]


async def test_a_browser_session_through_the_gate_is_observed(nursery) -> None:
    with trio.fail_after(15):
        app = InspectorV2()
        upstream = await nursery.start(serve_inspector_v2, app, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}", gate="token", gate_token=GATE))
        port = proxy.port()
        first = await request("127.0.0.1", port, f"/?{TOKEN_PARAM}={GATE}")
        assert first.status == 303
        cookie = ("cookie", f"{cookie_name(GATE)}={GATE}")
        page = await request("127.0.0.1", port, "/", headers=[cookie])
        assert page.status == 200 and app.token.encode() in page.body  # the page, for the admitted browser only
        api = [cookie, (TOKEN_HEADER, f"Bearer {app.token}"), ("content-type", "application/json")]
        session = json.loads(
            (
                await request(
                    "127.0.0.1",
                    port,
                    "/api/mcp/connect",
                    method="POST",
                    body=b'{"config":{"command":"server"}}',
                    headers=api,
                )
            ).body
        )["sessionId"]
        # The event stream, as a browser holds it open.
        stream, received = await open_events(port, session, app.token, f"Cookie: {cookie[1]}\r\n")
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": "t"}},
        }
        sent = await request(
            "127.0.0.1",
            port,
            "/api/mcp/send",
            method="POST",
            body=json.dumps({"sessionId": session, "message": call}).encode(),
            headers=api,
        )
        assert sent.status == 200
        while received.count(b"data: ") < 4:  # three progress notifications and the result
            received += await stream.receive_some(4096)
        await wait_until(
            lambda: metric(proxy, "mcp_requests_total", method="tools/call", status="ok", transport="inspector-v2") == 1
        )
        assert proxy.route().observation.tracker.progress == 3
        assert metric(proxy, "mcp_response_duration_seconds_count", transport="inspector-v2") == 1
        # The browser drops the stream: counted as an aborted exchange, with its duration.
        await stream.aclose()
        await wait_until(lambda: metric(proxy, "mcp_sidecar_http_duration_seconds_count", outcome="aborted") == 1)
        # The page, connect and send (the 303 was the gate's own: nothing upstream to observe).
        assert metric(proxy, "mcp_sidecar_http_duration_seconds_count", outcome="complete") == 3


async def test_check_tells_what_v2_needs_for_the_forwarded_origin(nursery) -> None:
    with trio.fail_after(15):
        for configured in (False, True):
            app = InspectorV2()
            upstream = await nursery.start(serve_inspector_v2, app, "127.0.0.1", 0)
            proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}", gate="token", gate_token=GATE))
            origin = f"http://127.0.0.1:{proxy.port()}"
            env = {
                "ALLOWED_ORIGINS": f"http://localhost:6274,{origin}",
                "MCP_SANDBOX_FULL_ADDRESS": "http://127.0.0.1:16275/sandbox",
            }
            if configured:
                app.allowed_origins = env["ALLOWED_ORIGINS"].split(",")
                app.sandbox_url = env["MCP_SANDBOX_FULL_ADDRESS"]
            report = Report("route inspector-ui", [])
            await check_inspector_v2(report, HostPort("127.0.0.1", proxy.port()), env, origin, GATE, 5.0)
            if configured:
                assert (report.verdict, report.recommendations) == ("healthy", [])
            else:
                assert report.verdict == "degraded"
                assert report.recommendations == [
                    f"the Inspector advertises sandboxUrl 'http://127.0.0.1:{app.client_port + 1}/sandbox', so "
                    "browsers would go around the sidecar: start it with "
                    "MCP_SANDBOX_FULL_ADDRESS=http://127.0.0.1:16275/sandbox",
                    f"the Inspector refuses the forwarded origin {origin} (403): start it with "
                    f"ALLOWED_ORIGINS=http://localhost:6274,{origin}",
                ]
