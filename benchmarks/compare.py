"""The benchmark users compare: mcp-sidecar against other forwarders, one run, one table.

Forwarders, each in front of the same upstreams:

* ``direct`` (no forwarder), ``socat`` (fork per connection), ``haproxy``
  (when installed), a stdlib ``asyncio`` forwarder and a naive ``threaded``
  one (benchmarks/), and the sidecar twice: ``sidecar`` (the default
  configuration, supervised, ``protocol = "auto"``: every exchange observed)
  and ``sidecar-tcp`` (``protocol = "tcp"``: opaque), and ``sidecar-1w``
  (the default with ``[proxy] workers = 1``: one forwarding process).

Workloads (ratios to socat; higher is better but for RTT and memory):

* ``rtt``: 64-byte ping-pong on one connection, p50 and p99 (Python client);
* ``upload``, ``bidir``: bulk on one connection (to a sink; both ways at once);
* ``http-ka-1``, ``http-ka-50``: HTTP keep-alive, 1 KiB responses from nginx,
  1 and 50 connections (wrk);
* ``churn-1``, ``churn-50``: one request per new connection (wrk with
  ``Connection: close``), 1 and 50 clients;
* ``ws-1``, ``ws-50``: WebSocket 200-byte text frames echoed, 1 and 50
  connections (benchmarks/loadgen.c);
* ``idle-1000``: 1000 idle connections: the PSS of the forwarder's whole
  process tree, and its growth per connection over a second thousand;
* ``mcp-call``: a 2026-07-28 ``tools/call`` (mirrored headers, ``_meta``) on one
  reused connection, one at a time: p50 and p99 latency in microseconds;
* ``mcp-cpu`` (sidecars only): the workers' and the supervisor's CPU per 1000 observed MCP
  exchanges (JSON-RPC POSTs, wrk), i.e. vCPU per 1000 requests/s, and how
  many were observed and shed.

Repetitions are interleaved (every forwarder once per round, in a rotating
order); medians are printed with the spread.  Nothing is pinned unless
``--pin`` (as users run it).  Needs gcc, nginx and wrk (``apt-get install
nginx wrk``; socat and haproxy are compared when installed).

With ``--tls``, the default sidecar is measured twice more on the HTTP
workloads: with TLS on the HTTP route (``sidecar-tls``; wrk over https) and
with the access gate (``sidecar-gate``; wrk sends the bearer token).

With ``--views``, the cost of the operator's views: the default sidecar
without its history (``sidecar-nohistory``, ``[observe] history = 0``), with
the MCP request log on (``sidecar-reqlog``; its default rate cap), with a
``proxyctl tap`` client reading every MCP message (``sidecar-tapped``),
recording (``sidecar-recording``) and exporting every MCP request as a span
to a collector that takes them (``sidecar-otel``), that accepts and never
answers (``sidecar-otel-blackhole``) or that refuses connections
(``sidecar-otel-refused``); ``mcp-cpu`` reports the tree's memory after its
load (``pss_MB_after_mcp``).

Usage: scripts/bench [--rounds N] [--seconds S] [--only NAMES] [--workloads NAMES] [--tls] [--views]
                    [--baseline SRC_DIR]
"""

from __future__ import annotations

import argparse
import json
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from _net import free_port, wait_listening  # benchmarks/ is the script's directory

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
ONE_KB = b"x" * 1024
MCP_BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
MCP_REPLY = '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}'
WORKLOADS = (
    "rtt",
    "upload",
    "bidir",
    "http-ka-1",
    "http-ka-50",
    "churn-1",
    "churn-50",
    "ws-1",
    "ws-50",
    "idle-1000",
    "mcp-cpu",
    "mcp-call",
)


# --- upstreams --------------------------------------------------------------------------------


