"""The embedded demo upstream: a TCP echo service and a small HTTP service.

``proxyctl demo`` runs both behind the real forwarding path, so a newcomer
sees the proxy work with nothing else installed; the tests use the same
servers as their upstream.  The HTTP service is sans-io h11 wrapped in
thin trio code, like everything else here.

HTTP endpoints::

    GET  /            an index page
    GET  /health      {"status": "ok"}
    POST /echo        the request body back, same Content-Type
    GET  /bytes?n=N   N bytes of a repeating pattern (N <= 64 MiB)
    GET  /ticks?n=N&interval=S
                      a text/event-stream of N events, S seconds apart
    POST /mcp         MCP streamable HTTP (2025-03-26 .. 2025-11-25):
                      initialize, ping, tools/list, tools/call (echo, and
                      slow: progress notifications, then the result; with
                      "buffered": true they are held and written at once,
                      as behind a buffering intermediary); JSON
                      reply, or SSE when the client accepts only
                      text/event-stream (and always for slow).  And the
                      2026-07-28 revision on the same endpoint (modern.py):
                      server/discover, no session, headers checked,
                      subscriptions/listen held open until the client closes
    DELETE /mcp       ends the session
    GET  /sse         MCP HTTP+SSE (2024-11-05): an endpoint event, then the
                      responses to POST /message?sessionId=S as SSE events
    POST /message     the legacy transport's requests (answered 202)

``serve_ws`` is a WebSocket service (trio-websocket): MCP JSON-RPC in text
frames with subprotocol ``mcp``, anything else echoed.
"""

from __future__ import annotations

import functools
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio

from ..net.http import RequestLimits, RequestRejected, ServerConnection
from .modern import discover_result, header_problem, is_modern, listen_stream, refuse_headers

MAX_BYTES = 64 * 1024 * 1024
MAX_SSE_EVENTS = 10_000
#: A client that sends no complete request within this time is dropped.
HTTP_REQUEST_TIMEOUT_S = 30.0
#: Largest request body the demo reads.
MAX_BODY_BYTES = 16 * 1024 * 1024
_LIMITS = RequestLimits(
    first_byte_s=HTTP_REQUEST_TIMEOUT_S,
    head_s=HTTP_REQUEST_TIMEOUT_S,
    request_s=HTTP_REQUEST_TIMEOUT_S,
    max_head_bytes=64 * 1024,
    max_body_bytes=MAX_BODY_BYTES,
    send_s=HTTP_REQUEST_TIMEOUT_S,
)
PATTERN = bytes(range(256)) * 256  # 64 KiB, the unit of /bytes


