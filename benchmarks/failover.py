"""Failover benchmark: how long a SIGKILLed worker costs new clients.

For each round: wait until the supervisor has a standby, SIGKILL the active
worker, and at once open a new connection and do one 64-byte echo through
it; the time from the kill to the echo's answer is the failover time.  A
refused or failed connection is counted (the target is zero).  Measured
with the standby worker (default) and without it (a cold Python start).

Usage: scripts/bench failover [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mcp_sidecar.supervise.control import NotRunning, send_command


def echo_server() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError, NotRunning):
            value = None
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError


def run(rounds: int, standby: bool, upstream: int) -> tuple[list[float], int]:
    state = Path(tempfile.mkdtemp(prefix="mcp-sidecar-failover-"))
    config = state / "sidecar.toml"
    config.write_text(f"""
[admin]
listen = "off"
[supervisor]
standby = {"true" if standby else "false"}
heartbeat_interval = "200ms"
restart_backoff_initial = "0"
[[route]]
name = "echo"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{upstream}"
health_interval = 0
""")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_sidecar",
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(state),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # the kills are logged as crashes, on purpose
    times, failures = [], 0
    try:
        status = wait_for(lambda: send_command(state, "status", timeout_s=5))
        listen = status["routes"][0]["listen"][0]
        port = int(listen.rsplit(":", 1)[1])
        for _ in range(rounds):
            if standby:
                wait_for(
                    lambda: (send_command(state, "status", timeout_s=5)["standby"] or {}).get("state") == "standby"
                )
            victim = wait_for(lambda: (send_command(state, "status", timeout_s=5)["worker"] or {}).get("pid"))
            time.sleep(0.2)
            t0 = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(b"x" * 64)
                    got = b""
                    while len(got) < 64:
                        chunk = s.recv(64)
                        if not chunk:
                            raise ConnectionError("closed")
                        got += chunk
                times.append(time.perf_counter() - t0)
            except OSError:
                failures += 1
            wait_for(
                lambda victim=victim: (
                    (send_command(state, "status", timeout_s=5)["worker"] or {}).get("pid") not in (None, victim)
                )
            )
    finally:
        proc.terminate()
        proc.wait(timeout=40)
    return times, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    upstream = echo_server()
    print(
        f"failover benchmark: SIGKILL the active worker, time until a new connection's echo; {args.rounds} rounds",
        flush=True,
    )
    for standby in (True, False):
        times, failures = run(args.rounds, standby, upstream)
        ms = sorted(t * 1000 for t in times)
        label = "with standby worker" if standby else "cold start (no standby)"
        print(
            f"{label:<26} p50 {statistics.median(ms):7.1f} ms   max {ms[-1]:7.1f} ms   "
            f"refused/failed {failures}/{args.rounds}"
        )


if __name__ == "__main__":
    main()
