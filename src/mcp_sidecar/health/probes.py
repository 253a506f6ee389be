"""Active checks of one upstream address, by level (used by health.py and
``proxyctl check``).

* L1 ``tcp``: a TCP connection opens.
* L2 ``http``: ``GET path`` answers 2xx or 3xx (HAProxy's httpchk default).
* L2 ``ws``: a WebSocket handshake on ``path`` (trio-websocket, subprotocol
  ``mcp`` offered), then a ping answered by a pong.
* L3 ``mcp``: MCP over streamable HTTP on ``path``: ``initialize``, the
  ``notifications/initialized`` notification, then ``ping`` must return a
  JSON-RPC result; the session is deleted afterwards.

Every probe connects through the route's ``Connector`` (so ``localhost``
means both loopbacks here too) and returns ``(ok, result)`` where result is
a short bounded label (``ok``, ``refused``, ``timeout``, ``http 503``,
``mcp error -32601``...).  When this host cannot open a socket at all
(``EMFILE``...) it raises ``LocalResourceError``: that is no verdict on
the upstream.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import trio
import trio_websocket

from ..config.addresses import HostPort, bracket
from ..errors import RemoteError
from ..net.http import HttpResponse, request_on
from ..net.upstream import Connector, classify, local_resource_error
from ..observe.sse import SseEvent, SseParser

MCP_PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "mcp-sidecar-check", "version": "1"}


class ProbeFailed(RemoteError):
    """The upstream answered, but not as a healthy one would; ``result`` is
    the bounded label for it."""

    def __init__(self, result: str) -> None:
        super().__init__(result)
        self.result = result


async def _stream(connector: Connector, address: HostPort) -> trio.abc.Stream:
    """A connection to the address, TLS verified when the route speaks TLS upstream."""
    sock = await connector.attempt_address(address)
    stream: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    if connector.tls is not None:
        stream = trio.SSLStream(
            stream, connector.tls, server_hostname=connector.tls_name or address.host, https_compatible=True
        )
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(stream)
            raise ProbeFailed("tls") from exc
    return stream


async def http_get(
    connector: Connector, address: HostPort, path: str, headers: list[tuple[str, str]] | None = None
) -> HttpResponse:
    return await request_on(
        await _stream(connector, address), f"{bracket(address.host)}:{address.port}", path, headers=headers
    )


def jsonrpc_replies(response: HttpResponse) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a streamable-HTTP reply (JSON or SSE)."""
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    texts: list[str] = []
    if ctype == "text/event-stream":
        events = SseParser().feed(response.body + b"\n\n")
        texts = [e.data for e in events if isinstance(e, SseEvent) and e.data]
    elif response.body:
        texts = [response.body.decode("utf-8", "replace")]
    messages: list[dict[str, Any]] = []
    for text in texts:
        try:
            value = json.loads(text)
        except ValueError:
            raise ProbeFailed("mcp bad json") from None
        messages.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, dict))
    return messages


async def mcp_call(
    connector: Connector,
    address: HostPort,
    path: str,
    message: dict[str, Any],
    session: str | None,
    extra: list[tuple[str, str]] | None = None,
) -> tuple[HttpResponse, dict[str, Any] | None]:
    headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", MCP_PROTOCOL_VERSION),
        *(extra or []),
    ]
    if session:
        headers.append(("mcp-session-id", session))
    response = await request_on(
        await _stream(connector, address),
        f"{bracket(address.host)}:{address.port}",
        path,
        method="POST",
        body=json.dumps(message).encode(),
        headers=headers,
    )
    if "id" not in message:
        return response, None
    if response.status >= 400:  # an error page is not JSON-RPC: say what the server said
        raise ProbeFailed(f"http {response.status}")
    for reply in jsonrpc_replies(response):
        if reply.get("id") == message["id"]:
            return response, reply
    raise ProbeFailed(f"http {response.status}" if response.status >= 400 else "mcp no response")


async def mcp_ping(
    connector: Connector, address: HostPort, path: str, headers: list[tuple[str, str]] | None = None
) -> float:
    """initialize + initialized + ping; returns the ping's round trip (s)."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": MCP_PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
    }
    response, reply = await mcp_call(connector, address, path, init, None, headers)
    if reply is None or "error" in reply:
        code = (reply or {}).get("error", {}).get("code", "?")
        raise ProbeFailed(f"mcp error {code}")
    session = response.headers.get("mcp-session-id")
    await mcp_call(
        connector, address, path, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session, headers
    )
    t0 = trio.current_time()
    _, pong = await mcp_call(connector, address, path, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session, headers)
    rtt = trio.current_time() - t0
    if pong is None or "result" not in pong:
        code = (pong or {}).get("error", {}).get("code", "?")
        raise ProbeFailed(f"mcp error {code}")
    if session:
        try:
            await request_on(
                await _stream(connector, address),
                f"{bracket(address.host)}:{address.port}",
                path,
                method="DELETE",
                headers=[("mcp-session-id", session), *(headers or [])],
            )
        except (OSError, h11.ProtocolError):
            pass
    return rtt


async def ws_ping(
    connector: Connector, address: HostPort, path: str, headers: list[tuple[str, str]] | None = None
) -> float:
    """WebSocket handshake, then one ping; returns the ping's round trip (s)."""
    stream = await _stream(connector, address)
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            stream,  # type: ignore[arg-type]  # (a SocketStream or an SSLStream over one: its stubs say so too narrowly)
            address.host,
            path,
            subprotocols=["mcp"],
            extra_headers=[(k.encode(), v.encode()) for k, v in headers or []],
        )
        try:
            t0 = trio.current_time()
            await ws.ping(b"mcp-sidecar")
            return trio.current_time() - t0
        finally:
            await ws.aclose()


async def probe(level: str, address: HostPort, path: str, timeout_s: float, connector: Connector) -> tuple[bool, str]:
    try:
        with trio.fail_after(timeout_s):
            if level == "tcp":
                if connector.tls is not None:
                    await (await _stream(connector, address)).aclose()  # L1 over TLS: the handshake too
                else:
                    (await connector.attempt_address(address)).close()
            elif level == "http":
                response = await http_get(connector, address, path)
                if not 200 <= response.status < 400:
                    return False, f"http {response.status}"
            elif level == "ws":
                await ws_ping(connector, address, path)
            elif level == "mcp":
                await mcp_ping(connector, address, path)
            else:
                raise ValueError(f"unknown check level {level!r}")
    except ProbeFailed as exc:
        return False, exc.result
    except trio_websocket.HandshakeError as exc:
        status = getattr(exc, "status_code", None)
        return False, f"ws handshake {status}" if status else "ws handshake failed"
    except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
        return False, "closed"
    except h11.ProtocolError:
        return False, "http protocol error"
    except (OSError, trio.TooSlowError) as exc:
        local = local_resource_error(exc)
        if local is not None:
            raise local from None  # the caller must not count it against the upstream
        return False, classify(exc)
    return True, "ok"