def pattern_bytes(n: int) -> bytes:
    """The first ``n`` bytes of the ``/bytes`` pattern (tests compare with it)."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


async def _listen(host: str, port: int) -> list[trio.SocketListener]:
    return await trio.open_tcp_listeners(port, host=host)


async def _serve(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    host: str,
    port: int,
    task_status: trio.TaskStatus[int],
) -> None:
    listeners = await _listen(host, port)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


# --- TCP echo -------------------------------------------------------------------------


async def echo_handler(stream: trio.SocketStream) -> None:
    """Echo until the client half-closes, then half-close back."""
    try:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()
            # Keep the socket open until the client closes its side, so the
            # client never sees RST for data still in flight.
            await stream.receive_some(1)
    except trio.BrokenResourceError:
        pass


async def serve_echo(
    host: str = "127.0.0.1", port: int = 0, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    await _serve(echo_handler, host, port, task_status)


# --- HTTP -----------------------------------------------------------------------------

INDEX = b"""<!doctype html><title>mcp-sidecar demo</title>
<h1>mcp-sidecar demo upstream</h1>
<p>You reached this page through the proxy. Try:
<ul><li><a href="/health">/health</a><li><a href="/bytes?n=1024">/bytes?n=1024</a>
<li><a href="/ticks?n=5&amp;interval=0.5">/ticks?n=5&amp;interval=0.5</a>
<li>MCP: POST /mcp (streamable HTTP), GET /sse + POST /message (HTTP+SSE)
<li>POST /echo</ul>
"""


class _Http:
    """One demo HTTP connection: the shared server connection and the
    server's own state (the legacy transport's open streams)."""

    def __init__(self, stream: trio.SocketStream, sessions: dict[str, trio.MemorySendChannel[dict[str, Any]]]) -> None:
        self.stream = stream
        self.server = ServerConnection(stream, _LIMITS)
        self.sessions = sessions
        #: The variant whose ``echo`` shouts (replay's "one tool changed").
        self.changed = False

    async def send(self, *events: h11.Event) -> None:
        await self.server.send(*events)

    async def simple(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        await self.server.respond(status, body, content_type)


def _query_number(query: dict[str, list[str]], name: str, default: float, high: float) -> float:
    try:
        value = float(query.get(name, [default])[0])
    except ValueError:
        return default
    return max(0.0, min(value, high))


async def _respond(http: _Http, request: h11.Request, body: bytes) -> None:
    url = urllib.parse.urlsplit(request.target.decode("ascii", "replace"))
    query = urllib.parse.parse_qs(url.query)
    method = request.method.decode()
    if url.path == "/" and method == "GET":
        await http.simple(200, INDEX, "text/html; charset=utf-8")
    elif url.path == "/health" and method == "GET":
        await http.simple(200, b'{"status":"ok"}')
    elif url.path == "/echo" and method == "POST":
        ctype = dict(request.headers).get(b"content-type", b"application/octet-stream").decode("latin-1")
        await http.simple(200, body, ctype)
    elif url.path == "/bytes" and method == "GET":
        n = int(_query_number(query, "n", 1024, MAX_BYTES))
        await http.send(
            h11.Response(
                status_code=200, headers=[("content-type", "application/octet-stream"), ("content-length", str(n))]
            )
        )
        sent = 0
        while sent < n:
            chunk = PATTERN[: min(len(PATTERN), n - sent)]
            await http.send(h11.Data(data=chunk))
            sent += len(chunk)
        await http.send(h11.EndOfMessage())
    elif url.path == "/mcp" and method == "POST":
        await _mcp_http(http, request, body)
    elif url.path == "/mcp" and method == "DELETE":
        await http.simple(200, b"")
    elif url.path == "/sse" and method == "GET":
        await _legacy_stream(http)
    elif url.path == "/message" and method == "POST":
        await _legacy_post(http, (query.get("sessionId") or [""])[0], body)
    elif url.path == "/ticks" and method == "GET":
        count = int(_query_number(query, "n", 5, MAX_SSE_EVENTS))
        interval = _query_number(query, "interval", 0.5, 60.0)
        await http.send(
            h11.Response(
                status_code=200, headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")]
            )
        )
        for i in range(count):
            if i:
                await trio.sleep(interval)
            payload = json.dumps({"seq": i}).encode()
            await http.send(h11.Data(data=b"id: %d\r\nevent: tick\r\ndata: %s\r\n\r\n" % (i, payload)))
        await http.send(h11.EndOfMessage())
    else:
        await http.simple(404, json.dumps({"error": "not found", "path": url.path}).encode())


# --- MCP ---------------------------------------------------------------------------------

MCP_SERVER_INFO = {"name": "mcp-sidecar-demo", "version": "1"}
DEMO_TOOLS = [
    {
        "name": "echo",
        "description": "Echo the text back",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
    },
    {
        "name": "slow",
        "description": "Report progress 3 times, then answer",
        "inputSchema": {"type": "object", "properties": {"steps": {"type": "integer"}}},
    },
]
SLOW_STEP_S = 0.05


def progress_notifications(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The progress a tools/call of ``slow`` reports before its result."""
    params = message.get("params") or {}
    if message.get("method") != "tools/call" or params.get("name") != "slow":
        return []
    token = ((params.get("_meta") or {}).get("progressToken")) or f"slow-{message.get('id')}"
    steps = max(1, min(int((params.get("arguments") or {}).get("steps", 3)), 20))
    return [
        {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": token, "progress": i + 1, "total": steps},
        }
        for i in range(steps)
    ]


