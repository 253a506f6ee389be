"""What in-line observation costs: the same proxy, observing or not.

Two sidecar processes forward to the same upstreams, one with
``protocol = "auto"`` (HTTP and WebSocket observation on), one with
``protocol = "tcp"`` (opaque); measured alternately in one run:

* WebSocket text frames per second, echoed, over one connection (64-byte
  JSON-RPC-like messages, 32 in flight);
* HTTP/1.1 keep-alive requests per second (small JSON POST, one connection,
  sequential).

The upstreams are blocking threads in a separate process (the WebSocket one
speaks wsproto), so they are not the bottleneck.  Target (issue #5): >= 0.8.

Usage: scripts/bench observation [--seconds S]
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

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage

BODY = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
REQUEST = (b"POST /mcp HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
REPLY_BODY = b'{"jsonrpc":"2.0","id":1,"result":{}}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(REPLY_BODY)).encode() + b"\r\n\r\n" + REPLY_BODY)
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
                buf = buf[len(REQUEST):]
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sidecar(protocol: str, ports: dict[str, int]) -> tuple[subprocess.Popen, dict[str, int]]:
    listen = {name: _free_port() for name in ports}
    directory = tempfile.mkdtemp(prefix=f"mcp-sidecar-obs-{protocol}-")
    config = os.path.join(directory, "sidecar.toml")
    with open(config, "w") as f:
        f.write('[admin]\nlisten = "off"\n')
        for name, port in ports.items():
            f.write(f'[[route]]\nname = "{name}"\nlisten = "127.0.0.1:{listen[name]}"\n'
                    f'upstream = "127.0.0.1:{port}"\nprotocol = "{protocol}"\nhealth_interval = 0\n')
    proc = subprocess.Popen([sys.executable, "-m", "mcp_sidecar", "run", "--config", config, "--state-dir",
                             directory, "--log-level", "warning"], stdout=subprocess.DEVNULL,
                            preexec_fn=lambda: _pin(1))
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
    return proc, listen


def http_rate(port: int, seconds: float) -> float:
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
        return done / (time.perf_counter() - t0)


def ws_rate(port: int, seconds: float, window: int = 32) -> float:
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
        return echoed / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    _pin(0)
    queue: multiprocessing.Queue = multiprocessing.Queue()
    multiprocessing.Process(target=_upstreams, args=(queue,), daemon=True).start()
    ports = queue.get(timeout=10)
    sidecars = {p: start_sidecar(p, ports) for p in ("auto", "tcp")}
    results: dict[str, dict[str, list[float]]] = {p: {"ws": [], "http": []} for p in sidecars}
    try:
        for _ in range(args.repeat):
            for protocol, (_, listen) in sidecars.items():
                results[protocol]["ws"].append(ws_rate(listen["ws"], args.seconds))
                results[protocol]["http"].append(http_rate(listen["http"], args.seconds))
    finally:
        for proc, _ in sidecars.values():
            proc.terminate()
            proc.wait(timeout=40)
    med = {p: {k: sorted(v)[len(v) // 2] for k, v in r.items()} for p, r in results.items()}
    print(f"observation cost: median of {args.repeat} x {args.seconds:.0f} s, proxy pinned to core 1")
    print(f"{'protocol':<10}{'WS frames/s':>14}{'HTTP req/s':>14}")
    for protocol in ("tcp", "auto"):
        print(f"{protocol:<10}{med[protocol]['ws']:>14.0f}{med[protocol]['http']:>14.0f}")
    ws_ratio = med["auto"]["ws"] / med["tcp"]["ws"]
    http_ratio = med["auto"]["http"] / med["tcp"]["http"]
    print(f"observed / opaque: WebSocket {ws_ratio:.2f}x, HTTP keep-alive {http_ratio:.2f}x "
          f"(target >= 0.8: {'met' if min(ws_ratio, http_ratio) >= 0.8 else 'NOT met'})")


if __name__ == "__main__":
    main()
