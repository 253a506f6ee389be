"""Inspection-memory storms: many half-sent large JSON bodies cost at most the
worker's inspection budget, and the memory comes back when they close."""

from __future__ import annotations

import json
import socket

import trio

from mcp_sidecar.net.http import request

from ..conftest import scaled
from ..forward.test_memory import rss_bytes

BODY = 1_000_000
#: Small enough that the storm overflows it many times over.
BUDGET = 16 * 1024 * 1024


async def _sink(nursery: trio.Nursery) -> tuple[int, dict[str, int]]:
    """An upstream that reads everything and answers nothing."""
    received = {"bytes": 0, "connections": 0}
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handler(stream: trio.SocketStream) -> None:
        received["connections"] += 1
        while data := await stream.receive_some(1 << 20):
            received["bytes"] += len(data)

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return listeners[0].socket.getsockname()[1], received


async def _metrics(admin: int) -> dict[str, float]:
    body = (await request("127.0.0.1", admin, "/metrics")).body.decode()
    values = {}
    for line in body.splitlines():
        if line.startswith("mcp_sidecar_observer_memory") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


async def test_half_sent_json_bodies_are_bounded_and_released(nursery, proxy_process, tmp_path) -> None:
    clients = scaled(100)
    with trio.fail_after(60 * scaled(1)):
        up_port, received = await _sink(nursery)
        config = tmp_path / "sidecar.toml"
        config.write_text(
            f'[proxy]\nobserve_memory = "{BUDGET // 1024 // 1024}MiB"\nobserve_cpu_share = 1.0\n'
            f'[admin]\nlisten = "127.0.0.1:0"\n'
            f'[[route]]\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:{up_port}"\n'
            "health_interval = 0\n"
        )
        proc = proxy_process(
            "run", "--no-supervise", "--config", str(config), "--log-format", "json", "--log-level", "warning"
        )
        await trio.to_thread.run_sync(proc.wait_for_line, "admin http://")
        admin = int(
            next(item for item in proc.lines if item.startswith("admin ")).split()[1].rstrip("/").rsplit(":", 1)[1]
        )
        port = proc.route_port("route-1")
        baseline = rss_bytes(proc.proc.pid)

        head = (
            f"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {BODY + 1}\r\n\r\n"
        ).encode()
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":"' + b"a" * (BODY - 64)
        body += b" " * (BODY - len(body))
        socks = []
        for _ in range(clients):
            s = socket.socket()
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        expected = clients * (len(head) + BODY)

        async def send(s: socket.socket) -> None:
            await trio.lowlevel.wait_writable(s)
            view = memoryview(head + body)
            while view:
                try:
                    view = view[s.send(view) :]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(s)

        async with trio.open_nursery() as senders:
            for s in socks:
                senders.start_soon(send, s)
        while received["bytes"] < expected:  # every byte is forwarded, observed or not
            await trio.sleep(0.05)
        during = rss_bytes(proc.proc.pid)
        held = await _metrics(admin)
        exhausted = sum(v for k, v in held.items() if k.startswith("mcp_sidecar_observer_memory_exhausted_total"))
        print(
            f"{clients} clients x {BODY} B held back by one byte: RSS {baseline >> 20} -> {during >> 20} MiB, "
            f"inspection {held['mcp_sidecar_observer_memory_bytes'] / 2**20:.1f} MiB, {exhausted:.0f} gave up"
        )
        assert held["mcp_sidecar_observer_memory_bytes"] <= BUDGET
        assert exhausted >= clients - BUDGET // BODY - 1
        # Beyond the inspection budget: at most one unsent chunk per blocked
        # direction (the forwarding bound, buffer_size 256 KiB) and 4 MiB of
        # interpreter margin (it was 32). Measured: 22-23 MiB in all for 100
        # clients against this 45 MiB bound.
        assert during - baseline < BUDGET + 4 * 2**20 + clients * 256 * 1024, (baseline, during)

        for s in socks:
            s.close()
        while (await _metrics(admin))["mcp_sidecar_observer_memory_bytes"] > 0:
            await trio.sleep(0.05)
        # The worker hands freed heap back within its trim interval (memtrim.py):
        # there is no event to await across the process boundary, so poll, bounded.
        # What may stay: interpreter arenas and containers sized for the peak
        # (a few KiB per connection that was open), never the buffers.
        with trio.fail_after(10):
            while (after := rss_bytes(proc.proc.pid)) - baseline >= 16 * 2**20 + clients * 8 * 1024:
                await trio.sleep(0.1)
        print(f"after close: RSS {after >> 20} MiB")
        status = json.loads((await request("127.0.0.1", admin, "/api/status")).body)
        assert status["observation_memory"]["used_bytes"] == 0
        assert status["observation_memory"]["peak_bytes"] <= BUDGET
