"""``proxyctl check``: a diagnostic sequence, as a report.

Against a URL (``http://``, ``ws://``, ``tcp://``) or a configured route.  For
a route, two columns side by side: through the proxy (the route's listen
address) and directly to each upstream -- so "the proxy is broken" and "the
upstream is broken" are told apart at a glance.

Steps: name resolution (every address), TCP connect time per address, then
by level: HTTP ``GET`` (``http``), WebSocket handshake + ping RTT (``ws``),
MCP initialize + ping (``mcp``: an ``http://`` URL whose path ends in
``/mcp``, or a route with ``health_check = "mcp"``).

Verdict: ``unreachable`` (exit 5) when the primary target accepts no TCP
connection; ``degraded`` (exit 1) when a check fails otherwise or any step
takes longer than ``WARN_MS`` (warning 500 ms, critical 1000 ms);
else ``healthy`` (exit 0).  Recommendations say what to do next.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from ..config.addresses import HostPort, bracket
from ..config.defaults import GATE_TOKEN_ENV
from ..errors import EXIT_UNREACHABLE
from ..health.probes import ProbeFailed, http_get, mcp_ping, ws_ping
from ..net.http import request
from ..net.upstream import Connector, classify, is_localhost

WARN_MS = 500.0
CRITICAL_MS = 1000.0
EXIT_HEALTHY, EXIT_DEGRADED = 0, 1


@dataclass
class Step:
    """One step of a check (resolve, connect, a probe) and how it went."""

    name: str
    ok: bool
    detail: str
    ms: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"step": self.name, "ok": self.ok, "detail": self.detail, "ms": self.ms}


@dataclass
class Column:
    """The steps of one target: through the proxy, or one upstream directly."""

    label: str
    target: HostPort
    steps: list[Step] = field(default_factory=list)
    connected: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "target": str(self.target),
            "connected": self.connected,
            "steps": [s.as_json() for s in self.steps],
        }


async def _resolve(host: str) -> list[str]:
    if is_localhost(host):
        return ["127.0.0.1", "::1"]
    try:
        infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    seen: list[str] = []
    for info in infos:
        host = str(info[4][0])
        if host not in seen:
            seen.append(host)
    return seen


async def probe_column(
    label: str,
    target: HostPort,
    level: str,
    path: str,
    timeout_s: float,
    *,
    tls: ssl.SSLContext | None = None,
    headers: list[tuple[str, str]] | None = None,
    gated: bool = False,
) -> Column:
    """``tls``: speak TLS to the target (a TLS route, or an upstream that
    speaks TLS); ``headers``: sent with the probe (the gate's bearer token);
    ``gated``: the target is behind the access gate, so a 401 without its
    token is the gate working, not a failure."""
    column = Column(label, target)
    addresses = await _resolve(target.host)
    column.steps.append(Step("resolve", bool(addresses), ", ".join(addresses) or f"cannot resolve {target.host}"))
    if not addresses:
        return column
    connect_details: list[tuple[str, bool, str, float | None]] = []
    for address in addresses:
        t0 = trio.current_time()
        try:
            with trio.fail_after(timeout_s):
                stream = await trio.open_tcp_stream(address, target.port)
            ms = (trio.current_time() - t0) * 1000
            await stream.aclose()
            connect_details.append((address, True, f"{ms:.1f} ms", ms))
            column.connected = True
        except (OSError, trio.TooSlowError) as exc:
            connect_details.append((address, False, classify(exc), None))
    best = min((ms for _, ok, _, ms in connect_details if ok and ms is not None), default=None)
    column.steps.append(
        Step("tcp connect", column.connected, "; ".join(f"{bracket(a)} {d}" for a, _, d, _ in connect_details), best)
    )
    if not column.connected or level == "tcp":
        return column
    connector = Connector((target,), timeout_s, 0, tls=tls)
    t0 = trio.current_time()
    try:
        with trio.fail_after(timeout_s):
            if level == "http":
                response = await http_get(connector, target, path, headers)
                ms = (trio.current_time() - t0) * 1000
                if gated and not headers and response.status == 401:
                    column.steps.append(
                        Step(
                            f"http GET {path}",
                            True,
                            f"401 from the access gate in {ms:.1f} ms "
                            f"(as it should without the token: set {GATE_TOKEN_ENV} to check "
                            "through it)",
                            ms,
                        )
                    )
                else:
                    column.steps.append(
                        Step(f"http GET {path}", 200 <= response.status < 400, f"{response.status} in {ms:.1f} ms", ms)
                    )
            elif level == "ws":
                rtts = [await ws_ping(connector, target, path, headers) * 1000 for _ in range(3)]
                ms = sum(rtts) / len(rtts)
                column.steps.append(
                    Step(f"websocket {path} handshake + ping", True, f"ping RTT {ms:.1f} ms (avg of 3 handshakes)", ms)
                )
            elif level == "mcp":
                rtt = await mcp_ping(connector, target, path, headers) * 1000
                column.steps.append(Step(f"mcp initialize + ping {path}", True, f"ping RTT {rtt:.1f} ms", rtt))
    except ProbeFailed as exc:
        if gated and not headers and exc.result == "http 401":
            column.steps.append(
                Step(
                    f"{level} {path}",
                    True,
                    f"401 from the access gate (as it should without the "
                    f"token: set {GATE_TOKEN_ENV} to check through it)",
                )
            )
        else:
            column.steps.append(Step(f"{level} {path}", False, exc.result))
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        column.steps.append(Step(f"{level} {path}", False, classify(exc)))
    except Exception as exc:
        column.steps.append(Step(f"{level} {path}", False, describe_failure(exc)))
    return column


def describe_failure(exc: BaseException) -> str:
    """A failure in words: the innermost cause of an exception group, its
    message rather than its class name."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, ProbeFailed):
        return exc.result
    if isinstance(exc, (OSError, trio.TooSlowError, trio.BrokenResourceError)):
        return classify(exc)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = {"HandshakeError": "ws handshake failed", "ConnectionRejected": "ws handshake rejected"}.get(
        type(exc).__name__, type(exc).__name__
    )
    return f"{name}: {message}"[:200] if message else name


@dataclass
class Report:
    """The columns side by side, the verdict and what to do about it."""

    title: str
    columns: list[Column]
    verdict: str = "healthy"
    recommendations: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"healthy": EXIT_HEALTHY, "degraded": EXIT_DEGRADED, "unreachable": EXIT_UNREACHABLE}[self.verdict]

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "columns": [c.as_json() for c in self.columns],
            "recommendations": self.recommendations,
        }

    def render(self) -> str:
        lines = [f"check {self.title}"]
        names: list[str] = []
        for column in self.columns:
            for step in column.steps:
                if step.name not in names:
                    names.append(step.name)
        width = max([len(n) for n in names] + [12]) + 2
        cells = [
            [next((("" if s.ok else "FAIL ") + s.detail for s in c.steps if s.name == n), "-") for c in self.columns]
            for n in names
        ]
        col_width = max(
            [len(c.label) + 2 for c in self.columns] + [len(x) + 2 for row in cells for x in row[:-1]] + [10]
        )
        if len(self.columns) > 1:
            lines.append(" " * (width + 2) + "".join(f"{c.label:<{col_width}}" for c in self.columns).rstrip())
        for name, row in zip(names, cells, strict=True):
            lines.append(f"  {name:<{width}}" + "".join(f"{cell:<{col_width}}" for cell in row).rstrip())
        lines.append(f"verdict: {self.verdict}")
        if self.recommendations:
            lines.append("recommendations:")
            lines += [f"  - {r}" for r in self.recommendations]
        return "\n".join(lines)


