"""systemd integration: sd_notify datagrams and socket activation."""

from __future__ import annotations

import os
import signal
import socket

import trio

from mcp_sidecar.demo.servers import serve_echo

from .test_supervisor import echo_once, echo_route


async def test_notify_ready_status_watchdog_and_stopping(nursery, supervised, tmp_path) -> None:
    with trio.fail_after(40):
        path = str(tmp_path / "notify.sock")
        notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        await notify.bind(path)
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        sup = await trio.to_thread.run_sync(
            lambda: supervised([echo_route(echo_port)], env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"})
        )
        seen: list[str] = []

        async def until(line: str) -> None:
            while line not in seen:
                seen.extend((await notify.recv(4096)).decode().split("\n"))

        await until("READY=1")
        status = await trio.to_thread.run_sync(sup.status)
        assert f"MAINPID={status['supervisor']['pid']}" in seen
        assert "STATUS=serving" in seen
        seen.clear()
        await until("WATCHDOG=1")  # every 150 ms while the worker heartbeats
        seen.clear()
        await until("WATCHDOG=1")
        port = await trio.to_thread.run_sync(sup.port, "echo")
        await echo_once(port)
        sup.process.signal(signal.SIGTERM)  # the supervisor drains and exits 0
        await until("STOPPING=1")
        assert await trio.to_thread.run_sync(sup.process.wait) == 0
        notify.close()


async def test_socket_activation_adopts_the_listening_socket(nursery, supervised) -> None:
    with trio.fail_after(40):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(128)
        port = held.getsockname()[1]
        fd = held.fileno()
        # systemd's protocol: the socket as fd 3, LISTEN_FDS=1, LISTEN_PID = the service's pid
        # (the shell's $$, which exec keeps).
        sup = await trio.to_thread.run_sync(
            lambda: supervised(
                [{"name": "echo", "listen": f"127.0.0.1:{port}", "upstream": f"127.0.0.1:{echo_port}"}],
                env={"LISTEN_FDS": "1", "LISTEN_FDNAMES": "mcp-sidecar.socket"},
                prefix=["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"'],
                pass_fds=(fd, 3),
                preexec_fn=lambda: os.dup2(fd, 3),
            )
        )
        status = await trio.to_thread.run_sync(sup.status)
        assert status["routes"][0]["listen"] == [f"127.0.0.1:{port}"]
        await echo_once(port)
        assert (await trio.to_thread.run_sync(sup.command, "stop"))["ok"]
        assert await trio.to_thread.run_sync(sup.process.wait) == 0
        # systemd (here: this test) still holds the socket: a client arriving
        # while the service is down waits in the backlog instead of being refused.
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.close()
        held.close()
