"""A plain stdlib asyncio TCP forwarder, for comparison in scripts/bench.

What a competent Python developer writes in an afternoon: asyncio streams,
64 KiB reads, TCP_NODELAY (asyncio's default), half-close propagated.

Usage: python benchmarks/asyncio_forwarder.py LISTEN_PORT:UP_HOST:UP_PORT [...]
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def _handler(up_host: str, up_port: int):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        writer.close()
        up_writer.close()

    return handle


async def main(specs: list[str]) -> None:
    servers = []
    for spec in specs:
        port, host, up_port = spec.split(":")
        servers.append(await asyncio.start_server(_handler(host, int(up_port)), "127.0.0.1", int(port), backlog=4096))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
