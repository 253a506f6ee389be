"""One MCP client of the official SDK making calls through faults (run as a
subprocess: ``python -m tests.mcp_sdk.faultdriver URL MODE TIMEOUT CALL...``).

MODE: ``auto`` (2026-07-28, stateless), ``legacy`` (2025-11-25 streamable
HTTP) or ``sse`` (2024-11-05 HTTP+SSE, URL the ``/sse`` endpoint).  Each
CALL is ``TOOL`` or ``TOOL=TEXT`` (``echo=hi``: ``echo`` with ``text``);
each is made with a read timeout of TIMEOUT seconds.  Prints one JSON object:
``calls``: per call, ``{"ok": text}``, ``{"error": code, "message": m}``
(an MCP error, a timeout included) or ``{"exception": type, "detail": text}``
(the transport failed: a cut stream, an HTTP error).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError


async def call(client: Client, spec: str, timeout: float) -> dict[str, Any]:
    name, _, text = spec.partition("=")
    arguments = {"text": text} if name == "echo" else {"seconds": float(text or 0)} if name == "slow" else {}
    try:
        result = await client.call_tool(name, arguments, read_timeout_seconds=timeout)
    except MCPError as exc:
        return {"error": exc.error.code, "message": exc.error.message}
    except Exception as exc:  # (what the client saw is the point)
        return {"exception": type(exc).__name__, "detail": str(exc)[:200]}
    texts = [getattr(c, "text", "") for c in result.content]
    return {"ok": "".join(texts), "is_error": result.is_error}


async def main() -> None:
    url, mode, timeout, calls = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
    server = sse_client(url) if mode == "sse" else url
    out: dict[str, Any] = {"calls": []}
    try:
        async with Client(server, mode="auto" if mode == "auto" else "legacy") as client:  # type: ignore[arg-type]
            out["version"] = client.protocol_version
            for spec in calls:
                out["calls"].append(await call(client, spec, timeout))
    except BaseException as exc:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # (what the SDK raised, out of anyio's groups)
        out["failed"] = {"exception": type(exc).__name__, "detail": str(exc)[:300]}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    anyio.run(main)
