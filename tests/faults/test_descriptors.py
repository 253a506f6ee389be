"""Running out of descriptors is this host's fault: clients beyond what the
descriptor limit allows are refused at once and counted, the upstream stays
healthy, the probes keep answering and readiness says what is wrong."""

from __future__ import annotations

import json
import resource

import trio

from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.net.http import request

from ..conftest import scaled

NOFILE = 256


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


async def test_descriptor_exhaustion_is_local_and_never_the_upstream(nursery, proxy_process, tmp_path) -> None:
    clients = scaled(400)
    with trio.fail_after(40):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        config = tmp_path / "sidecar.toml"
        config.write_text(
            f'[[route]]\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:{echo_port}"\n'
            'health_interval = "100ms"\nmax_connections = 100000\n'
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
            preexec_fn=_low_nofile,
        )
        await trio.to_thread.run_sync(proc.wait_for_line, "admin http://")
        admin = int(
            next(item for item in proc.lines if item.startswith("admin ")).split()[1].rstrip("/").rsplit(":", 1)[1]
        )
        port = proc.route_port("route-1")

        held, refused = [], 0
        for i in range(clients):
            s = trio.socket.socket()
            data = b""
            with trio.move_on_after(2):
                try:
                    await s.connect(("127.0.0.1", port))
                    await s.send(b"%04d" % i)
                    data = await s.recv(4)
                except (ConnectionResetError, BrokenPipeError):
                    pass
            if data == b"%04d" % i:
                held.append(s)  # served end to end, and kept open
            else:
                refused += 1
                s.close()
        status = json.loads((await request("127.0.0.1", admin, "/api/status")).body)
        route = status["routes"][0]
        budget_max = (NOFILE - 64) // 2
        print(
            f"{clients} clients under ulimit -n {NOFILE}: {len(held)} served and held, {refused} refused; "
            f"rejected {route['connections_rejected']}, exhaustion {status['local_exhaustion']}"
        )
        assert len(held) + refused == clients
        assert 50 <= len(held) <= budget_max + 16
        assert route["connections_rejected"] == {"descriptors": refused}
        assert route["upstream_connect_failures"] == {}
        assert route["health"]["state"] == "up" and route["circuit"]["state"] == "closed"

        ready = await request("127.0.0.1", admin, "/readyz")
        assert ready.status == 503
        assert any(r.startswith("worker out of descriptors (RLIMIT_NOFILE") for r in json.loads(ready.body)["reasons"])
        assert (await request("127.0.0.1", admin, "/healthz")).status == 200
        for s in held[:5]:  # the held ones still forward
            await s.send(b"more")
            assert await s.recv(4) == b"more"
        log = proc.stderr()
        assert '"event":"upstream.unavailable"' not in log and '"event":"upstream.down"' not in log
        assert log.count('"event":"connection.rejected"') <= 21  # rate-limited, not one line per client
        for s in held:
            s.close()
