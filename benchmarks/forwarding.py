"""Forwarding benchmark: mcp-sidecar against a direct connection and socat.

Measured in one run, on loopback, with the same client code for every path:

* 64-byte round-trip latency over one connection (p50, p99);
* bulk upload and bulk download over one connection (MB/s).

The upstream servers (echo, sink, source) run in a separate process with
blocking sockets so they are never the bottleneck; the client runs here.
Ratios are printed against the direct path and against socat (when socat
is installed: ``apt-get install socat``).  Targets: RTT p50 <=
1.0x socat, upload >= 3x socat.

Usage: scripts/bench [--rtt-rounds N] [--bulk-mib N] [--repeat N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from _net import free_port, wait_listening  # benchmarks/ is the script's directory

CHUNK = 1024 * 1024
MSG = 64


# --- upstream servers (separate process, blocking sockets) ---------------------------


def _serve(listener: socket.socket, handler) -> None:
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _sink(conn: socket.socket) -> None:
    buf = bytearray(CHUNK)
    total = 0
    with conn:
        while n := conn.recv_into(buf):
            total += n
        conn.sendall(total.to_bytes(8, "big"))


def _source(conn: socket.socket) -> None:
    with conn:
        try:
            want = int.from_bytes(_recv_exact(conn, 8), "big")
        except EOFError:
            return  # a readiness probe
        block = b"\x5a" * CHUNK
        view = memoryview(block)
        while want > 0:
            n = conn.send(view[: min(CHUNK, want)])
            want -= n


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _pin(pid: int, core: int) -> None:
    """Pin a process to one core (when there are two or more): the client and
    the upstream servers share core 0, the forwarder under test gets core 1,
    so every forwarder runs under the same conditions."""
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, {core})


def _servers_main(ports: multiprocessing.Queue[dict[str, int]]) -> None:
    _pin(0, 0)
    result = {}
    for name, handler in (("echo", _echo), ("sink", _sink), ("source", _source)):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        result[name] = listener.getsockname()[1]
        threading.Thread(target=_serve, args=(listener, handler), daemon=True).start()
    ports.put(result)
    signal.pause()


# --- forwarders ---------------------------------------------------------------------


@dataclass
class Path_:
    name: str
    ports: dict[str, int]
    procs: list[subprocess.Popen]

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def start_sidecar(upstream: dict[str, int], state_dir: str, name: str = "mcp-sidecar", src: str | None = None) -> Path_:
    """The supervised sidecar, as deployed (the data path is the worker's);
    ``src``: run the package from another source tree (an A/B comparison)."""
    ports = {n: free_port() for n in upstream}
    args = [
        sys.executable,
        "-m",
        "mcp_sidecar",
        "run",
        "--log-level",
        "warning",
        "--admin",
        "127.0.0.1:0",
        "--state-dir",
        state_dir,
    ]
    for n, up in upstream.items():
        args += ["--forward", f"127.0.0.1:{ports[n]}:127.0.0.1:{up}"]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    # Pinned before exec, so the supervisor's workers inherit the core.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, preexec_fn=lambda: _pin(0, 1), env=env)
    for port in ports.values():
        wait_listening(port, 15.0)
    return Path_(name, ports, [proc])


def start_socat(upstream: dict[str, int]) -> Path_ | None:
    socat = shutil.which("socat")
    if socat is None:
        return None
    ports = {name: free_port() for name in upstream}
    procs = [
        subprocess.Popen(
            [socat, f"TCP-LISTEN:{ports[n]},bind=127.0.0.1,fork,reuseaddr", f"TCP:127.0.0.1:{up}"],
            stderr=subprocess.DEVNULL,
        )
        for n, up in upstream.items()
    ]
    for p in procs:
        _pin(p.pid, 1)  # inherited by the per-connection children
    for port in ports.values():
        wait_listening(port, 15.0)
    return Path_("socat", ports, procs)


# --- measurements -------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def measure_rtt(port: int, rounds: int) -> tuple[float, float]:
    """p50 and p99 of a 64-byte ping-pong, in microseconds."""
    msg = b"m" * MSG
    samples = []
    with _connect(port) as s:
        for i in range(rounds + 200):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            got = 0
            while got < MSG:
                got += len(s.recv(MSG - got))
            if i >= 200:  # warm-up excluded
                samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def measure_upload(port: int, nbytes: int) -> float:
    block = memoryview(b"\xa5" * CHUNK)
    with _connect(port) as s:
        t0 = time.perf_counter()
        left = nbytes
        while left > 0:
            left -= s.send(block[: min(CHUNK, left)])
        s.shutdown(socket.SHUT_WR)
        total = int.from_bytes(_recv_exact(s, 8), "big")
        elapsed = time.perf_counter() - t0
    assert total == nbytes, (total, nbytes)
    return nbytes / elapsed / 1e6


def measure_download(port: int, nbytes: int) -> float:
    buf = bytearray(CHUNK)
    with _connect(port) as s:
        t0 = time.perf_counter()
        s.sendall(nbytes.to_bytes(8, "big"))
        got = 0
        while n := s.recv_into(buf):
            got += n
        elapsed = time.perf_counter() - t0
    assert got == nbytes, (got, nbytes)
    return nbytes / elapsed / 1e6


def run(paths: list[Path_], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {p.name: {} for p in paths}
    nbytes = args.bulk_mib * 1024 * 1024
    # Interleave the paths in each repetition so drift affects all alike.
    for _ in range(args.repeat):
        for p in paths:
            r = results[p.name]
            p50, p99 = measure_rtt(p.ports["echo"], args.rtt_rounds)
            r.setdefault("rtt_p50", []).append(p50)
            r.setdefault("rtt_p99", []).append(p99)
            r.setdefault("upload", []).append(measure_upload(p.ports["sink"], nbytes))
            r.setdefault("download", []).append(measure_download(p.ports["source"], nbytes))
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}


def report(results: dict[str, dict[str, float]]) -> None:
    names = list(results)
    print(f"{'path':<14}{'RTT p50 us':>12}{'RTT p99 us':>12}{'upload MB/s':>13}{'download MB/s':>15}")
    for name in names:
        r = results[name]
        print(f"{name:<14}{r['rtt_p50']:>12.1f}{r['rtt_p99']:>12.1f}{r['upload']:>13.0f}{r['download']:>15.0f}")
    side = results["mcp-sidecar"]
    print()
    if "baseline" in results:
        base = results["baseline"]
        print(
            f"mcp-sidecar / baseline: RTT p50 {side['rtt_p50'] / base['rtt_p50']:.2f}x, "
            f"RTT p99 {side['rtt_p99'] / base['rtt_p99']:.2f}x, upload {side['upload'] / base['upload']:.2f}x, "
            f"download {side['download'] / base['download']:.2f}x"
        )
    for ref in ("direct", "socat"):
        if ref not in results:
            continue
        base = results[ref]
        print(
            f"mcp-sidecar / {ref}: RTT p50 {side['rtt_p50'] / base['rtt_p50']:.2f}x, "
            f"RTT p99 {side['rtt_p99'] / base['rtt_p99']:.2f}x, upload {side['upload'] / base['upload']:.2f}x, "
            f"download {side['download'] / base['download']:.2f}x"
        )
    if "socat" in results:
        socat = results["socat"]
        rtt = side["rtt_p50"] / socat["rtt_p50"]
        up = side["upload"] / socat["upload"]
        print(f"target RTT p50 <= 1.0x socat: {rtt:.2f}x {'met' if rtt <= 1.0 else 'NOT met'}")
        print(f"target upload >= 3x socat:    {up:.2f}x {'met' if up >= 3.0 else 'NOT met'}")
    else:
        print("socat not installed (apt-get install socat): socat comparison skipped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-rounds", type=int, default=5000)
    parser.add_argument("--bulk-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--baseline",
        metavar="SRC_DIR",
        default=None,
        help="Also measure the sidecar from another source tree (e.g. a git worktree's src/).",
    )
    args = parser.parse_args()

    _pin(0, 0)
    queue: multiprocessing.Queue = multiprocessing.Queue()
    servers = multiprocessing.Process(target=_servers_main, args=(queue,), daemon=True)
    servers.start()
    upstream = queue.get(timeout=10)
    state_dir = tempfile.mkdtemp(prefix="mcp-sidecar-bench-")
    paths = [Path_("direct", upstream, []), start_sidecar(upstream, state_dir)]
    if args.baseline:
        paths.append(start_sidecar(upstream, tempfile.mkdtemp(prefix="mcp-sidecar-bench-"), "baseline", args.baseline))
    socat = start_socat(upstream)
    if socat is not None:
        paths.append(socat)
    try:
        print(
            f"forwarding benchmark: {os.cpu_count()} cores (client+servers on core 0, forwarder on core 1), "
            f"{args.rtt_rounds} round trips of {MSG} B, "
            f"{args.bulk_mib} MiB bulk each way, median of {args.repeat}"
        )
        report(run(paths, args))
    finally:
        for p in paths:
            p.close()
        servers.terminate()


if __name__ == "__main__":
    main()
