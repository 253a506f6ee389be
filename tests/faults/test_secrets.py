"""Secrets through edge paths: a peer's malformed header, a WebSocket close
reason, an invalid webhook URL -- none reaches a log, the API or an error."""

from __future__ import annotations

import io
import json
import os

import trio

from mcp_sidecar import logs
from mcp_sidecar.demo.servers import serve_ws
from mcp_sidecar.net.http import request

from ..conftest import connect, receive_exactly, route_doc, run_proxyctl, start_proxy, wait_until

SECRET = "Zs3cr3tT0kenValue0123456789"


async def test_a_malformed_cookie_line_never_reaches_the_log(nursery, echo_port) -> None:
    stream = io.StringIO()
    logs.configure("json", "debug", stream=stream)
    try:
        with trio.fail_after(10):
            proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"))
            client = await connect(proxy.port())
            request_bytes = f"GET / HTTP/1.1\r\nHost: x\r\nCookie session={SECRET}\r\n\r\n".encode()
            await client.send_all(request_bytes)
            assert await receive_exactly(client, len(request_bytes)) == request_bytes  # forwarded unchanged
            await wait_until(lambda: '"observer.gave_up"' in stream.getvalue())
            await client.aclose()
        text = stream.getvalue()
        assert "Invalid header token" in text  # the fault, named by llhttp
        assert SECRET not in text
    finally:
        logs.configure("text", "warning")


async def test_a_websocket_close_reason_is_redacted_in_the_api(nursery) -> None:
    with trio.fail_after(10):
        upstream = await nursery.start(serve_ws, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"), admin=True)
        client = await connect(proxy.port())
        await client.send_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await client.receive_some(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        reason = f"auth failed for token {SECRET}".encode()
        payload = (4001).to_bytes(2, "big") + reason
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        await client.send_all(bytes([0x88, 0x80 | len(payload)]) + key + masked)
        conn = next(iter(proxy.route().connections.values()))
        await wait_until(lambda: conn.observation.close_frame is not None)
        listing = (await request("127.0.0.1", proxy.admin_port, "/api/connections")).body
        close = json.loads(listing)["connections"][0]["observed"]["websocket"]["close"]
        assert close["code"] == 4001 and close["reason"] == "auth failed for token REDACTED"
        assert SECRET.encode() not in listing
        await client.aclose()


def test_an_invalid_webhook_url_is_not_echoed(tmp_path) -> None:
    path = tmp_path / "sidecar.toml"
    path.write_text(
        f'[supervisor]\nalert_webhook = "htps://hooks.slack.com/services/T0/B0/{SECRET}"\n'
        '[[route]]\nlisten = "127.0.0.1:7000"\nupstream = "localhost:8000"\n'
    )
    result = run_proxyctl("config", "validate", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"proxyctl: error: {path}: supervisor.alert_webhook: expected an http:// or https:// "
        "URL (scheme 'htps'); the value is not shown: a webhook URL is a secret\n"
    )
    assert SECRET not in result.stdout + result.stderr
