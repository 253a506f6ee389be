"""Shared fixtures: demo upstreams, a running in-process proxy, subprocess helpers.

Everything binds loopback port 0.  Every I/O test body runs under
``trio.fail_after``; subprocess waits carry timeouts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import strategies as st

#: Observer bugs raise instead of being counted, here and in every proxy the
#: tests start as a subprocess (forward/observation.py); set before the
#: package is imported.
os.environ["MCP_SIDECAR_STRICT"] = "1"

from mcp_sidecar.admin.collector import RuntimeCollector
from mcp_sidecar.admin.server import AdminServer
from mcp_sidecar.config.model import ProxyConfig
from mcp_sidecar.config.parse import build_config
from mcp_sidecar.demo.servers import serve_echo, serve_http
from mcp_sidecar.forward.proxy import Proxy
from mcp_sidecar.net.listeners import bind_all, bind_everything

ROOT = Path(__file__).resolve().parent.parent
PROXYCTL = [sys.executable, "-m", "mcp_sidecar"]
#: The fault suite's size: 1 in ./scripts/test (a few seconds per test),
#: larger under ./scripts/soak (MCP_SIDECAR_FAULT_SCALE=10: ten times the
#: clients, rounds and durations).
FAULT_SCALE = float(os.environ.get("MCP_SIDECAR_FAULT_SCALE", "1"))


def scaled(n: float) -> int:
    """``n`` at the fault suite's scale (an int, at least 1)."""
    return max(1, int(n * FAULT_SCALE))


#: Under CI=true every test must run: a skip there is a failure (a test that
#: skips in CI checks nothing; scripts/test installs the tools tests need).
IN_CI = os.environ.get("CI") == "true"
_skipped_in_ci: list[str] = []


def pytest_runtest_logreport(report):
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped_in_ci.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _skipped_in_ci and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    if _skipped_in_ci:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped_in_ci)} test(s) skipped, which fails the run (every test must run in CI):",
            red=True,
        )
        for line in _skipped_in_ci:
            terminalreporter.write_line(f"  {line}", red=True)


@pytest.fixture(autouse=True)
def fresh_log_limiter(monkeypatch):
    """Each test starts with empty log rate-limit windows (the limiter is
    process-wide; in-process proxies of earlier tests must not use them up)."""
    from mcp_sidecar import logs

    monkeypatch.setattr(logs, "limiter", logs.RateLimiter())


@pytest.fixture
async def echo_port(nursery: trio.Nursery) -> int:
    return await nursery.start(serve_echo, "127.0.0.1", 0)


@pytest.fixture
async def http_port(nursery: trio.Nursery) -> int:
    return await nursery.start(serve_http, "127.0.0.1", 0)


@dataclass
class RunningProxy:
    proxy: Proxy
    config: ProxyConfig
    admin: AdminServer | None = None

    @property
    def admin_port(self) -> int:
        assert self.admin is not None
        return self.admin.address[1]

    def registry(self):
        """The worker's metrics, observed up to the last byte forwarded."""
        self.proxy.observe_queue.drain()
        return self.proxy.metrics.registry

    def port(self, route: str | None = None) -> int:
        return self.address(route)[1]

    def address(self, route: str | None = None) -> tuple[str, int]:
        rt = self.route(route)
        addr = rt.listeners[0].address
        return addr.host, addr.port

    def route(self, name: str | None = None):
        """A route's live state, observed up to the last byte forwarded (the
        worker observes in batches: observequeue.py; the admin views drain too)."""
        self.proxy.observe_queue.drain()
        if name is None:
            return self.proxy.routes[0]
        return next(rt for rt in self.proxy.routes if rt.config.name == name)


async def start_proxy(nursery: trio.Nursery, document: dict[str, Any], *, admin: bool = False) -> RunningProxy:
    """Bind and serve ``document`` (a config dict) in ``nursery``; with
    ``admin``, also its admin endpoint on a free loopback port."""
    document = dict(document)
    # Observation is never shed unless a test asks for a budget: a busy test
    # process would otherwise count as a saturated worker (budget.py).
    document["proxy"] = {"observe_cpu_share": 1.0, **document.get("proxy", {})}
    document.setdefault("admin", {})
    document["admin"] = {"listen": "127.0.0.1:0", **document["admin"]}
    config = build_config(document, source="test")
    sockets = bind_everything(config) if admin else None
    proxy = Proxy(config, sockets.routes if sockets else bind_all(config))
    server = None
    if sockets is not None and sockets.admin is not None:
        server = AdminServer(proxy, sockets.admin, config.admin)
        await nursery.start(server.serve)
    else:  # the families the admin endpoint would export, readable from the registry
        proxy.metrics.registry.register(RuntimeCollector(proxy))
    await nursery.start(proxy.serve)
    return RunningProxy(proxy, config, server)


