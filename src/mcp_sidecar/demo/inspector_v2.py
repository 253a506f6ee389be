"""An Inspector-v2-like upstream for tests and ``proxyctl check`` development.

It reproduces what matters to a forwarder of the real MCP Inspector 2.x,
from its documented behaviour (no code of it): one origin serves the page
and its ``/api``; the page embeds the API token
(``window.__INSPECTOR_API_TOKEN__``), which API requests carry as
``x-mcp-remote-auth: Bearer <token>``; ``/api/config`` advertises the sandbox
URL; browser requests are refused with 403 when their ``Origin`` is not in
``ALLOWED_ORIGINS`` (requests without ``Origin`` pass, as in v2) or their
``Host`` is not allowed; the MCP traffic between the page and its backend is
wrapped in v2's API envelope::

    POST /api/mcp/connect     {"config": {...}}              -> {"sessionId": S}
    POST /api/mcp/send        {"sessionId": S, "message": M}  -> {"ok": true}
    GET  /api/mcp/events?sessionId=S   SSE: ":", then
                              event: message / data: {"type": "message", "data": M'}
    POST /api/mcp/disconnect  {"sessionId": S}
    GET  /api/servers/events  SSE: one comment, then silence

Nothing is ever executed: ``connect`` records the configuration it was sent
(``InspectorV2.started``), which is what a test of the command-execution
path looks at.  The sandbox origin serves ``/sandbox`` with a
``frame-ancestors`` policy listing the allowed origins.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from ..net.http import RequestLimits, RequestRejected, ServerConnection
from .servers import mcp_answer, progress_notifications

#: The header v2's page sends its token in (as ``Bearer <token>``).
TOKEN_HEADER = "x-mcp-remote-auth"
_LIMITS = RequestLimits(
    first_byte_s=30.0, head_s=30.0, request_s=30.0, max_head_bytes=64 * 1024, max_body_bytes=1024 * 1024, send_s=30.0
)


@dataclass
class InspectorV2:
    """The demo's settings (as v2's environment) and what it was asked to do."""

    client_port: int = 6274
    allowed_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    sandbox_url: str | None = None
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    #: The configurations ``/api/mcp/connect`` received (a real v2 would start these).
    started: list[dict[str, Any]] = field(default_factory=list)
    #: Backend sessions: where their messages go, and where the event stream reads them.
    sessions: dict[str, tuple[trio.MemorySendChannel[dict[str, Any]], trio.MemoryReceiveChannel[dict[str, Any]]]] = (
        field(default_factory=dict)
    )

    def origins(self) -> list[str]:
        """ALLOWED_ORIGINS, else v2's defaults on CLIENT_PORT."""
        return self.allowed_origins or [f"http://{h}:{self.client_port}" for h in ("localhost", "127.0.0.1", "[::1]")]

    def host_allowed(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        return name in ("localhost", "127.0.0.1", "::1") or _is_ip(name) or name in self.allowed_hosts


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


async def _serve_one(stream: trio.SocketStream, app: InspectorV2) -> None:
    http = ServerConnection(stream, _LIMITS)
    try:
        async with stream:
            while True:
                got = await http.read_request()
                if got is None:
                    return
                if not await _route(http, app, *got):
                    return
                if not http.next_cycle():
                    return
    except (
        RequestRejected,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        h11.LocalProtocolError,
        trio.TooSlowError,
    ):
        pass


async def _route(http: ServerConnection, app: InspectorV2, request: h11.Request, body: bytes) -> bool:
    """Answer one request; False when the connection is done (a stream ended)."""
    url = urllib.parse.urlsplit(request.target.decode("ascii", "replace"))
    method = request.method.decode()
    if not app.host_allowed(_header(request, b"host") or ""):
        await http.respond(403, b'{"error":"host not allowed"}')
        return True
    origin = _header(request, b"origin")
    if origin is not None and origin not in app.origins():
        await http.respond(403, b'{"error":"origin not allowed"}')
        return True
    if method == "GET" and url.path == "/":
        page = (
            f"<!doctype html><title>MCP Inspector</title><script>window.__INSPECTOR_API_TOKEN__ = "
            f"{json.dumps(app.token)};</script>"
        ).encode()
        await http.respond(200, page, "text/html; charset=utf-8")
        return True
    if url.path.startswith("/api/") and _header(request, TOKEN_HEADER.encode()) != f"Bearer {app.token}":
        await http.respond(401, b'{"error":"Unauthorized"}')
        return True
    if method == "GET" and url.path == "/api/config":
        sandbox = app.sandbox_url or f"http://127.0.0.1:{app.client_port + 1}/sandbox"
        await http.respond(200, json.dumps({"sandboxUrl": sandbox}).encode())
        return True
    if method == "GET" and url.path == "/api/servers/events":
        await _events(http, None)
        return False
    if method == "GET" and url.path == "/api/mcp/events":
        session = urllib.parse.parse_qs(url.query).get("sessionId", [""])[0]
        pair = app.sessions.get(session)
        await _events(http, pair[1] if pair is not None else None)
        return False
    if method == "POST" and url.path.startswith("/api/mcp/"):
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            await http.respond(400, b'{"error":"invalid json"}')
            return True
        await _api(http, app, url.path, payload)
        return True
    await http.respond(404, b'{"error":"not found"}')
    return True


async def _api(http: ServerConnection, app: InspectorV2, path: str, payload: dict[str, Any]) -> None:
    if path == "/api/mcp/connect":
        app.started.append(payload.get("config") or {})
        session = secrets.token_hex(8)
        app.sessions[session] = trio.open_memory_channel(256)
        await http.respond(200, json.dumps({"sessionId": session}).encode())
    elif path == "/api/mcp/send":
        pair = app.sessions.get(payload.get("sessionId", ""))
        message = payload.get("message")
        if pair is None or not isinstance(message, dict):
            await http.respond(404, b'{"error":"unknown session"}')
            return
        for note in progress_notifications(message):
            pair[0].send_nowait({"type": "message", "data": note})
        answer = mcp_answer(message)
        if answer is not None:
            pair[0].send_nowait({"type": "message", "data": answer})
        await http.respond(200, b'{"ok":true}')
    elif path == "/api/mcp/disconnect":
        pair = app.sessions.pop(payload.get("sessionId", ""), None)
        if pair is not None:
            pair[0].close()
        await http.respond(200, b'{"ok":true}')
    else:
        await http.respond(404, b'{"error":"not found"}')


async def _events(http: ServerConnection, receive: trio.MemoryReceiveChannel[dict[str, Any]] | None) -> None:
    """An event stream: a first comment, then the session's messages (or silence)."""
    await http.send(
        h11.Response(status_code=200, headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")])
    )
    await http.send(h11.Data(data=b":\n\n"))
    async with trio.open_nursery() as nursery:

        async def relay(channel: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
            async for message in channel:
                await http.send(h11.Data(data=b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"))

        if receive is not None:
            nursery.start_soon(relay, receive)
        while await http.stream.receive_some(4096):  # until the browser aborts the stream
            pass
        nursery.cancel_scope.cancel()


async def serve_inspector_v2(
    app: InspectorV2,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The page and its /api on one port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(lambda stream: _serve_one(stream, app), listeners)  # type: ignore[arg-type]  # (TCP listeners: SocketStreams)


async def serve_sandbox(
    app: InspectorV2,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The sandbox origin: a page the UI frames, allowed only inside the allowed origins."""

    async def handler(stream: trio.SocketStream) -> None:
        http = ServerConnection(stream, _LIMITS)
        try:
            async with stream:
                got = await http.read_request()
                if got is None:
                    return
                await http.respond(
                    200,
                    b"<!doctype html><title>sandbox</title>",
                    "text/html; charset=utf-8",
                    [("content-security-policy", "frame-ancestors " + " ".join(app.origins()))],
                )
        except (RequestRejected, trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)
