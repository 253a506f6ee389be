"""A slow reader slows the writer: the proxy holds a bounded amount per
connection, whatever the client pushes."""

from __future__ import annotations

import socket

import trio

CHUNK = 1024 * 1024
#: The client stops trying after this much: far more than any kernel buffers.
PUSH_LIMIT = 256 * 1024 * 1024
#: What the proxy may grow by while the upstream does not read. Measured:
#: 32-204 KiB (the kernel holds the backlog, the proxy one read buffer). The
#: limit is the worst case the design allows, one 256 KiB buffer per
#: direction (512 KiB), plus the largest growth measured and ~300 KiB of
#: margin for allocator noise: 1 MiB, where 16 MiB used to pass anything.
RSS_GROWTH_LIMIT = 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def push_until_stalled(sock: socket.socket, chunk: bytes, stall_s: float) -> int:
    """Send until the socket stays unwritable for ``stall_s``; return bytes sent."""
    sent = 0
    view = memoryview(chunk)
    while sent < PUSH_LIMIT:
        try:
            # Continue the pattern where the last (possibly partial) send stopped.
            sent += sock.send(view[sent % len(chunk) :])
        except BlockingIOError:
            with trio.move_on_after(stall_s) as scope:
                await trio.lowlevel.wait_writable(sock)
            if scope.cancelled_caught:
                return sent
    return sent


async def test_slow_upstream_reader_bounds_proxy_memory(proxy_process, tmp_path) -> None:
    with trio.fail_after(60):
        upstream = socket.socket()
        upstream.bind(("127.0.0.1", 0))
        upstream.listen()
        up_port = upstream.getsockname()[1]
        config = tmp_path / "sidecar.toml"
        # No health checks: every connection the upstream accepts is the client's.
        config.write_text(f'[[route]]\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:{up_port}"\nhealth_interval = 0\n')
        proc = proxy_process("run", "--no-supervise", "--config", str(config), "--admin", "off", "--log-format", "json")
        await trio.to_thread.run_sync(proc.wait_for_line, "route route-1")
        rss_before = rss_bytes(proc.proc.pid)

        client = socket.socket()
        client.connect(("127.0.0.1", proc.route_port("route-1")))
        client.setblocking(False)
        server, _ = upstream.accept()  # accepted, but nobody reads yet
        pattern = bytes(range(256)) * (CHUNK // 256)
        sent = await push_until_stalled(client, pattern, stall_s=1.0)
        rss_during = rss_bytes(proc.proc.pid)

        print(f"held back after {sent} bytes; proxy RSS {rss_before} -> {rss_during}")
        assert sent < PUSH_LIMIT, "the client was never slowed down"
        assert rss_during - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_during, sent)

        # Now the upstream reads: every byte arrives, in order.
        client.shutdown(socket.SHUT_WR)
        server.setblocking(False)
        received = 0
        mismatch = None
        while True:
            try:
                data = server.recv(CHUNK)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(server)
                continue
            if not data:
                break
            expected = (pattern * 2)[received % CHUNK : received % CHUNK + len(data)]
            if data != expected and mismatch is None:
                mismatch = received
            received += len(data)
        assert mismatch is None
        assert received == sent
        for s in (client, server, upstream):
            s.close()