def buffered(message: dict[str, Any]) -> bool:
    """``slow`` called with ``"buffered": true``: its events are held and written
    together at the end (what a buffering proxy in front of a server does)."""
    params = message.get("params") or {}
    return bool((params.get("arguments") or {}).get("buffered")) if isinstance(params, dict) else False


def mcp_answer(message: dict[str, Any], changed: bool = False) -> dict[str, Any] | None:
    """The demo server's JSON-RPC answer to one message (None for notifications).
    ``changed``: the variant whose ``echo`` shouts (replay's "one tool changed")."""
    if "id" not in message or "method" not in message:
        return None
    rid, method = message["id"], message["method"]
    params = message.get("params") or {}
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": MCP_SERVER_INFO,
        }
    elif method == "server/discover":  # 2026-07-28: instead of initialize
        result = discover_result(MCP_SERVER_INFO)
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": DEMO_TOOLS}
    elif method == "tools/call" and params.get("name") == "echo":
        text = str((params.get("arguments") or {}).get("text", ""))
        result = {"content": [{"type": "text", "text": text.upper() if changed else text}]}
    elif method == "tools/call" and params.get("name") == "slow":
        result = {"content": [{"type": "text", "text": "done"}]}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"unknown method {method}"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


async def _mcp_http(http: _Http, request: h11.Request, body: bytes) -> None:
    try:
        message = json.loads(body)
    except ValueError:
        await http.simple(
            400,
            json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}).encode(),
        )
        return
    headers = dict(request.headers)
    if isinstance(message, dict) and is_modern(headers, message):  # 2026-07-28: stateless, headers mirrored
        problem = header_problem(headers, message)
        if problem is not None:
            await refuse_headers(http, message, problem)
            return
        if message.get("method") == "subscriptions/listen":
            await listen_stream(http, message)
            return
    messages = message if isinstance(message, list) else [message]
    answers = [a for m in messages if isinstance(m, dict) and (a := mcp_answer(m, http.changed)) is not None]
    if not answers:
        await http.simple(202, b"")
        return
    payload = json.dumps(answers if isinstance(message, list) else answers[0]).encode()
    accept = headers.get(b"accept", b"").decode("latin-1")
    extra = []
    if any(m.get("method") == "initialize" for m in messages if isinstance(m, dict)):
        extra.append(("mcp-session-id", f"demo-{id(http):x}"))
    progress = [n for m in messages if isinstance(m, dict) for n in progress_notifications(m)]
    if progress and "text/event-stream" in accept:
        # A long call: stream progress notifications, then the result.
        await http.send(
            h11.Response(
                status_code=200, headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache"), *extra]
            )
        )
        events = [b"event: message\r\ndata: " + json.dumps(note).encode() + b"\r\n\r\n" for note in progress]
        last = b"event: message\r\ndata: " + payload + b"\r\n\r\n"
        if any(buffered(m) for m in messages if isinstance(m, dict)):  # all held, then written at once
            await trio.sleep(SLOW_STEP_S * len(events))
            await http.send(h11.Data(data=b"".join([*events, last])), h11.EndOfMessage())
            return
        for event in events:
            await http.send(h11.Data(data=event))
            await trio.sleep(SLOW_STEP_S)
        await http.send(h11.Data(data=last), h11.EndOfMessage())
    elif "text/event-stream" in accept and "application/json" not in accept:
        data = b"event: message\r\ndata: " + payload + b"\r\n\r\n"
        await http.send(
            h11.Response(
                status_code=200,
                headers=[("content-type", "text/event-stream"), ("content-length", str(len(data))), *extra],
            ),
            h11.Data(data=data),
            h11.EndOfMessage(),
        )
    else:
        await http.send(
            h11.Response(
                status_code=200,
                headers=[("content-type", "application/json"), ("content-length", str(len(payload))), *extra],
            ),
            h11.Data(data=payload),
            h11.EndOfMessage(),
        )