def route_doc(upstream: str, listen: str = "127.0.0.1:0", **settings: Any) -> dict[str, Any]:
    """One route "r"; active health checks off unless asked for (they would
    be accepted by scripted upstreams as if they were clients)."""
    settings.setdefault("health_interval", 0)
    return {"route": [{"name": "r", "listen": listen, "upstream": upstream, **settings}]}


def fault_doc(upstream: str, *faults: dict[str, Any], name: str = "r", **settings: Any) -> dict[str, Any]:
    """One route with these faults (``[faults] enabled``); active health checks off."""
    route = {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "health_interval": 0, **settings}
    return {"faults": {"enabled": True}, "route": [{**route, "fault": list(faults)}]}


@pytest.fixture
async def echo_proxy(nursery: trio.Nursery, echo_port: int) -> RunningProxy:
    return await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"))


async def connect(port: int, host: str = "127.0.0.1") -> trio.SocketStream:
    return await trio.open_tcp_stream(host, port)


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


async def receive_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


async def echo_roundtrip(port: int, host: str = "127.0.0.1", message: bytes = b"ping") -> bytes:
    """Send ``message`` through ``port``, half-close, return all that comes back."""
    stream = await connect(port, host)
    async with stream:
        await stream.send_all(message)
        await stream.send_eof()
        return await receive_all(stream)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def exported_metrics() -> dict[str, set[str]]:
    """Every metric a worker exports (its admin endpoint's own included):
    family name -> the names of its samples."""

    async def collect() -> dict[str, set[str]]:
        doc = route_doc("127.0.0.1:9")
        doc["admin"] = {"listen": "127.0.0.1:0"}
        doc["faults"] = {"enabled": True}  # (its family is exported only then)
        config = build_config(doc)
        sockets = bind_everything(config)
        proxy = Proxy(config, sockets.routes)
        admin = AdminServer(proxy, sockets.admin, config.admin)
        try:
            return {f.name: {s.name for s in f.samples} for f in admin.exposition().collect()}
        finally:
            sockets.close()

    return trio.run(collect)


# --- subprocess helpers ---------------------------------------------------------------