class Upstreams:
    """nginx (HTTP), the C echo servers (plain and WebSocket), a sink."""

    def __init__(self, work: Path, loadgen: str) -> None:
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[str, int] = {}
        for name, args in (("echo", [loadgen, "echo", "0"]), ("ws", [loadgen, "echo", "0", "ws"])):
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
            self.ports[name] = int(proc.stdout.readline())  # type: ignore[union-attr]
            self.procs.append(proc)
        self.ports["sink"] = self._sink()
        self.ports["http"] = free_port()
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {work}/nginx-body;
    server {{
        listen 127.0.0.1:{self.ports["http"]} backlog=4096 reuseport;
        location /1k {{ default_type text/plain; return 200 "{ONE_KB.decode()}"; }}
        location /mcp {{ default_type application/json; return 200 '{MCP_REPLY}'; }}
        location /v1/traces {{ default_type application/x-protobuf; return 200 ""; }}
    }}
}}
""")
        self.procs.append(
            subprocess.Popen(
                [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-g", "daemon off;"],
                stderr=subprocess.DEVNULL,
            )
        )
        wait_listening(self.ports["http"])

    @staticmethod
    def _sink() -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)

        def serve() -> None:
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=_sink_one, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1]

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _sink_one(conn: socket.socket) -> None:
    buf = bytearray(1 << 20)
    total = 0
    with conn:
        while n := conn.recv_into(buf):
            total += n
        conn.sendall(total.to_bytes(8, "big"))


# --- forwarders ---------------------------------------------------------------------------------


@dataclass
class Forwarder:
    name: str
    ports: dict[str, int]
    procs: list[subprocess.Popen] = field(default_factory=list)
    state_dir: str | None = None
    #: How wrk reaches the HTTP route (https for a TLS route) and what it sends (a gate's bearer).
    scheme: str = "http"
    headers: list[str] = field(default_factory=list)
    #: Measured on the HTTP workloads only (the TLS and gate variants).
    http_only: bool = False

    @property
    def root_pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def close(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()


def _specs(up: Upstreams) -> tuple[dict[str, int], list[str]]:
    ports = {name: free_port() for name in up.ports}
    return ports, [f"{ports[n]}:127.0.0.1:{up.ports[n]}" for n in up.ports]


def start_python(name: str, script: str, up: Upstreams, pin: bool) -> Forwarder:
    ports, specs = _specs(up)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / script), *specs], stdout=subprocess.PIPE, text=True, preexec_fn=_pinner(pin)
    )
    proc.stdout.readline()  # type: ignore[union-attr]
    for port in ports.values():
        wait_listening(port)
    return Forwarder(name, ports, [proc])


def start_socat(up: Upstreams, pin: bool) -> Forwarder | None:
    socat = shutil.which("socat")
    if socat is None:
        return None
    ports, _ = _specs(up)
    procs = [
        subprocess.Popen(
            [
                socat,
                f"TCP-LISTEN:{ports[n]},bind=127.0.0.1,fork,reuseaddr,backlog=4096",
                f"TCP:127.0.0.1:{up.ports[n]},nodelay",
            ],
            stderr=subprocess.DEVNULL,
            preexec_fn=_pinner(pin),
        )
        for n in up.ports
    ]
    for port in ports.values():
        wait_listening(port)
    return Forwarder("socat", ports, procs)


def start_haproxy(up: Upstreams, work: Path, pin: bool) -> Forwarder | None:
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if haproxy is None:
        return None
    ports, _ = _specs(up)
    conf = work / "haproxy.cfg"
    lines = [
        "global",
        "  maxconn 8000",
        "  nbthread 2",
        "defaults",
        "  mode tcp",
        "  timeout connect 5s",
        "  timeout client 1h",
        "  timeout server 1h",
        "  option tcp-smart-accept",
        "",
    ]
    for n in up.ports:
        lines += [f"listen {n}", f"  bind 127.0.0.1:{ports[n]}", f"  server s 127.0.0.1:{up.ports[n]}", ""]
    conf.write_text("\n".join(lines))
    proc = subprocess.Popen([haproxy, "-db", "-f", str(conf)], stderr=subprocess.DEVNULL, preexec_fn=_pinner(pin))
    for port in ports.values():
        wait_listening(port)
    return Forwarder("haproxy", ports, [proc])


def start_sidecar(
    name: str,
    up: Upstreams,
    work: Path,
    protocol: str,
    pin: bool,
    src: str | None = None,
    http_route: dict[str, str] | None = None,
    extra: list[str] | None = None,
    after_route: dict[str, list[str]] | None = None,
) -> Forwarder:
    """``http_route``: extra settings of the HTTP route only (TLS, the gate);
    ``extra``: more TOML (an [observe] section); ``after_route``: TOML lines
    right after a route's table (its ``[[route.fault]]`` tables)."""
    ports = {n: free_port() for n in up.ports}
    conf = work / f"{name}.toml"
    lines = ["[admin]", f'listen = "127.0.0.1:{free_port()}"', "", *(extra or [])]
    if protocol != "auto":
        lines += ["[defaults]", f'protocol = "{protocol}"', ""]
    for n in up.ports:
        lines += [
            "[[route]]",
            f'name = "{n}"',
            f'listen = "127.0.0.1:{ports[n]}"',
            f'upstream = "127.0.0.1:{up.ports[n]}"',
            "max_connections = 20000",
        ]
        if n == "http":
            lines += [f'{k} = "{v}"' for k, v in (http_route or {}).items()]
        lines.append("")
        lines += (after_route or {}).get(n, [])
    conf.write_text("\n".join(lines))
    state_dir = str(work / f"{name}-state")
    env = {**os.environ, "PYTHONPATH": src or str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_sidecar", "run", "--config", str(conf), "--state-dir", state_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        preexec_fn=_pinner(pin),
    )
    for port in ports.values():
        wait_listening(port)
    forwarder = Forwarder(name, ports, [proc], state_dir)
    forwarder.admin = lines[1].split('"')[1]  # type: ignore[attr-defined]
    return forwarder