def judge(report: Report, primary: Column, direct: list[Column]) -> None:
    slow = [s for c in report.columns for s in c.steps if s.ms is not None and s.ms > WARN_MS]
    failed = [s for c in report.columns for s in c.steps[1:] if not s.ok and s.name != "tcp connect"]
    if not primary.connected:
        report.verdict = "unreachable"
    elif failed or slow or (direct and not all(c.connected for c in direct)):
        report.verdict = "degraded"
    recs = report.recommendations
    if direct and not primary.connected and any(c.connected for c in direct):
        recs.append(
            f"the upstream answers but nothing accepts on {primary.target}: is the proxy running "
            "(`proxyctl status`) and listening there?"
        )
    for column in [primary, *direct]:
        resolve = column.steps[0]
        if not resolve.ok:
            recs.append(f"{column.target.host} does not resolve: check the name or DNS")
        elif not column.connected:
            connect = next((s for s in column.steps if s.name == "tcp connect"), None)
            detail = connect.detail if connect else ""
            if "refused" in detail:
                recs.append(
                    f"nothing listens on {column.target}: is the service running? (the MCP Inspector: "
                    "`npx @modelcontextprotocol/inspector`)"
                )
            elif "timeout" in detail:
                recs.append(f"connecting to {column.target} times out: a firewall drops packets or the host is down")
            else:
                recs.append(f"cannot connect to {column.target} ({detail})")
        elif is_localhost(column.target.host):
            connect = next(s for s in column.steps if s.name == "tcp connect")
            if "refused" in connect.detail:
                recs.append(
                    f"{column.target} answers on one loopback family only ({connect.detail}); "
                    "the sidecar tries both, other clients may not"
                )
    for step in slow:
        level = "critical" if (step.ms or 0) > CRITICAL_MS else "warning"
        recs.append(
            f"{step.name} took {step.ms:.0f} ms ({level}: above {WARN_MS:.0f} ms): an overloaded "
            "upstream or a slow network"
        )
    for step in failed:
        if step.detail.startswith("http 403"):
            recs.append("HTTP 403: for the MCP Inspector, list this origin in ALLOWED_ORIGINS")
        elif step.name.startswith("mcp") and step.detail.startswith(("http 404", "http 405", "http 501")):
            recs.append(
                f"{step.name}: {step.detail}: the server answers but not as an MCP endpoint there "
                "(check the path: health_path, or the URL)"
            )
        elif step.detail.startswith(("http 401", "mcp error", "http 5")):
            recs.append(f"{step.name}: {step.detail}: the service answers but is not healthy")
        elif step.detail.startswith("ws handshake"):
            recs.append(f"{step.detail}: the path does not serve WebSocket (check the path or subprotocol)")