class ProxyProcess:
    """``proxyctl`` in a subprocess; stdout lines are awaited as events.

    A reader thread (test harness only) collects stdout lines so that
    ``wait_for_line`` can block on a condition instead of polling.
    """

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, prefix: list[str] | None = None, **popen: Any
    ) -> None:
        self.proc = subprocess.Popen(
            [*(prefix or []), *PROXYCTL, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            **popen,
        )
        self.lines: list[str] = []
        self.log_lines: list[str] = []
        self._changed = threading.Condition()
        self._open_streams = 2
        for stream, sink in ((self.proc.stdout, self.lines), (self.proc.stderr, self.log_lines)):
            threading.Thread(target=self._read, args=(stream, sink), daemon=True).start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            with self._changed:
                sink.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._open_streams -= 1
            self._changed.notify_all()

    def _wait(self, sink: list[str], needle: str, timeout: float, *, prefix: bool) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in sink:
                    if line.startswith(needle) if prefix else needle in line:
                        return line
                remaining = deadline - time.monotonic()
                if self._open_streams == 0 or remaining <= 0:
                    break
                self._changed.wait(remaining)
        self.kill()
        raise AssertionError(f"no line {needle!r}; stdout={self.lines!r} stderr={self.log_lines!r}")

    def wait_for_line(self, prefix: str, timeout: float = 20.0) -> str:
        """Block until stdout has a line starting with ``prefix``."""
        return self._wait(self.lines, prefix, timeout, prefix=True)

    def wait_for_log(self, text: str, timeout: float = 20.0) -> str:
        """Block until stderr (the log) has a line containing ``text``."""
        return self._wait(self.log_lines, text, timeout, prefix=False)

    def route_port(self, name: str) -> int:
        line = next(item for item in self.lines if item.startswith(f"route {name} "))
        bound = line.split("  ", 1)[1].split(" -> ")[0].split(", ")[0]
        return int(bound.rsplit(":", 1)[1])

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.log_lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def proxy_process():
    started: list[ProxyProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> ProxyProcess:
        p = ProxyProcess(list(args), env, **kwargs)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@contextlib.contextmanager
def sdk_server_process(**env: str) -> Iterator[int]:
    """The official SDK's server (tests/mcp_sdk/server.py) in a subprocess, with
    these environment variables: its port once it listens; stopped after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mcp_sdk.server", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready" once it listens (or EOF if it died)
        assert line.strip() == "ready", f"the SDK server did not start: {line!r}"
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def run_proxyctl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROXYCTL, *args], capture_output=True, text=True, timeout=timeout)


def feed_json_exchange(observation: Any, body: bytes, reply: bytes, reply_headers: bytes = b"") -> None:
    """Feed a connection's observation a JSON POST to /mcp and its JSON answer, as the wire carries them."""
    observation.client_direction.feed(
        memoryview(
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
    )
    observation.upstream_direction.feed(
        memoryview(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
            % (reply_headers, len(reply), reply)
        )
    )


async def wait_until(predicate, interval: float = 0.005) -> None:
    """Poll ``predicate`` -- only for state that has no event to await
    (e.g. a counter inside the proxy); the caller bounds it with fail_after."""
    while not predicate():
        await trio.sleep(interval)


@dataclass
class ScriptedUpstream:
    """An upstream whose accepted connections the test drives itself."""

    port: int
    accepted: trio.MemoryReceiveChannel


@pytest.fixture
async def scripted_upstream(nursery: trio.Nursery) -> ScriptedUpstream:
    return await start_scripted_upstream(nursery)


async def start_scripted_upstream(nursery: trio.Nursery) -> ScriptedUpstream:
    send, receive = trio.open_memory_channel(100)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handler(stream: trio.SocketStream) -> None:
        await send.send(stream)
        await trio.sleep_forever()  # the test owns the stream from here

    async def serve() -> None:
        await trio.serve_listeners(handler, listeners)

    nursery.start_soon(serve)
    return ScriptedUpstream(listeners[0].socket.getsockname()[1], receive)


# --- TLS ------------------------------------------------------------------------------------


@dataclass
class TlsFiles:
    """A test CA (trustme) and a server certificate for localhost and the loopbacks, as PEM files."""

    ca: Any
    cert: Path
    key: Path
    ca_file: Path

    def client_context(self, *, alpn: list[str] | None = None):
        import ssl

        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if alpn:
            context.set_alpn_protocols(alpn)
        return context

    def server_context(self):
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_tls_files(directory: Path, name: str = "server") -> TlsFiles:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca_file = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}-ca.pem"
    issued.cert_chain_pems[0].write_to_path(cert)
    for extra in issued.cert_chain_pems[1:]:
        with open(cert, "ab") as f:
            f.write(extra.bytes())
    issued.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    return TlsFiles(ca, cert, key, ca_file)


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


async def tls_connect(
    port: int, files: TlsFiles, *, alpn: list[str] | None = None, host: str = "127.0.0.1"
) -> trio.SSLStream:
    stream = trio.SSLStream(await connect(port, host), files.client_context(alpn=alpn), server_hostname="localhost")
    await stream.do_handshake()
    return stream


# --- supervised proxies -------------------------------------------------------------------


def write_config(
    path: Path,
    routes: list[dict[str, Any]],
    supervisor: dict[str, Any] | None = None,
    proxy: dict[str, Any] | None = None,
    admin: dict[str, Any] | None = None,
    faults: dict[str, Any] | None = None,
    observe: dict[str, Any] | None = None,
) -> Path:
    """A TOML config file from plain dicts (strings, numbers, booleans, lists,
    inline tables); a route's ``fault`` list becomes its ``[[route.fault]]`` tables."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[admin]", 'listen = "127.0.0.1:0"', *(f"{k} = {value(v)}" for k, v in (admin or {}).items()), ""]
    for section, table in (("supervisor", supervisor), ("proxy", proxy), ("faults", faults), ("observe", observe)):
        if table:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
            lines.append("")
    for route in routes:
        lines.append("[[route]]")
        lines += [f"{k} = {value(v)}" for k, v in route.items() if k != "fault"]
        lines.append("")
        for fault in route.get("fault", []):
            lines.append("[[route.fault]]")
            lines += [f"{k} = {value(v)}" for k, v in fault.items()]
            lines.append("")
    path.write_text("\n".join(lines))
    return path


#: Fast supervision for tests: quick heartbeats, short backoff.
FAST_SUPERVISOR = {
    "heartbeat_interval": "100ms",
    "heartbeat_timeout": "1s",
    "restart_backoff_initial": "50ms",
    "stable_after": "2s",
}


@dataclass
class Supervised:
    process: ProxyProcess
    state_dir: Path
    config_path: Path

    def status(self) -> dict[str, Any]:
        from mcp_sidecar.supervise.control import send_command

        return send_command(self.state_dir, "status", timeout_s=20)

    def command(self, command: str, **fields: Any) -> dict[str, Any]:
        from mcp_sidecar.supervise.control import send_command

        return send_command(self.state_dir, command, timeout_s=60, **fields)

    def worker_pid(self) -> int | None:
        worker = self.status()["worker"]
        return worker["pid"] if worker else None

    def port(self, route: str) -> int:
        listen = next(r for r in self.status()["routes"] if r["name"] == route)["listen"][0]
        return int(listen.rsplit(":", 1)[1])


@pytest.fixture
def supervised(proxy_process, tmp_path):
    def start(
        routes: list[dict[str, Any]],
        supervisor: dict[str, Any] | None = None,
        proxy: dict[str, Any] | None = None,
        *extra: str,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        admin: dict[str, Any] | None = None,
        faults: dict[str, Any] | None = None,
        observe: dict[str, Any] | None = None,
        **popen: Any,
    ) -> Supervised:
        config = write_config(
            tmp_path / "sidecar.toml", routes, {**FAST_SUPERVISOR, **(supervisor or {})}, proxy, admin, faults, observe
        )
        directory = state_dir or tmp_path / "state"
        proc = proxy_process(
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(directory),
            "--log-format",
            "json",
            *extra,
            env=env,
            **popen,
        )
        proc.wait_for_line("mcp-sidecar ")
        return Supervised(proc, directory, config)

    return start


# --- hosts' resources the tests take away: a small filesystem -------------------------------

#: Root is needed to mount a filesystem or make network namespaces; CI runs as root.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (a tmpfs mount or a network namespace); CI runs as root and runs it"
)


@dataclass
class SmallFs:
    """A tmpfs of a few hundred KiB mounted for one test: fill it, make it
    read-only, give the space back."""

    path: Path

    def fill(self) -> None:
        """Write until the filesystem is full (ENOSPC)."""
        import errno as _errno

        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == _errno.ENOSPC, exc
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, timeout=10)


@pytest.fixture
def small_fs(tmp_path: Path):
    path = tmp_path / "smallfs"
    path.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(path)], check=True, timeout=10)
    try:
        yield SmallFs(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], timeout=10)


# --- a second host: a network namespace joined by a veth pair -------------------------------

_host_numbers = iter(range(1, 250))


@dataclass
class SecondHost:
    """Another host on a point-to-point link with this one (a network
    namespace and a veth pair the test made): for exposure, allow-lists
    and links that go down."""

    ns: str
    #: This host's addresses on the link, and the second host's.
    host_ip: str
    peer_ip: str
    host_ip6: str
    peer_ip6: str
    host_if: str
    peer_if: str

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """A process on the second host."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kwargs)

    def link_down(self) -> None:
        """Pull the cable: the second host stops answering, nothing says so (no FIN, no RST)."""
        _ip("-n", self.ns, "link", "set", self.peer_if, "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, timeout=10, capture_output=True)


@pytest.fixture
def second_host():
    number = next(_host_numbers)
    ns, host_if, peer_if = f"mcps{os.getpid() % 10000}h{number}", f"mcph{number}", f"mcpp{number}"
    subnet = (os.getpid() + number) % 200 + 20
    host = SecondHost(
        ns, f"10.77.{subnet}.1", f"10.77.{subnet}.2", f"fd77:{subnet:x}::1", f"fd77:{subnet:x}::2", host_if, peer_if
    )
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", ns)
        _ip("addr", "add", f"{host.host_ip}/24", "dev", host_if)
        _ip("addr", "add", f"{host.host_ip6}/64", "dev", host_if, "nodad")
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{host.peer_ip}/24", "dev", peer_if)
        _ip("-n", ns, "addr", "add", f"{host.peer_ip6}/64", "dev", peer_if, "nodad")
        _ip("-n", ns, "link", "set", peer_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield host
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=10, capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], timeout=10, capture_output=True)


# --- what a peer may put in a message (Hypothesis) ------------------------------------------

#: Any small JSON value (no NaN or infinity: JSON has neither).
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
#: Methods whose handling reads more of a message (a name, a cancelled request, a version, progress).
TELLING_METHODS = st.sampled_from(["initialize", "tools/call", "notifications/cancelled", "notifications/progress"])
#: A JSON-RPC message's members: each any JSON, or a value that means something
#: (ids mostly 0 and 1, so that answers meet their requests).
MESSAGE_MEMBERS = {
    "id": st.integers(0, 1) | ANY_JSON,
    "method": TELLING_METHODS | ANY_JSON,
    "params": st.fixed_dictionaries(
        {}, optional={"name": ANY_JSON, "requestId": ANY_JSON, "protocolVersion": ANY_JSON, "_meta": ANY_JSON}
    )
    | ANY_JSON,
    "result": st.fixed_dictionaries({}, optional={"isError": ANY_JSON, "protocolVersion": ANY_JSON}) | ANY_JSON,
    "error": st.fixed_dictionaries({"code": ANY_JSON, "message": ANY_JSON}) | ANY_JSON,
}
