"""What in-line observation costs: the same proxy, observing or not.

Three sidecar processes forward to the same upstreams, measured alternately
in one run:

* ``tcp``: ``protocol = "tcp"`` (opaque; the baseline);
* ``full``: ``protocol = "auto"`` with ``observe_cpu_share = 1`` (every
  chunk observed, whatever it costs);
* ``budget``: ``protocol = "auto"`` with the default ``observe_cpu_share``
  (observation may take that share of the core; beyond it connections are
  shed to opaque forwarding -- the fraction still observed is reported).

Workloads:

* WebSocket text frames per second, echoed, over one connection (64-byte
  JSON-RPC-like messages, 32 in flight);
* HTTP/1.1 keep-alive requests per second (small JSON POST, one connection,
  sequential).

The upstreams are blocking threads in a separate process (the WebSocket one
speaks wsproto) pinned to the other core, so they are not the bottleneck.
Target: >= 0.8.

Usage: scripts/bench observation [--seconds S] [--repeat N]   (default: 5 rounds of 2 s, median)
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

from _net import free_port  # benchmarks/ is the script's directory

BODY = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
REQUEST = (
    b"POST /mcp HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
REPLY_BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(REPLY_BODY)).encode()
    + b"\r\n\r\n"
    + REPLY_BODY
)
MESSAGE = '{"jsonrpc":"2.0","method":"notifications/progress","params":{"p":1}}'


def _pin(core: int) -> None:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {core})


def _http_upstream(conn: socket.socket) -> None:
    """Answers each request of a known size (bench only, not a parser)."""
    with conn:
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while len(buf) >= len(REQUEST):
                buf = buf[len(REQUEST) :]
                conn.sendall(RESPONSE)


def _ws_upstream(conn: socket.socket) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            ws.receive_data(data)
            out = b""
            for event in ws.events():
                if isinstance(event, Request):
                    out += ws.send(AcceptConnection())
                elif isinstance(event, TextMessage):
                    out += ws.send(TextMessage(data=event.data))
                elif isinstance(event, CloseConnection):
                    out += ws.send(event.response())
            if out:
                conn.sendall(out)


def _serve(handler, ports, name) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    ports[name] = listener.getsockname()[1]

    def loop() -> None:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def _upstreams(queue) -> None:
    _pin(0)
    ports: dict[str, int] = {}
    _serve(_http_upstream, ports, "http")
    _serve(_ws_upstream, ports, "ws")
    queue.put(ports)
    threading.Event().wait()


def start_sidecar(
    name: str, protocol: str, share: float | None, ports: dict[str, int]
) -> tuple[subprocess.Popen, dict[str, int], int]:
    listen = {route: free_port() for route in ports}
    admin = free_port()
    directory = tempfile.mkdtemp(prefix=f"mcp-sidecar-obs-{name}-")
    config = os.path.join(directory, "sidecar.toml")
    with open(config, "w") as f:
        f.write(f'[admin]\nlisten = "127.0.0.1:{admin}"\n')
        if share is not None:
            f.write(f"[proxy]\nobserve_cpu_share = {share}\n")
        for route, port in ports.items():
            f.write(
                f'[[route]]\nname = "{route}"\nlisten = "127.0.0.1:{listen[route]}"\n'
                f'upstream = "127.0.0.1:{port}"\nprotocol = "{protocol}"\nhealth_interval = 0\n'
            )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_sidecar",
            "run",
            "--config",
            config,
            "--state-dir",
            directory,
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: _pin(1),
    )
    deadline = time.monotonic() + 20
    for port in listen.values():
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    return proc, listen, admin


def observed(admin: int) -> dict[str, float]:
    """HTTP exchanges and WebSocket text frames the sidecar observed, and connections shed."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    totals = {"http": 0.0, "ws": 0.0, "shed": 0.0}
    for line in text.splitlines():
        if line.startswith("mcp_sidecar_http_requests_total{"):
            totals["http"] += float(line.rsplit(" ", 1)[1])
        elif (
            line.startswith("mcp_sidecar_websocket_frames_total{")
            and 'direction="upstream_to_client"' in line
            and 'opcode="text"' in line
        ):
            totals["ws"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("mcp_sidecar_observer_shed_total{"):
            totals["shed"] += float(line.rsplit(" ", 1)[1])
    return totals


def http_rate(port: int, seconds: float) -> tuple[float, int]:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        done = 0
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < deadline:
            s.sendall(REQUEST)
            got = 0
            while got < len(RESPONSE):
                got += len(s.recv(65536))
            done += 1
        return done / (time.perf_counter() - t0), done


def ws_rate(port: int, seconds: float, window: int = 32) -> tuple[float, int]:
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(ws.send(Request(host="bench", target="/", subprotocols=["mcp"])))
        accepted = False
        while not accepted:
            ws.receive_data(s.recv(65536))
            accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
        frame = ws.send(TextMessage(data=MESSAGE))  # masked once; resending the same bytes is valid
        echoed = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        s.sendall(frame * window)
        in_flight = window
        while True:
            ws.receive_data(s.recv(65536))
            n = sum(1 for e in ws.events() if isinstance(e, TextMessage))
            echoed += n
            in_flight -= n
            if time.perf_counter() >= deadline:
                break
            if in_flight < window // 2:
                s.sendall(frame * (window - in_flight))
                in_flight = window
        rate = echoed / (time.perf_counter() - t0)
        while in_flight > 0:  # collect the echoes still in flight: every frame sent is counted
            ws.receive_data(s.recv(65536))
            in_flight -= sum(1 for e in ws.events() if isinstance(e, TextMessage))
        return rate, echoed - in_flight + window


SIDECARS = {"tcp": ("tcp", None), "full": ("auto", 1.0), "budget": ("auto", None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    _pin(0)
    queue: multiprocessing.Queue = multiprocessing.Queue()
    multiprocessing.Process(target=_upstreams, args=(queue,), daemon=True).start()
    ports = queue.get(timeout=10)
    sidecars = {name: start_sidecar(name, protocol, share, ports) for name, (protocol, share) in SIDECARS.items()}
    rates: dict[str, dict[str, list[float]]] = {name: {"ws": [], "http": []} for name in sidecars}
    sent: dict[str, dict[str, int]] = {name: {"ws": 0, "http": 0} for name in sidecars}
    try:
        names = list(sidecars)
        for i in range(args.repeat):
            # Rotate the order each round: the machine's drift lands on every sidecar alike.
            for name in names[i % len(names) :] + names[: i % len(names)]:
                listen = sidecars[name][1]
                for kind, measure in (("ws", ws_rate), ("http", http_rate)):
                    rate, count = measure(listen[kind], args.seconds)
                    rates[name][kind].append(rate)
                    sent[name][kind] += count
        seen = {name: observed(admin) for name, (_, _, admin) in sidecars.items()}
    finally:
        for proc, _, _ in sidecars.values():
            proc.terminate()
            proc.wait(timeout=40)
    med = {n: {k: sorted(v)[len(v) // 2] for k, v in r.items()} for n, r in rates.items()}
    print(f"observation cost: median of {args.repeat} x {args.seconds:.0f} s, proxy pinned to core 1")
    print(
        f"{'sidecar':<10}{'WS frames/s':>14}{'ratio':>8}{'observed':>10}{'HTTP req/s':>14}{'ratio':>8}"
        f"{'observed':>10}{'shed':>6}"
    )
    for name in SIDECARS:
        row = f"{name:<10}"
        for kind in ("ws", "http"):
            ratio = med[name][kind] / med["tcp"][kind]
            share = seen[name][kind] / sent[name][kind] if sent[name][kind] else 0.0
            row += f"{med[name][kind]:>14.0f}{ratio:>7.2f}x{share:>9.0%} "
        print(row + f"{seen[name]['shed']:>6.0f}")
    for name in ("full", "budget"):
        ws_ratio = med[name]["ws"] / med["tcp"]["ws"]
        http_ratio = med[name]["http"] / med["tcp"]["http"]
        print(
            f"{name} / tcp: WebSocket {ws_ratio:.2f}x, HTTP keep-alive {http_ratio:.2f}x "
            f"(target >= 0.8: {'met' if min(ws_ratio, http_ratio) >= 0.8 else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