def _target_from_url(url: str) -> tuple[HostPort, str, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "ws", "tcp") or not parts.hostname:
        raise ValueError(f"expected an http://, ws:// or tcp:// URL, got {url!r}")
    default = {"http": 80, "ws": 80, "tcp": 0}[parts.scheme]
    port = parts.port or default
    if not port:
        raise ValueError(f"{url!r}: tcp:// needs a port")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    level = {"http": "http", "ws": "ws", "tcp": "tcp"}[parts.scheme]
    if level == "http" and parts.path.rstrip("/").endswith("/mcp"):
        level = "mcp"
    return HostPort(parts.hostname, port), level, path


async def check_url(url: str, timeout_s: float) -> Report:
    target, level, path = _target_from_url(url)
    column = await probe_column("target", target, level, path, timeout_s)
    report = Report(url, [column])
    judge(report, column, [])
    return report


@dataclass(frozen=True)
class RouteAccess:
    """How a check reaches a route: TLS towards the proxy (unverified: this
    checks the route, not its certificate's trust), TLS towards the upstream
    (verified as the proxy does), the access gate and its token."""

    tls: bool = False
    upstream_tls: ssl.SSLContext | None = None
    gated: bool = False
    gate_token: str | None = None

    def proxy_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
        return context

    def proxy_headers(self) -> list[tuple[str, str]] | None:
        return [("authorization", f"Bearer {self.gate_token}")] if self.gated and self.gate_token else None


