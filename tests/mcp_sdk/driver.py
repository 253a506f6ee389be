"""MCP sessions driven by the official SDK's client, counting every call it
makes (run as a subprocess: ``python -m tests.mcp_sdk.driver URL MODE N``).

MODE: ``auto`` (2026-07-28: probes ``server/discover``), ``legacy``
(2025-11-25 streamable HTTP: ``initialize``), ``sse`` (the 2024-11-05
HTTP+SSE transport, URL the ``/sse`` endpoint), ``hold`` (N listen streams
held open until stdin closes).  Prints one JSON object:
calls by method (``tools/call`` by tool), what ``listen`` did, the versions
negotiated.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import anyio
from mcp import Client
from mcp.client.sse import sse_client


async def session(url: str, mode: str, counts: Counter[str], versions: Counter[str]) -> None:
    server = sse_client(url) if mode == "sse" else url
    async with Client(server, mode="legacy" if mode != "auto" else "auto") as client:  # type: ignore[arg-type]
        versions[client.protocol_version] += 1
        await client.list_tools()
        counts["tools/list"] += 1
        await client.call_tool("echo", {"text": "hi"})
        counts["tools/call:echo"] += 1
        await client.call_tool("fail", {"reason": "no"})
        counts["tools/call:fail"] += 1
        await client.get_prompt("greet", {"name": "x"})
        counts["prompts/get"] += 1
        await client.read_resource("demo://config")
        counts["resources/read"] += 1
        if mode == "auto":
            async with client.listen(tools_list_changed=True):  # opened, acknowledged, abandoned
                counts["subscriptions/listen"] += 1


async def hold_listens(url: str, streams: int) -> None:
    """Open ``streams`` listen streams (2026-07-28), say so, hold them until
    stdin closes, then abandon them: the client closes each stream."""
    async with Client(url, mode="auto") as client, anyio.create_task_group() as group:
        opened = anyio.Event()
        count = 0

        async def listen() -> None:
            nonlocal count
            async with client.listen(tools_list_changed=True):
                count += 1
                if count == streams:
                    opened.set()
                await anyio.sleep_forever()

        for _ in range(streams):
            group.start_soon(listen)
        await opened.wait()
        print("listening", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
        group.cancel_scope.cancel()


async def main() -> None:
    url, mode, sessions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "hold":
        await hold_listens(url, sessions)
        return
    counts: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    for _ in range(sessions):
        await session(url, mode, counts, versions)
    print(json.dumps({"calls": counts, "versions": versions}))


if __name__ == "__main__":
    anyio.run(main)
