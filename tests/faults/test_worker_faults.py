"""The worker killed, stopped or replaced while clients keep coming and
streams keep flowing (supervised mode)."""

from __future__ import annotations

import os
import signal

import trio

from mcp_sidecar.demo.servers import serve_echo

from ..conftest import connect, receive_all, receive_exactly, run_proxyctl, scaled
from ..supervise.test_supervisor import echo_route, replaced, wait_status


class Load:
    """Clients opening a fresh connection per echo, as fast as they are served.

    A new connection is never refused while any worker (or the backlog the
    supervisor holds) can take it; one that was open inside a killed worker
    is lost (the fault model: docs/reliability.md)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.served = 0
        self.refused = 0
        self.lost = 0
        self.slowest = 0.0

    async def client(self, stop: trio.Event) -> None:
        while not stop.is_set():
            t0 = trio.current_time()
            try:
                sock = trio.socket.socket()
                await sock.connect(("127.0.0.1", self.port))
            except ConnectionRefusedError:
                self.refused += 1
                continue
            stream = trio.SocketStream(sock)
            try:
                await stream.send_all(b"x" * 64)
                await stream.send_eof()
                if await receive_all(stream) == b"x" * 64:
                    self.served += 1
                    self.slowest = max(self.slowest, trio.current_time() - t0)
                else:
                    self.lost += 1
            except trio.BrokenResourceError:
                self.lost += 1
            finally:
                await stream.aclose()


async def _under_load(sup, port: int, fault, clients: int = 8) -> Load:
    load = Load(port)
    stop = trio.Event()
    async with trio.open_nursery() as n:
        for _ in range(clients):
            n.start_soon(load.client, stop)
        while load.served < 50:
            await trio.sleep(0.01)
        await fault()
        served = load.served
        while load.served < served + scaled(200):  # the load goes on through the fault
            await trio.sleep(0.01)
        stop.set()
    return load


async def test_worker_sigkill_under_load_refuses_nobody(nursery, supervised) -> None:
    with trio.fail_after(60 * scaled(1)):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        sup = await trio.to_thread.run_sync(supervised, [echo_route(echo_port)])
        port = await trio.to_thread.run_sync(sup.port, "echo")
        for _ in range(scaled(3)):
            status = await wait_status(sup, lambda s: s["standby"] and s["standby"]["state"] == "standby")
            victim = status["worker"]["pid"]
            load = await _under_load(
                sup, port, lambda victim=victim: trio.to_thread.run_sync(os.kill, victim, signal.SIGKILL)
            )
            print(
                f"SIGKILL under load: {load.served} served, {load.refused} refused, {load.lost} lost "
                f"(open in the killed worker), slowest {load.slowest * 1000:.0f} ms"
            )
            assert load.refused == 0
            assert load.lost <= 8  # at most the connections open at the kill
            await wait_status(sup, replaced(victim))


async def test_worker_sigstop_under_load_is_replaced_and_refuses_nobody(nursery, supervised) -> None:
    with trio.fail_after(60):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        sup = await trio.to_thread.run_sync(supervised, [echo_route(echo_port)])
        port = await trio.to_thread.run_sync(sup.port, "echo")
        status = await wait_status(sup, lambda s: s["standby"] and s["standby"]["state"] == "standby")
        victim = status["worker"]["pid"]
        try:
            load = await _under_load(sup, port, lambda: trio.to_thread.run_sync(os.kill, victim, signal.SIGSTOP))
            # (stopped until replaced: with several workers the load may be served before it is)
            await wait_status(sup, lambda s, victim=victim: victim not in {w["pid"] for w in s["workers"]})
        finally:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        print(
            f"SIGSTOP under load: {load.served} served, {load.refused} refused, {load.lost} lost, "
            f"slowest {load.slowest * 1000:.0f} ms"
        )
        assert load.refused == 0
        assert load.slowest < 1.0 + 1.5  # heartbeat_timeout (1 s) and the takeover
        status = await wait_status(sup, replaced(victim))
        assert status["restarts"]["hang"] == 1


async def test_restart_and_reload_under_streaming_transfers(nursery, supervised) -> None:
    streams = scaled(20)
    with trio.fail_after(90):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        sup = await trio.to_thread.run_sync(supervised, [echo_route(echo_port)], {}, {"drain_timeout": "60s"})
        port = await trio.to_thread.run_sync(sup.port, "echo")
        ok: list[int] = []
        moving = trio.Event()
        started = 0

        async def stream_one(i: int, chunks: int) -> None:
            nonlocal started
            payload = (b"%04d" % i) * 4096  # 16 KiB
            stream = await connect(port)
            async with stream:
                started += 1
                if started == streams:
                    moving.set()
                for _ in range(chunks):
                    await stream.send_all(payload)
                    assert await receive_exactly(stream, len(payload)) == payload
                    await trio.sleep(0.01)
                await stream.send_eof()
                assert await receive_all(stream) == b""
            ok.append(i)

        async with trio.open_nursery() as n:
            for i in range(streams):
                n.start_soon(stream_one, i, 60)
            await moving.wait()
            assert (await trio.to_thread.run_sync(sup.command, "restart"))["ok"]
            await trio.to_thread.run_sync(sup.config_path.write_text, sup.config_path.read_text())
            assert (await trio.to_thread.run_sync(sup.command, "reload"))["ok"]
            for i in range(streams, streams + 3):  # new clients meanwhile, on the newest worker
                n.start_soon(stream_one, i, 2)
        assert sorted(ok) == list(range(streams + 3))
        # Counted across every worker that served them: the old ones drained and exited.
        status = await wait_status(
            sup, lambda s: not s["draining_workers"] and s["routes"][0]["connections_total"] == streams + 3
        )
        assert status["routes"][0]["connections_active"] == 0
        # Each worker replaced counts once (every one of them, by the restart, then by the reload).
        workers = status["workers_target"]
        assert (status["restarts"]["restart"], status["restarts"]["reload"]) == (workers, workers)
        text = run_proxyctl("status", "--state-dir", str(sup.state_dir))
        assert f"active 0, total {streams + 3}" in text.stdout