GATE_TOKEN = "benchmark-gate-token-0123456789"
HTTP_WORKLOADS = ("http-ka-1", "http-ka-50", "churn-1", "churn-50")


def _secure_sidecars(up: Upstreams, work: Path, pin: bool) -> list[Forwarder]:
    """The default sidecar with TLS termination (a self-signed RSA-2048 certificate
    made by openssl, as most users' would be), and with the access gate."""
    cert, key = work / "tls.pem", work / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tls = start_sidecar("sidecar-tls", up, work, "auto", pin, http_route={"tls_cert": str(cert), "tls_key": str(key)})
    tls.scheme, tls.http_only = "https", True
    gate = start_sidecar("sidecar-gate", up, work, "auto", pin, http_route={"gate": "token", "gate_token": GATE_TOKEN})
    gate.headers, gate.http_only = [f"Authorization: Bearer {GATE_TOKEN}"], True
    return [tls, gate]


def _view_sidecars(up: Upstreams, work: Path, pin: bool) -> list[Forwarder]:
    """The default sidecar without history, with the request log, tapped,
    recording every route to files ([observe] record, its defaults), and
    exporting a span per MCP request ([otel])."""
    quiet = start_sidecar("sidecar-nohistory", up, work, "auto", pin, extra=["[observe]", 'history = "0s"', ""])
    logged = start_sidecar("sidecar-reqlog", up, work, "auto", pin, extra=["[observe]", "request_log = true", ""])
    tapped = start_sidecar("sidecar-tapped", up, work, "auto", pin)
    threading.Thread(
        target=_read_tap,
        args=(tapped.admin, tapped.state_dir),  # type: ignore[attr-defined]
        daemon=True,
    ).start()
    recording = start_sidecar(
        "sidecar-recording",
        up,
        work,
        "auto",
        pin,
        extra=["[observe]", f'record = {{ dir = "{work / "recordings"}" }}', ""],
    )
    # Every MCP request a span, 100 % sampled, to an OTLP "collector" that takes them (nginx),
    # to one that accepts and never answers, and to a port where nothing listens.
    traced = start_sidecar(
        "sidecar-otel", up, work, "auto", pin, extra=["[otel]", f'endpoint = "http://127.0.0.1:{up.ports["http"]}"', ""]
    )
    blackholed = start_sidecar(
        "sidecar-otel-blackhole", up, work, "auto", pin, extra=["[otel]", f'endpoint = "{_blackhole()}"', ""]
    )
    refused = start_sidecar(
        "sidecar-otel-refused",
        up,
        work,
        "auto",
        pin,
        extra=["[otel]", f'endpoint = "http://127.0.0.1:{free_port()}"', ""],
    )
    return [quiet, logged, tapped, recording, traced, blackholed, refused]


