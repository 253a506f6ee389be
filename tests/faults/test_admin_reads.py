"""Heavy admin reads (the connections list, metrics) while thousands of
connections are open must not stall forwarding."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.net.http import request

from ..conftest import connect, receive_exactly, scaled


async def test_polling_the_connections_list_does_not_stall_forwarding(nursery, proxy_process, tmp_path) -> None:
    open_connections = min(scaled(2000), 6000)  # (descriptors: three per connection in this process)
    with trio.fail_after(60 * scaled(1)):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        config = tmp_path / "sidecar.toml"
        config.write_text(
            f'[[route]]\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:{echo_port}"\n'
            f"max_connections = {open_connections * 2}\nhealth_interval = 0\n"
        )
        proc = proxy_process(
            "run",
            "--no-supervise",
            "--config",
            str(config),
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--log-level",
            "warning",
        )
        await trio.to_thread.run_sync(proc.wait_for_line, "admin http://")
        admin = int(
            next(item for item in proc.lines if item.startswith("admin ")).split()[1].rstrip("/").rsplit(":", 1)[1]
        )
        port = proc.route_port("route-1")
        idle = []
        for _ in range(open_connections):  # (the echo upstream runs in this event loop: connect async)
            s = trio.socket.socket()
            try:
                await s.connect(("127.0.0.1", port))
            except OSError:
                print("DEBUG", proc.stderr()[-3000:])
                raise
            idle.append(s)
        while (
            json.loads((await request("127.0.0.1", admin, "/api/status")).body)["routes"][0]["connections_active"]
            < open_connections
        ):
            await trio.sleep(0.05)

        probe = await connect(port)
        await probe.send_all(b"warm")  # established end to end before the load starts
        assert await receive_exactly(probe, 4) == b"warm"
        rtts: list[float] = []
        stop = trio.Event()

        async def ping_pong() -> None:
            while not stop.is_set():
                t0 = trio.current_time()
                await probe.send_all(b"p" * 64)
                assert await receive_exactly(probe, 64) == b"p" * 64
                rtts.append(trio.current_time() - t0)

        async def poll(path: str) -> None:
            while not stop.is_set():
                reply = await request("127.0.0.1", admin, path)
                assert reply.status == 200

        async with trio.open_nursery() as load:
            load.start_soon(ping_pong)
            for _ in range(10):
                load.start_soon(poll, "/api/connections?limit=1000")
            load.start_soon(poll, "/metrics")
            await trio.sleep(3 * scaled(1))
            stop.set()
        rtts.sort()
        print(
            f"{open_connections} open, 10 pollers of /api/connections and /metrics: {len(rtts)} round trips, "
            f"p50 {rtts[len(rtts) // 2] * 1000:.2f} ms, p99 {rtts[int(len(rtts) * 0.99)] * 1000:.2f} ms, "
            f"max {rtts[-1] * 1000:.1f} ms"
        )
        assert rtts[-1] < 0.25  # one heavy read at a time, yielding every few connections
        listing = json.loads((await request("127.0.0.1", admin, "/api/connections?limit=1000&offset=1000")).body)
        assert listing["count"] == open_connections + 1 and len(listing["connections"]) == min(
            1000, open_connections - 999
        )
        await probe.aclose()
        for s in idle:
            s.close()
