"""The demo upstream's 2026-07-28 side: stateless MCP on the same ``/mcp``.

A request is modern when it says so (``MCP-Protocol-Version: 2026-07-28``,
or that version in ``params._meta``).  Then, as the revision's streamable
HTTP text asks: no session is minted; the mirrored headers must agree with
the body and be present (else ``400`` with ``-32020`` HeaderMismatch); a
``subscriptions/listen`` is answered by an event stream that acknowledges the
subscription and stays open -- silent, so a proxy's ``sse_keepalive`` shows --
until the client closes it (closing the stream is the cancellation).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import h11
import trio

from ..observe.jsonrpc import from_mapping, params_facts
from ..observe.mcpmeta import request_conformance

MODERN = "2026-07-28"
HEADER_MISMATCH = -32020
#: A listen stream the client never closes is ended after this (the demo is bounded).
LISTEN_MAX_S = 3600.0


class DemoHttp(Protocol):
    """What the demo's HTTP connection offers (servers.py)."""

    stream: trio.SocketStream

    async def send(self, *events: h11.Event) -> None: ...

    async def simple(self, status: int, body: bytes, content_type: str = "application/json") -> None: ...


def is_modern(headers: dict[bytes, bytes], message: Any) -> bool:
    if headers.get(b"mcp-protocol-version") == MODERN.encode():
        return True
    if not isinstance(message, dict):
        return False
    meta = (message.get("params") or {}).get("_meta") if isinstance(message.get("params"), dict) else None
    return isinstance(meta, dict) and meta.get("io.modelcontextprotocol/protocolVersion") == MODERN


def header_problem(headers: dict[bytes, bytes], message: dict[str, Any]) -> str | None:
    """Why a modern request's headers are refused (HeaderMismatch), or None."""
    if "method" not in message or "id" not in message:
        return None  # (this revision defines no header rules for notifications)

    def text(name: bytes) -> str | None:
        value = headers.get(name)
        return value.decode("latin-1") if value is not None else None

    found = request_conformance(
        str(message["method"]),
        params_facts(from_mapping(message)),
        method_header=text(b"mcp-method"),
        name_header=text(b"mcp-name"),
        version_header=text(b"mcp-protocol-version"),
        session_version=None,
    )
    return ", ".join(found) if found else None


async def refuse_headers(http: DemoHttp, message: dict[str, Any], problem: str) -> None:
    error = {"code": HEADER_MISMATCH, "message": f"Header mismatch: {problem}"}
    await http.simple(400, json.dumps({"jsonrpc": "2.0", "id": message.get("id"), "error": error}).encode())


def discover_result(server_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "supportedVersions": [MODERN],
        "capabilities": {"tools": {"listChanged": True}},
        "_meta": {"io.modelcontextprotocol/serverInfo": server_info},
    }


async def listen_stream(http: DemoHttp, message: dict[str, Any]) -> None:
    """Answer a ``subscriptions/listen``: acknowledge, then hold the stream
    open, silent, until the client goes away."""
    params = message["params"] if isinstance(message.get("params"), dict) else {}
    ack = {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "_meta": {"io.modelcontextprotocol/subscriptionId": message.get("id")},
            "notifications": params.get("notifications") or {},
        },
    }
    await http.send(
        h11.Response(
            status_code=200,
            headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache"), ("x-accel-buffering", "no")],
        )
    )
    await http.send(h11.Data(data=b"event: message\r\ndata: " + json.dumps(ack).encode() + b"\r\n\r\n"))
    with trio.move_on_after(LISTEN_MAX_S):
        try:
            while await http.stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