def _blackhole() -> str:
    """A collector that accepts every connection and never reads or answers (daemon thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def hold() -> None:
        while True:
            held.append(listener.accept()[0])

    threading.Thread(target=hold, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def _read_tap(admin: str, state_dir: str) -> None:
    """A tap client that keeps up: reads the stream and discards it (as
    ``proxyctl tap > /dev/null`` would), until the sidecar stops.  With the
    admin token the sidecar generated (without it the tap answers 401, and
    nothing would be tapped: what this benchmark measured before)."""
    host, port = admin.rsplit(":", 1)
    token_file = Path(state_dir) / f"admin-{port}.token"
    for _ in range(100):  # (written once the admin endpoint listens)
        if token_file.exists():
            break
        time.sleep(0.05)
    token = token_file.read_text().strip()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(f"GET /api/tap HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        head = s.recv(1 << 16)
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"the tap refused: {head[:60]!r}")
        while s.recv(1 << 16):
            pass


def _pinner(pin: bool):
    if not pin or (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {1})


# --- measurements --------------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def roundtrips(port: int, count: int, skip: int = 0) -> list[float]:
    """64-byte ping-pongs on one connection: each one's time in microseconds
    (the first ``skip`` left out: warm-up), sorted."""
    msg = b"m" * 64
    samples = []
    with _connect(port) as s:
        for i in range(count):
            t0 = time.perf_counter_ns()
            s.sendall(msg)
            got = 0
            while got < 64:
                got += len(s.recv(64 - got))
            if i >= skip:
                samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return samples


def rtt(f: Forwarder, _: argparse.Namespace) -> dict[str, float]:
    samples = roundtrips(f.ports["echo"], 3200, skip=200)
    return {"rtt_p50_us": samples[len(samples) // 2], "rtt_p99_us": samples[int(len(samples) * 0.99)]}


def upload_seconds(port: int, nbytes: int, block_bytes: int = 1 << 20) -> float:
    """``nbytes`` sent to the sink, until it says it has them all: the time taken."""
    block = memoryview(b"\xa5" * block_bytes)
    with _connect(port) as s:
        t0 = time.perf_counter()
        left = nbytes
        while left > 0:
            left -= s.send(block[: min(len(block), left)])
        s.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < 8:
            got += s.recv(8 - len(got))
        elapsed = time.perf_counter() - t0
    assert int.from_bytes(got, "big") == nbytes
    return elapsed


def upload(f: Forwarder, args: argparse.Namespace) -> dict[str, float]:
    nbytes = args.bulk_mib << 20
    return {"upload_MBps": nbytes / upload_seconds(f.ports["sink"], nbytes) / 1e6}


def bidir(f: Forwarder, args: argparse.Namespace) -> dict[str, float]:
    """Both directions at once on one connection, through the echo server."""
    nbytes = args.bulk_mib << 20
    block = memoryview(b"\x5a" * (1 << 20))
    with _connect(f.ports["echo"]) as s:

        def send() -> None:
            left = nbytes
            while left > 0:
                left -= s.send(block[: min(len(block), left)])

        t0 = time.perf_counter()
        sender = threading.Thread(target=send)
        sender.start()
        buf = bytearray(1 << 20)
        got = 0
        while got < nbytes:
            n = s.recv_into(buf)
            if not n:
                break
            got += n
        sender.join()
        elapsed = time.perf_counter() - t0
    return {"bidir_MBps": 2 * got / elapsed / 1e6}


def _wrk(
    f: Forwarder, args: argparse.Namespace, connections: int, path: str, close: bool, script: str | None = None
) -> float:
    cmd = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{args.seconds}s", "--latency"]
    if close:
        cmd += ["-H", "Connection: close"]
    for header in f.headers:
        cmd += ["-H", header]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(
        [*cmd, f"{f.scheme}://127.0.0.1:{f.ports['http']}{path}"],
        capture_output=True,
        text=True,
        timeout=args.seconds + 30,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"wrk printed no rate: {out}")


MODERN_CALL = (
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},'
    b'"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
    b'"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},'
    b'"io.modelcontextprotocol/clientCapabilities":{}}}}'
)


def mcp_call(f: Forwarder, _: argparse.Namespace) -> dict[str, float]:
    """A 2026-07-28 tools/call (its mirrored headers, its _meta) on one reused
    connection, one at a time: the latency a forwarder adds to an MCP call."""
    request = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n"
        b"Mcp-Method: tools/call\r\nMcp-Name: echo\r\nContent-Length: %d\r\n\r\n%s"
    ) % (len(MODERN_CALL), MODERN_CALL)
    samples = []
    with _connect(f.ports["http"]) as s:
        buffer = b""
        for i in range(2200):
            t0 = time.perf_counter_ns()
            s.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += s.recv(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
            )
            while len(buffer) < length:
                buffer += s.recv(65536)
            buffer = buffer[length:]
            if i >= 200:
                samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return {"mcp_call_p50_us": samples[len(samples) // 2], "mcp_call_p99_us": samples[int(len(samples) * 0.99)]}


def http_ka_1(f, args):
    return {"http_ka_1_rps": _wrk(f, args, 1, "/1k", False)}


def http_ka_50(f, args):
    return {"http_ka_50_rps": _wrk(f, args, 50, "/1k", False)}


def churn_1(f, args):
    return {"churn_1_rps": _wrk(f, args, 1, "/1k", True)}


def churn_50(f, args):
    return {"churn_50_rps": _wrk(f, args, 50, "/1k", True)}


def _ws(f: Forwarder, args: argparse.Namespace, conns: int) -> float:
    out = subprocess.run(
        [args.loadgen, "ws", "127.0.0.1", str(f.ports["ws"]), str(conns), str(args.seconds), "200"],
        capture_output=True,
        text=True,
        timeout=args.seconds + 30,
    ).stdout.split()
    return int(out[1]) / float(out[3])


def ws_1(f, args):
    return {"ws_1_fps": _ws(f, args, 1)}


def ws_50(f, args):
    return {"ws_50_fps": _ws(f, args, 50)}


def tree_pids(roots: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _hold(f: Forwarder, args: argparse.Namespace, conns: int) -> subprocess.Popen:
    holder = subprocess.Popen(
        [args.loadgen, "idle", "127.0.0.1", str(f.ports["echo"]), str(conns)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    holder.stdout.readline()  # type: ignore[union-attr]
    time.sleep(1.0)  # the forwarder's accept loop and upstream connects settle
    return holder


def idle_1000(f: Forwarder, args: argparse.Namespace) -> dict[str, float]:
    """The tree's PSS holding 1000 idle connections, and the slope measured
    on a second thousand: earlier workloads left freed heap the first
    thousand may reuse, the second needs new memory."""
    first = _hold(f, args, 1000)
    during = pss_kib(tree_pids(f.root_pids))
    second = _hold(f, args, 1000)
    more = pss_kib(tree_pids(f.root_pids))
    for holder in (first, second):
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=10)
    time.sleep(0.5)
    return {"idle_pss_MB": during / 1024, "idle_KiB_per_conn": (more - during) / 1000}


def _cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def _metric(admin: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def mcp_cpu(f: Forwarder, args: argparse.Namespace) -> dict[str, float]:
    if f.state_dir is None:
        return {}
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "mcp_sidecar", "status", "--json", "--state-dir", f.state_dir],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        ).stdout
    )
    # Every serving worker's CPU (and the supervisor's: it keeps the merged MCP books).
    pids = [w["pid"] for w in status.get("workers") or [status["worker"]]] + [status["supervisor"]["pid"]]
    admin = f.admin  # type: ignore[attr-defined]
    observed0 = _metric(admin, "mcp_requests_total")
    shed0 = _metric(admin, "mcp_sidecar_observer_shed_total")
    spans0 = _metric(admin, "mcp_sidecar_otel_spans_exported_total")
    dropped0 = _metric(admin, "mcp_sidecar_otel_spans_dropped_total")
    cpu0, t0 = _cpu_s(pids), time.monotonic()
    rate = _wrk(f, args, 8, "/mcp", False, args.post_script)
    cpu1, t1 = _cpu_s(pids), time.monotonic()
    requests = rate * args.seconds
    observed = _metric(admin, "mcp_requests_total") - observed0
    spans: dict[str, float] = {}
    if "otel" in f.name:  # (the last batch goes within a second: counted after it)
        time.sleep(1.5)
        spans = {
            "otel_exported_share": (_metric(admin, "mcp_sidecar_otel_spans_exported_total") - spans0) / requests,
            "otel_dropped": _metric(admin, "mcp_sidecar_otel_spans_dropped_total") - dropped0,
        }
    # The tree's memory once the load is over (a collector that does not take spans must not grow it).
    spans["pss_MB_after_mcp"] = pss_kib(tree_pids(f.root_pids)) / 1024
    return {
        **spans,
        "mcp_rps": rate,
        "mcp_vcpu_per_1k_rps": (cpu1 - cpu0) / requests * 1000,
        "mcp_observed_share": observed / requests if requests else 0.0,
        "mcp_shed": _metric(admin, "mcp_sidecar_observer_shed_total") - shed0,
        "worker_cpu_share": (cpu1 - cpu0) / (t1 - t0),
    }


MEASURES = {
    "rtt": rtt,
    "upload": upload,
    "bidir": bidir,
    "http-ka-1": http_ka_1,
    "http-ka-50": http_ka_50,
    "churn-1": churn_1,
    "churn-50": churn_50,
    "ws-1": ws_1,
    "ws-50": ws_50,
    "idle-1000": idle_1000,
    "mcp-cpu": mcp_cpu,
    "mcp-call": mcp_call,
}
#: Figures where lower is better.
LOWER = {
    "rtt_p50_us",
    "rtt_p99_us",
    "mcp_call_p50_us",
    "mcp_call_p99_us",
    "idle_pss_MB",
    "idle_KiB_per_conn",
    "mcp_vcpu_per_1k_rps",
}


# --- the run -------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, command: str, prefix: str) -> Path:
    """The tools checked, a work directory, the load generator built and wrk's
    MCP POST script written (``args.loadgen``, ``args.post_script``)."""
    for tool in ("gcc", "wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{command}: needs {tool} (apt-get install gcc nginx wrk)")
    work = Path(tempfile.mkdtemp(prefix=prefix))
    args.loadgen = str(work / "loadgen")
    subprocess.run(["gcc", "-O2", "-o", args.loadgen, str(HERE / "loadgen.c")], check=True)
    args.post_script = str(work / "post.lua")
    Path(args.post_script).write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        'wrk.headers["Accept"] = "application/json, text/event-stream"\n'
        f"wrk.body = '{MCP_BODY.decode()}'\n"
    )
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--bulk-mib", type=int, default=128)
    parser.add_argument("--only", default=None, help="Comma-separated forwarders (default: all available).")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--pin", action="store_true", help="Pin the forwarders to core 1.")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="Also measure the default sidecar with TLS on the HTTP route (sidecar-tls) and with "
        "the access gate (sidecar-gate, a bearer token), on the HTTP workloads.",
    )
    parser.add_argument(
        "--views",
        action="store_true",
        help="Also measure the default sidecar without history, with the request log, tapped, and recording.",
    )
    parser.add_argument(
        "--baseline",
        metavar="SRC_DIR",
        default=None,
        help="Also measure the default sidecar from another source tree (an A/B of a change).",
    )
    args = parser.parse_args()
    work = prepare(args, "scripts/bench", "mcp-sidecar-bench-")
    workloads = [w for w in args.workloads.split(",") if w]
    up = Upstreams(work, args.loadgen)
    forwarders: list[Forwarder] = []
    try:
        forwarders.append(Forwarder("direct", dict(up.ports)))
        for maker in (
            lambda: start_socat(up, args.pin),
            lambda: start_haproxy(up, work, args.pin),
            lambda: start_python("asyncio", "asyncio_forwarder.py", up, args.pin),
            lambda: start_python("threaded", "threaded_forwarder.py", up, args.pin),
            lambda: start_sidecar("sidecar", up, work, "auto", args.pin),
            lambda: start_sidecar("sidecar-tcp", up, work, "tcp", args.pin),
            # One worker (what every sidecar was before [proxy] workers; "auto" is the default).
            lambda: start_sidecar("sidecar-1w", up, work, "auto", args.pin, extra=["[proxy]", "workers = 1", ""]),
        ):
            f = maker()
            if f is not None:
                forwarders.append(f)
        if args.baseline:
            forwarders.append(start_sidecar("baseline", up, work, "auto", args.pin, args.baseline))
        if args.tls:
            forwarders += _secure_sidecars(up, work, args.pin)
        if args.views:
            forwarders += _view_sidecars(up, work, args.pin)
        if args.only:
            keep = set(args.only.split(","))
            for f in [f for f in forwarders if f.name not in keep]:
                f.close()
            forwarders = [f for f in forwarders if f.name in keep]
        time.sleep(1.0)
        results: dict[str, dict[str, list[float]]] = {f.name: {} for f in forwarders}
        print(
            f"mcp-sidecar comparison: {os.cpu_count()} cores, {'pinned' if args.pin else 'unpinned'}, "
            f"{args.rounds} rounds of {args.seconds} s, interleaved; medians (min-max)",
            flush=True,
        )
        for r in range(args.rounds):
            order = forwarders[r % len(forwarders) :] + forwarders[: r % len(forwarders)]
            for workload in workloads:
                for f in order:
                    if workload == "mcp-cpu" and f.state_dir is None:
                        continue
                    if workload == "idle-1000" and f.name == "direct":
                        continue
                    if f.http_only and workload not in HTTP_WORKLOADS:
                        continue
                    for key, value in MEASURES[workload](f, args).items():
                        results[f.name].setdefault(key, []).append(value)
            print(f"  round {r + 1} done", flush=True)
        report(results)
    finally:
        for f in forwarders:
            f.close()
        up.close()


def _num(value: float) -> str:
    if value >= 10000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def report(results: dict[str, dict[str, list[float]]]) -> None:
    """A row per figure, a column per forwarder: the ratio to socat and the
    median (socat's own column: median and spread)."""
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    names = list(results)
    width = max(len(k) for k in keys) + 1
    col = max(14, max(len(n) for n in names) + 2)
    print(f"{'':<{width}}" + "".join(f"{n:>{col}}" for n in names))
    ref = results.get("socat", {})
    for key in keys:
        row = f"{key:<{width}}"
        for n in names:
            values = results[n].get(key)
            if not values:
                row += f"{'-':>{col}}"
                continue
            med = statistics.median(values)
            if key in ref and n != "socat" and statistics.median(ref[key]):
                cell = f"{med / statistics.median(ref[key]):.2f}x {_num(med)}"
            elif len(values) > 1:
                cell = f"{_num(med)} ({_num(min(values))}-{_num(max(values))})"
            else:
                cell = _num(med)
            row += f"{cell:>{col}}"
        print(row)
    print(
        "(ratio to socat, then the median; socat's column and figures without a socat value: median (min-max); "
        f"lower is better for {', '.join(sorted(LOWER))})"
    )
    print("json:", json.dumps({n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}))


if __name__ == "__main__":
    main()