async def check_route(
    name: str,
    through: HostPort | None,
    upstreams: tuple[HostPort, ...],
    level: str,
    path: str,
    timeout_s: float,
    access: RouteAccess = RouteAccess(),
) -> Report:
    columns: list[Column] = []
    async with trio.open_nursery() as nursery:
        results: dict[int, Column] = {}

        async def run(i: int, label: str, target: HostPort) -> None:
            if i == 0 and through is not None:  # through the proxy: its TLS and its gate
                results[i] = await probe_column(
                    label,
                    target,
                    level,
                    path,
                    timeout_s,
                    tls=access.proxy_context(),
                    headers=access.proxy_headers(),
                    gated=access.gated,
                )
            else:
                results[i] = await probe_column(label, target, level, path, timeout_s, tls=access.upstream_tls)

        targets = ([("through proxy", through)] if through else []) + [
            ("direct" if len(upstreams) == 1 else f"direct {u}", u) for u in upstreams
        ]
        for i, (label, target) in enumerate(targets):
            nursery.start_soon(run, i, label, target)
    columns = [results[i] for i in range(len(results))]
    title = f"route {name} ({through or 'not listening'} -> {', '.join(str(u) for u in upstreams)})"
    report = Report(title, columns)
    primary = columns[0]
    judge(report, primary, columns[1:] if through else [])
    return report


#: Where Inspector v2 writes its API token in the page it serves.
V2_PAGE_TOKEN = re.compile(rb'__INSPECTOR_API_TOKEN__\s*=\s*"([^"]{1,200})"')


async def check_inspector_v2(
    report: Report, through: HostPort, env: dict[str, str], ui_origin: str, token: str | None, timeout_s: float
) -> None:
    """Whether the Inspector v2 behind the route is configured for the
    forwarded origin: its /api/config must advertise the forwarded sandbox,
    and a request bearing the forwarded Origin must not be refused (403).
    Adds what to set to the report (and makes it degraded)."""
    gate = [("authorization", f"Bearer {token}")] if token else []
    authority = f"{bracket(through.host)}:{through.port}"
    findings: list[str] = []
    try:
        with trio.fail_after(timeout_s):
            # The operator passes the gate, so the page's own API token is theirs to use.
            page = await request(through.host, through.port, "/", headers=gate)
            found = V2_PAGE_TOKEN.search(page.body)
            headers = gate + ([("x-mcp-remote-auth", f"Bearer {found.group(1).decode()}")] if found else [])
            config = await request(through.host, through.port, "/api/config", headers=headers)
            sandbox = None
            if config.status == 200:
                try:
                    sandbox = json.loads(config.body).get("sandboxUrl")
                except (ValueError, AttributeError):
                    sandbox = None
            wanted = env.get("MCP_SANDBOX_FULL_ADDRESS")
            if config.status != 200:
                findings.append(f"GET /api/config through the proxy answered {config.status}: is this Inspector v2?")
            elif wanted and sandbox != wanted:
                findings.append(
                    f"the Inspector advertises sandboxUrl {sandbox!r}, so browsers would go around the "
                    f"sidecar: start it with MCP_SANDBOX_FULL_ADDRESS={wanted}"
                )
            probe = await request(
                through.host,
                through.port,
                "/api/mcp/disconnect",
                method="POST",
                body=b"{}",
                headers=[*headers, ("content-type", "application/json"), ("origin", ui_origin)],
            )
            if probe.status == 403:
                findings.append(
                    f"the Inspector refuses the forwarded origin {ui_origin} (403): start it with "
                    f"ALLOWED_ORIGINS={env['ALLOWED_ORIGINS']}"
                )
    except (OSError, trio.TooSlowError, h11.ProtocolError) as exc:
        findings.append(f"the Inspector v2 checks through the proxy failed ({type(exc).__name__}) at {authority}")
    if findings:
        report.recommendations += findings
        if report.verdict == "healthy":
            report.verdict = "degraded"
