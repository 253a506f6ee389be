"""Soak: the default supervised sidecar under mixed traffic and recurring
faults for minutes; reports RSS, descriptor and log growth.

Traffic (all through the proxy, observation on, default settings but for
the ports): TCP echo on a fresh connection per request, long-lived echo
streams, MCP over streamable HTTP (JSON and SSE replies, a slow tool with
progress), MCP over WebSocket, the legacy HTTP+SSE transport, SSE tick
streams, and an admin poller (/metrics, /api/connections, /readyz) as a
dashboard would.  Faults, each on its own period: the active worker
SIGKILLed, a graceful restart, a reload.  Every minute a row: requests
served, client errors, the supervisor's and the active worker's RSS and
open descriptors, log bytes written.  The summary compares the last minute
with the first (after warm-up): what grows without bound shows there.

Usage: scripts/soak [--minutes M] (default 10); scripts/soak also runs the
fault suite at ten times its CI size first (tests/faults).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mcp_sidecar.demo.drive import drive_mcp  # noqa: E402
from mcp_sidecar.demo.servers import serve_echo, serve_http, serve_ws  # noqa: E402
from mcp_sidecar.net.http import request  # noqa: E402
from mcp_sidecar.supervise.control import send_command  # noqa: E402

KILL_EVERY_S = 60.0
RESTART_EVERY_S = 90.0
RELOAD_EVERY_S = 150.0


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Tally:
    def __init__(self) -> None:
        self.served = 0
        self.errors = 0


async def echo_churn(port: int, tally: Tally, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            with trio.fail_after(10):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                async with stream:
                    await stream.send_all(b"x" * 200)
                    await stream.send_eof()
                    got = b""
                    while chunk := await stream.receive_some(65536):
                        got += chunk
            if got == b"x" * 200:
                tally.served += 1
            else:
                tally.errors += 1
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            tally.errors += 1  # includes connections open in a killed worker (the fault model)
            await trio.sleep(0.05)


async def echo_stream(port: int, tally: Tally, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                for _ in range(600):  # about a minute, then a fresh one
                    if stop.is_set():
                        break
                    with trio.fail_after(10):
                        await stream.send_all(b"s" * 1000)
                        got = 0
                        while got < 1000:
                            chunk = await stream.receive_some(1000 - got)
                            if not chunk:
                                raise trio.BrokenResourceError
                            got += len(chunk)
                    tally.served += 1
                    await trio.sleep(0.1)
        except (OSError, trio.BrokenResourceError, trio.TooSlowError):
            tally.errors += 1
            await trio.sleep(0.2)


async def mcp_sessions(http_port: int, ws_port: int, tally: Tally, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            with trio.fail_after(30):
                counts = await drive_mcp("127.0.0.1", http_port, ws_port)
            tally.served += sum(counts.values())
        except Exception:
            tally.errors += 1
        await trio.sleep(0.2)


async def sse_ticks(http_port: int, tally: Tally, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            with trio.fail_after(30):
                reply = await request("127.0.0.1", http_port, "/ticks?n=20&interval=0.5")
            tally.served += reply.body.count(b"event: tick")
        except Exception:
            tally.errors += 1
            await trio.sleep(0.2)


async def admin_poller(admin: str, tally: Tally, stop: trio.Event) -> None:
    host, port = admin.rsplit(":", 1)
    while not stop.is_set():
        for path in ("/metrics", "/api/connections", "/readyz", "/api/status"):
            try:
                with trio.fail_after(10):
                    await request(host, int(port), path)
                tally.served += 1
            except Exception:
                tally.errors += 1
        await trio.sleep(1.0)


async def faults(state_dir: Path, config: Path, counts: dict[str, int], stop: trio.Event, started: float) -> None:
    next_at = {"kill": KILL_EVERY_S, "restart": RESTART_EVERY_S, "reload": RELOAD_EVERY_S}
    while not stop.is_set():
        await trio.sleep(1.0)
        elapsed = time.monotonic() - started
        for kind, at in list(next_at.items()):
            if elapsed < at:
                continue
            next_at[kind] = at + {"kill": KILL_EVERY_S, "restart": RESTART_EVERY_S, "reload": RELOAD_EVERY_S}[kind]
            status = await trio.to_thread.run_sync(send_command, state_dir, "status")
            if kind == "kill" and status.get("worker"):
                os.kill(status["worker"]["pid"], signal.SIGKILL)
            elif kind == "restart":
                await trio.to_thread.run_sync(lambda: send_command(state_dir, "restart"))
            elif kind == "reload":
                config.write_text(config.read_text())
                await trio.to_thread.run_sync(lambda: send_command(state_dir, "reload"))
            counts[kind] += 1


async def soak(minutes: float) -> int:
    work = Path(tempfile.mkdtemp(prefix="mcp-sidecar-soak-"))
    log_path = work / "proxy.log"
    stop = trio.Event()
    async with trio.open_nursery() as upstreams:
        http_up = await upstreams.start(serve_http, "127.0.0.1", 0)
        echo_up = await upstreams.start(serve_echo, "127.0.0.1", 0)
        ws_up = await upstreams.start(serve_ws, "127.0.0.1", 0)
        config = work / "sidecar.toml"
        config.write_text(
            '[admin]\nlisten = "127.0.0.1:0"\n'
            f'[[route]]\nname = "http"\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:{http_up}"\n'
            f'[[route]]\nname = "echo"\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:{echo_up}"\n'
            f'[[route]]\nname = "ws"\nlisten = "127.0.0.1:0"\nupstream = "127.0.0.1:{ws_up}"\n'
        )
        state_dir = work / "state"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mcp_sidecar",
                    "run",
                    "--config",
                    str(config),
                    "--state-dir",
                    str(state_dir),
                    "--log-format",
                    "json",
                ],
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
            try:
                while not proc.stdout.readline().startswith("admin "):  # type: ignore[union-attr]
                    pass
                status = send_command(state_dir, "status")
                ports = {r["name"]: int(r["listen"][0].rsplit(":", 1)[1]) for r in status["routes"]}
                admin = status["admin"]
                tally = Tally()
                fault_counts = {"kill": 0, "restart": 0, "reload": 0}
                rows = []
                started = time.monotonic()
                async with trio.open_nursery() as load:
                    for _ in range(4):
                        load.start_soon(echo_churn, ports["echo"], tally, stop)
                    for _ in range(20):
                        load.start_soon(echo_stream, ports["echo"], tally, stop)
                    load.start_soon(mcp_sessions, ports["http"], ports["ws"], tally, stop)
                    load.start_soon(sse_ticks, ports["http"], tally, stop)
                    load.start_soon(admin_poller, admin, tally, stop)
                    load.start_soon(faults, state_dir, config, fault_counts, stop, started)
                    print(
                        f"{'minute':>6} {'served':>8} {'errors':>6} {'sup RSS':>8} {'wkr RSS':>8} "
                        f"{'sup fds':>7} {'wkr fds':>7} {'log KiB':>8}"
                    )
                    last_served = last_errors = 0
                    for minute in range(1, int(minutes) + 1):
                        await trio.sleep_until(trio.current_time() + 60.0)
                        status = await trio.to_thread.run_sync(send_command, state_dir, "status")
                        worker = (status.get("worker") or {}).get("pid")
                        row = {
                            "minute": minute,
                            "served": tally.served - last_served,
                            "errors": tally.errors - last_errors,
                            "sup_rss_kib": rss_kib(proc.pid),
                            "worker_rss_kib": rss_kib(worker) if worker else 0,
                            "sup_fds": fds(proc.pid),
                            "worker_fds": fds(worker) if worker else 0,
                            "log_kib": log_path.stat().st_size // 1024,
                        }
                        last_served, last_errors = tally.served, tally.errors
                        rows.append(row)
                        print(
                            f"{minute:>6} {row['served']:>8} {row['errors']:>6} {row['sup_rss_kib'] >> 10:>6}MB "
                            f"{row['worker_rss_kib'] >> 10:>6}MB {row['sup_fds']:>7} {row['worker_fds']:>7} "
                            f"{row['log_kib']:>8}",
                            flush=True,
                        )
                    stop.set()
                    load.cancel_scope.cancel()
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    proc.kill()
        upstreams.cancel_scope.cancel()
    first, last = rows[min(1, len(rows) - 1)], rows[-1]
    log_rate = [b["log_kib"] - a["log_kib"] for a, b in itertools.pairwise(rows)]
    summary = {
        "minutes": len(rows),
        "served": sum(r["served"] for r in rows),
        "errors": sum(r["errors"] for r in rows),
        "faults": fault_counts,
        "worker_rss_mib": [round(first["worker_rss_kib"] / 1024, 1), round(last["worker_rss_kib"] / 1024, 1)],
        "supervisor_rss_mib": [round(first["sup_rss_kib"] / 1024, 1), round(last["sup_rss_kib"] / 1024, 1)],
        "worker_fds": [first["worker_fds"], last["worker_fds"]],
        "supervisor_fds": [first["sup_fds"], last["sup_fds"]],
        "log_kib_per_minute": log_rate,
        "proxy_exit": proc.returncode,
    }
    print("summary (second minute -> last minute):", json.dumps(summary))
    return 0 if proc.returncode == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    sys.exit(trio.run(soak, args.minutes))


if __name__ == "__main__":
    main()
