"""The access gate end to end: a real upstream, h11 and trio-websocket clients."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from mcp_sidecar.demo.servers import serve_http, serve_ws
from mcp_sidecar.net.gate import TOKEN_PARAM, UNAUTHORIZED, cookie_name
from mcp_sidecar.net.http import request, request_on

from ..conftest import connect, receive_all, route_doc, start_proxy, tls_connect, wait_until

TOKEN = "gate-token-for-tests-0123456789"


def gated(upstream: str, **extra):
    return route_doc(upstream, gate="token", gate_token=TOKEN, **extra)


def gate_count(proxy, result: str) -> float:
    return proxy.registry().get_sample_value("mcp_sidecar_gate_requests_total", {"route": "r", "result": result}) or 0.0


async def test_without_the_token_nothing_reaches_the_upstream(nursery, scripted_upstream) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, gated(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        await client.send_all(b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await receive_all(client)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401 Unauthorized\r\n") and body == UNAUTHORIZED.encode()
        assert b'WWW-Authenticate: Bearer realm="mcp-sidecar"' in head
        with pytest.raises(trio.WouldBlock):
            scripted_upstream.accepted.receive_nowait()  # no upstream connection was even made
        assert proxy.route().ended.get("gate_refused") == 1
        assert gate_count(proxy, "missing") == 1


async def test_url_token_cookie_and_bearer(nursery) -> None:
    with trio.fail_after(10):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, gated(f"127.0.0.1:{upstream}"))
        port = proxy.port()
        first = await request("127.0.0.1", port, f"/health?{TOKEN_PARAM}={TOKEN}&keep=1")
        assert first.status == 303 and first.headers["location"] == "/health?keep=1"
        cookie = first.headers["set-cookie"]
        assert cookie == f"{cookie_name(TOKEN)}={TOKEN}; Path=/; HttpOnly; SameSite=Strict"
        with_cookie = await request("127.0.0.1", port, "/health?keep=1", headers=[("cookie", cookie.split(";")[0])])
        assert with_cookie.status == 200
        bearer = await request("127.0.0.1", port, "/health", headers=[("authorization", f"Bearer {TOKEN}")])
        assert bearer.status == 200
        wrong = await request("127.0.0.1", port, "/health", headers=[("authorization", "Bearer wrong")])
        assert wrong.status == 401
        assert (
            gate_count(proxy, "url"),
            gate_count(proxy, "cookie"),
            gate_count(proxy, "bearer"),
            gate_count(proxy, "invalid"),
        ) == (1, 1, 1, 1)


async def test_each_request_on_a_keep_alive_connection_is_checked(nursery, scripted_upstream) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, gated(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        good = f"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        await client.send_all(good)
        upstream = await scripted_upstream.accepted.receive()
        # The request as sent, minus the gate's own credential.
        assert await upstream.receive_some(4096) == b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        await upstream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert await client.receive_some(4096) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        await client.send_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")  # no token this time
        assert await receive_all(client) == b""  # closed: nothing of ours could interleave with a response
        assert await receive_all(upstream) == b""  # the upstream saw only the first request
        await wait_until(lambda: proxy.route().ended.get("gate_refused") == 1)


async def test_websocket_upgrade_needs_the_token(nursery) -> None:
    with trio.fail_after(10):
        upstream = await nursery.start(serve_ws, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, gated(f"127.0.0.1:{upstream}"))
        with pytest.raises(trio_websocket.HandshakeError) as refused:
            async with trio_websocket.open_websocket("127.0.0.1", proxy.port(), "/ws", use_ssl=False):
                pass
        assert getattr(refused.value, "status_code", None) == 401
        async with trio_websocket.open_websocket(
            "127.0.0.1",
            proxy.port(),
            "/ws",
            use_ssl=False,
            extra_headers=[(b"cookie", f"{cookie_name(TOKEN)}={TOKEN}".encode())],
        ) as ws:
            await ws.send_message('{"jsonrpc":"2.0","id":7,"method":"ping"}')
            assert '"id":7' in (await ws.get_message()).replace(" ", "")


async def test_gate_over_tls_sets_a_secure_cookie(nursery, tls_files) -> None:
    with trio.fail_after(10):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(
            nursery, gated(f"127.0.0.1:{upstream}", tls_cert=str(tls_files.cert), tls_key=str(tls_files.key))
        )
        stream = await tls_connect(proxy.port(), tls_files)
        response = await request_on(stream, "localhost", f"/?{TOKEN_PARAM}={TOKEN}")
        assert response.status == 303
        assert response.headers["set-cookie"].endswith("; HttpOnly; SameSite=Strict; Secure")


async def test_gate_needs_http() -> None:
    from mcp_sidecar.config.parse import build_config
    from mcp_sidecar.errors import ConfigError

    with pytest.raises(ConfigError, match=r"route\[1\]\.gate: needs HTTP"):
        build_config(route_doc("127.0.0.1:1", gate="token", protocol="tcp"))
