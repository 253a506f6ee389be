"""A stop while connections are open: established ones drain, new clients are
refused at once, and the probes keep answering (readiness 503 "draining",
liveness 200) -- supervised and unsupervised alike."""

from __future__ import annotations

import json
import signal

import pytest
import trio

from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.net.http import request

from ..conftest import connect, receive_all, receive_exactly, run_proxyctl


async def _probe(admin: tuple[str, int], path: str) -> tuple[int, bytes]:
    with trio.fail_after(2):
        reply = await request(admin[0], admin[1], path)
    return reply.status, reply.body


async def _control_commands_answer_stopping(state_dir: str) -> None:
    async def proxyctl(*args: str):
        return await trio.to_thread.run_sync(lambda: run_proxyctl(*args, "--state-dir", state_dir, timeout=10))

    for command in ("restart", "reload"):
        result = await proxyctl(command)
        assert result.returncode == 4, result
        assert result.stderr.startswith(
            f"proxyctl: error: stopping: the workers are draining (up to 20 s); {command} is not possible now"
        )
    status = await proxyctl("status")
    assert status.returncode == 4
    assert "running, STOPPING (draining)" in status.stdout.splitlines()[0]
    assert "  problem: stopping: draining open connections" in status.stdout.splitlines()
    again = await proxyctl("stop")
    assert again.returncode == 0 and again.stdout.startswith("already stopping: ")


async def _stop_with_a_connection_open(proc, port: int, admin: tuple[str, int], state_dir: str | None) -> None:
    held = await connect(port)
    await held.send_all(b"held")
    assert await receive_exactly(held, 4) == b"held"
    proc.signal(signal.SIGTERM)
    await trio.to_thread.run_sync(proc.wait_for_log, '"event":"proxy.draining"')
    for _ in range(3):  # new clients, one after another, during the drain
        t0 = trio.current_time()
        with pytest.raises(ConnectionRefusedError):
            with trio.socket.socket() as sock:
                await sock.connect(("127.0.0.1", port))
        assert trio.current_time() - t0 < 0.5  # refused, not left hanging in a backlog
        status, body = await _probe(admin, "/readyz")
        assert status == 503 and json.loads(body)["reasons"][0] == "draining: shutting down"
        assert await _probe(admin, "/healthz") == (200, b"ok\n")
    if state_dir is not None:
        await _control_commands_answer_stopping(state_dir)
    await held.send_all(b"still")  # the established connection is served through the drain
    assert await receive_exactly(held, 5) == b"still"
    await held.send_eof()
    assert await receive_all(held) == b""
    await held.aclose()
    assert await trio.to_thread.run_sync(proc.wait) == 0


@pytest.mark.parametrize("supervise", ["--supervise", "--no-supervise"])
async def test_stop_refuses_new_clients_and_keeps_probes(nursery, proxy_process, tmp_path, supervise) -> None:
    with trio.fail_after(40):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        proc = proxy_process(
            "run",
            supervise,
            "--forward",
            f"127.0.0.1:0:127.0.0.1:{echo_port}",
            "--admin",
            "127.0.0.1:0",
            "--drain-timeout",
            "20s",
            "--state-dir",
            str(tmp_path / "state"),
            "--log-format",
            "json",
        )
        await trio.to_thread.run_sync(proc.wait_for_line, "admin http://")
        admin_url = next(item for item in proc.lines if item.startswith("admin http://")).split()[1]
        host, port = admin_url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        await _stop_with_a_connection_open(
            proc,
            proc.route_port("route-1"),
            (host, int(port)),
            str(tmp_path / "state") if supervise == "--supervise" else None,
        )