async def _legacy_stream(http: _Http) -> None:
    """HTTP+SSE (2024-11-05): announce the endpoint, then relay the answers."""
    session = f"{id(http):x}"
    send, receive = trio.open_memory_channel(64)
    http.sessions[session] = send
    try:
        await http.send(
            h11.Response(
                status_code=200, headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")]
            )
        )
        await http.send(h11.Data(data=f"event: endpoint\r\ndata: /message?sessionId={session}\r\n\r\n".encode()))

        async def relay() -> None:
            while True:
                with trio.move_on_after(15) as idle:  # like sse-starlette: a comment every 15 s
                    message = await receive.receive()
                if idle.cancelled_caught:
                    await http.send(h11.Data(data=b": keepalive\r\n\r\n"))
                    continue
                await http.send(h11.Data(data=b"event: message\r\ndata: " + json.dumps(message).encode() + b"\r\n\r\n"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay)
            # The stream ends when the client goes away (EOF on its side, or a reset).
            try:
                while await http.stream.receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the relay wrote to a client that had gone: the stream is over
    finally:
        http.sessions.pop(session, None)


async def _legacy_post(http: _Http, session: str, body: bytes) -> None:
    stream = http.sessions.get(session)
    if stream is None:
        await http.simple(404, b'{"error":"unknown session"}')
        return
    try:
        message = json.loads(body)
    except ValueError:
        await http.simple(400, b'{"error":"invalid json"}')
        return
    await http.simple(202, b"")
    for m in message if isinstance(message, list) else [message]:
        if isinstance(m, dict):
            for note in progress_notifications(m):
                await stream.send(note)
            answer = mcp_answer(m, http.changed)
            if answer is not None:
                await stream.send(answer)


async def ws_handler(request: Any, changed: bool = False) -> None:  # (a trio_websocket.WebSocketRequest)
    """Accept (with subprotocol mcp when offered); answer JSON-RPC, echo the rest."""
    import trio_websocket

    subprotocol = "mcp" if "mcp" in request.proposed_subprotocols else None
    ws = await request.accept(subprotocol=subprotocol)
    try:
        while True:
            message = await ws.get_message()
            answer = None
            if isinstance(message, str):
                try:
                    parsed = json.loads(message)
                    answer = mcp_answer(parsed, changed) if isinstance(parsed, dict) else None
                except ValueError:
                    pass
                if answer is None and not (message.startswith("{") and "jsonrpc" in message):
                    await ws.send_message(message)
                    continue
            else:
                await ws.send_message(message)
                continue
            if answer is not None:
                notes = progress_notifications(parsed)
                if buffered(parsed):  # held, then sent together
                    await trio.sleep(SLOW_STEP_S * len(notes))
                for note in notes:
                    await ws.send_message(json.dumps(note))
                    if not buffered(parsed):
                        await trio.sleep(SLOW_STEP_S)
                await ws.send_message(json.dumps(answer))
    except trio_websocket.ConnectionClosed:
        pass


async def serve_ws(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    changed: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    import trio_websocket

    handler = functools.partial(ws_handler, changed=changed)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, host, port, None)
        task_status.started(server.port)


async def http_handler(
    stream: trio.SocketStream, sessions: dict[str, trio.MemorySendChannel[dict[str, Any]]], changed: bool = False
) -> None:
    http = _Http(stream, sessions)
    http.changed = changed
    try:
        async with stream:
            while True:
                got = await http.server.read_request()
                if got is None:
                    return  # closed, or idle too long
                await _respond(http, *got)
                if not http.server.next_cycle():
                    return
    except RequestRejected as exc:
        if exc.status is not None and http.server.can_answer:
            try:
                await http.simple(exc.status, json.dumps({"error": exc.message}).encode())
            except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError, trio.TooSlowError):
        pass


async def serve_http(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    changed: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The demo HTTP service; each server has its own legacy-transport sessions.
    ``changed``: the variant whose ``echo`` tool shouts (for replay's tests)."""
    sessions: dict[str, trio.MemorySendChannel[dict[str, Any]]] = {}

    async def handler(stream: trio.SocketStream) -> None:
        await http_handler(stream, sessions, changed)

    await _serve(handler, host, port, task_status)
