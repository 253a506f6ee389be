"""The official MCP Python SDK as the upstream of the era tests (run as a
subprocess: ``python -m tests.mcp_sdk.server PORT``).

One endpoint (``/mcp``) serves streamable HTTP in both eras (2025-11-25
sessions with initialize, 2026-07-28 stateless requests); ``/sse`` and
``/messages/`` serve the 2024-11-05 HTTP+SSE transport.  Prints ``ready``
once it listens.  ``SDK_ECHO_CHANGED=1``: the variant whose ``echo`` shouts.
"""

from __future__ import annotations

import os
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

server = MCPServer("sidecar-era-tests")


def _reached(what: str) -> None:
    """The server's own log of the calls that reached it (SDK_SERVER_LOG names the file)."""
    path = os.environ.get("SDK_SERVER_LOG")
    if path:
        with open(path, "a") as f:
            f.write(what + "\n")


#: The variant with one tool changed (replay's test): echo shouts.
CHANGED = os.environ.get("SDK_ECHO_CHANGED") == "1"


@server.tool()
def echo(text: str) -> str:
    _reached(f"echo {text}")
    return text.upper() if CHANGED else text


@server.tool()
def fail(reason: str) -> str:
    raise ValueError(reason)


@server.tool()
async def slow(seconds: float) -> str:
    _reached(f"slow {seconds:g}")
    await anyio.sleep(seconds)
    return "done"


@server.prompt()
def greet(name: str) -> str:
    return f"Hello {name}"


@server.resource("demo://config")
def config() -> str:
    return "{}"


def app() -> Starlette:
    http = server.streamable_http_app()
    legacy = server.sse_app()
    return Starlette(routes=[*http.routes, *legacy.routes], lifespan=http.router.lifespan_context)


class _Ready(uvicorn.Server):
    async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
        await super().startup(sockets)
        print("ready", flush=True)


if __name__ == "__main__":
    _Ready(uvicorn.Config(app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")).run()
