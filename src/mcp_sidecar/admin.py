"""The admin HTTP endpoint of the worker: health, readiness, metrics, JSON API.

Endpoints::

    GET  /healthz                 liveness: 200 while the event loop answers
    GET  /readyz                  200, or 503 with the reasons as JSON
    GET  /metrics                 Prometheus text, or OpenMetrics if asked for
    GET  /api/status              version, pid, uptime, supervisor facts, routes
    GET  /api/connections         every open connection (kernel TCP_INFO included)
    GET  /api/connections/{id}    one of them
    GET  /dashboard               a live page over the two above (seed 000)
    POST /api/drain               stop accepting and drain (changes state: see below)

Rules this module keeps:

* trio + h11, nothing else; one task per admin connection, at most
  ``MAX_ADMIN_CONNECTIONS`` at once (more are closed at once).
* Hostile clients cannot hold it: request heads are bounded
  (``MAX_HEAD_BYTES``, else 431), a request must arrive completely within
  ``REQUEST_TIMEOUT_S`` (else 408 and close), an idle keep-alive connection
  is closed after ``KEEPALIVE_IDLE_S``, bodies are bounded.
* Requests that change state need ``Authorization: Bearer <admin token>``
  when a token is configured; without a token they are allowed only while
  the endpoint listens on loopback.
* Nothing derived from a request reaches a log unredacted.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import h11
import trio
from prometheus_client.exposition import choose_encoder

from . import __version__
from .config import AdminConfig, exposure_warnings
from .dashboard import PAGE
from .logs import log
from .redact import redact_target

if TYPE_CHECKING:
    from .proxy import Proxy

logger = logging.getLogger("mcp_sidecar.admin")

MAX_ADMIN_CONNECTIONS = 64
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_S = 10.0
KEEPALIVE_IDLE_S = 30.0
SEND_TIMEOUT_S = 10.0


class _Reply:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str, headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> _Reply:
    body = json.dumps(payload, indent=1, sort_keys=False).encode() + b"\n"
    return _Reply(status, body, "application/json", headers)


def readiness(proxy: "Proxy") -> list[str]:
    """Why the worker is not ready; empty when it is."""
    reasons = []
    if proxy.draining:
        reasons.append("draining: shutting down")
    for rt in proxy.routes:
        name = rt.config.name
        if not rt.listeners or any(l.sock.fileno() < 0 for l in rt.listeners):
            reasons.append(f"route {name}: not listening")
        health = rt.health
        if not rt.config.settings.required:
            continue
        if health.enabled and not health.healthy:
            if health.state is None:
                reasons.append(f"route {name}: upstream {rt.config.upstream_text} not checked yet")
            else:
                reasons.append(f"route {name}: upstream {rt.config.upstream_text} is down ({health.last_result})")
        if rt.breaker.state == "open":
            reasons.append(f"route {name}: circuit open ({rt.breaker.last_reason}), retry in "
                           f"{rt.breaker.retry_after_s(trio.current_time())} s")
    return reasons


def status(proxy: "Proxy") -> dict[str, Any]:
    now = time.time()
    routes = []
    for rt in proxy.routes:
        c2u, u2c = rt.bytes_forwarded()
        routes.append({
            "name": rt.config.name,
            "listen": [str(l.address) for l in rt.listeners],
            "upstream": rt.config.upstream_text,
            "upstream_healthy": rt.health.healthy,
            "health": rt.health.as_json(),
            "circuit": rt.breaker.as_json(trio.current_time()),
            "upstream_connections": dict(rt.connector.connected_to),
            "required": rt.config.settings.required,
            "connections_active": rt.active,
            "connections_total": rt.total,
            "connections_rejected": dict(rt.rejected),
            "connections_closed": dict(rt.ended),
            "upstream_connect_failures": dict(rt.connector.failures),
            "bytes_client_to_upstream": c2u,
            "bytes_upstream_to_client": u2c,
            "observer_seconds": round(rt.observation.observe_s, 6),
            "observer_shed": rt.observation.shed,
        })
    return {
        "version": __version__,
        "pid": os.getpid(),
        "uptime_s": round(now - proxy.started_unix, 3),
        "started_unix": proxy.started_unix,
        "draining": proxy.draining,
        "ready": not readiness(proxy),
        "warnings": exposure_warnings(proxy.config),
        "supervisor": proxy.supervisor_facts(),
        "observation_budget": proxy.observe_budget.as_json(time.perf_counter()),
        "routes": routes,
    }


class AdminServer:
    def __init__(self, proxy: "Proxy", sock: socket.socket, config: AdminConfig) -> None:
        self.proxy = proxy
        self.sock = sock
        self.config = config
        host = sock.getsockname()[0]
        self.loopback_only = ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
        self.address = sock.getsockname()[:2]
        self._open = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        async with listener:
            task_status.started()
            await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._open >= MAX_ADMIN_CONNECTIONS:
            await stream.aclose()
            return
        self._open += 1
        try:
            async with stream:
                await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass
        finally:
            self._open -= 1

    async def _converse(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        while True:
            deadline = KEEPALIVE_IDLE_S if conn.their_state is h11.IDLE and conn.our_state is h11.IDLE else 0
            try:
                request, body = await self._read_request(stream, conn, deadline)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(stream, conn, _json(status, {"error": str(exc)}), head_only=False)
                return
            except _Timeout as timeout:
                if timeout.partial and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(stream, conn, _json(408, {"error": "request timeout"}), head_only=False)
                return
            if request is None:
                return
            reply = self._dispatch(request, body)
            await self._send(stream, conn, reply, head_only=request.method == b"HEAD")
            log(logger, logging.DEBUG, "admin.request", method=request.method.decode(),
                target=redact_target(request.target), status=reply.status)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(self, stream: trio.SocketStream, conn: h11.Connection,
                            idle_s: float) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        deadline = None
        head_bytes = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if deadline is None:
                    # Waiting for the first byte of a request may take the
                    # keep-alive idle time; the request itself must then be
                    # complete within REQUEST_TIMEOUT_S.
                    wait = idle_s if idle_s and request is None else REQUEST_TIMEOUT_S
                    with trio.move_on_after(wait) as scope:
                        data = await stream.receive_some(65536)
                    if scope.cancelled_caught:
                        raise _Timeout(partial=request is not None)
                    deadline = trio.current_time() + REQUEST_TIMEOUT_S
                else:
                    with trio.move_on_at(deadline) as scope:
                        data = await stream.receive_some(65536)
                    if scope.cancelled_caught:
                        raise _Timeout(partial=True)
                if request is None:
                    # h11 bounds only an incomplete head; bound a complete one too.
                    head_bytes += len(data)
                    if head_bytes > MAX_HEAD_BYTES + 65536:
                        raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                if sum(len(k) + len(v) + 4 for k, v in event.headers) + len(event.target) > MAX_HEAD_BYTES:
                    raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            else:  # ConnectionClosed
                return None, b""

    async def _send(self, stream: trio.SocketStream, conn: h11.Connection, reply: _Reply, *,
                    head_only: bool) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            *reply.headers,
        ]
        data = conn.send(h11.Response(status_code=reply.status, headers=headers))
        if not head_only:
            data += conn.send(h11.Data(data=reply.body))
        data += conn.send(h11.EndOfMessage())
        with trio.fail_after(SEND_TIMEOUT_S):
            await stream.send_all(data)

    # --- routing ---------------------------------------------------------------------

    def _dispatch(self, request: h11.Request, body: bytes) -> _Reply:
        path = request.target.decode("latin-1").split("?", 1)[0]
        method = request.method.decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        reads = {
            "/healthz": lambda: _Reply(200, b"ok\n", "text/plain; charset=utf-8"),
            "/readyz": self._readyz,
            "/metrics": lambda: self._metrics(headers.get("accept")),
            "/api/status": lambda: _json(200, status(self.proxy)),
            "/api/connections": self._connections,
            "/dashboard": lambda: _Reply(200, PAGE, "text/html; charset=utf-8",
                                         [("content-security-policy", "default-src 'self'; script-src 'unsafe-inline'; "
                                                                      "style-src 'unsafe-inline'")]),
            "/": self._index,
        }
        writes = {"/api/drain": self._drain}
        if path.startswith("/api/connections/"):
            handler = lambda: self._connection(path.rsplit("/", 1)[1])  # noqa: E731
            allowed = "GET, HEAD"
        elif path in reads:
            handler = reads[path]
            allowed = "GET, HEAD"
        elif path in writes:
            handler = writes[path]
            allowed = "POST"
        else:
            return _json(404, {"error": "not found", "endpoints": sorted([*reads, *writes])})
        if method not in allowed.split(", "):
            return _json(405, {"error": f"method {method} not allowed"}, [("allow", allowed)])
        if path in writes:
            refusal = self._authorize(headers.get("authorization"))
            if refusal is not None:
                return refusal
        return handler()

    def _authorize(self, authorization: str | None) -> _Reply | None:
        token = self.config.token
        if token is None:
            if self.loopback_only:
                return None
            return _json(403, {"error": "state-changing requests need admin.token (or "
                                        "MCP_SIDECAR_ADMIN_TOKEN) when the admin endpoint is not on loopback"})
        scheme, _, offered = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token.encode()):
            return None
        return _json(401, {"error": "a valid bearer token is required"}, [("www-authenticate", "Bearer")])

    def _readyz(self) -> _Reply:
        reasons = readiness(self.proxy)
        if reasons:
            return _json(503, {"ready": False, "reasons": reasons})
        return _json(200, {"ready": True})

    def _metrics(self, accept: str | None) -> _Reply:
        encoder, content_type = choose_encoder(accept or "")
        return _Reply(200, encoder(self.proxy.metrics.registry), content_type)

    def _connections(self) -> _Reply:
        now = trio.current_time()
        items = [conn.as_json(now) for rt in self.proxy.routes for conn in rt.connections.values()]
        return _json(200, {"connections": items, "count": len(items)})

    def _connection(self, conn_id: str) -> _Reply:
        found = self.proxy.connection(int(conn_id)) if conn_id.isdigit() else None
        if found is None:
            return _json(404, {"error": f"no open connection {conn_id!r}"})
        return _json(200, found[1].as_json(trio.current_time()))

    def _drain(self) -> _Reply:
        log(logger, logging.INFO, "admin.drain")
        self.proxy.begin_drain()
        return _json(202, {"draining": True, "drain_timeout_s": self.proxy.config.drain_timeout_s})

    def _index(self) -> _Reply:
        return _json(200, {"service": "mcp-sidecar", "version": __version__, "endpoints": [
            "/healthz", "/readyz", "/metrics", "/api/status", "/api/connections", "/api/connections/{id}",
            "/dashboard", "POST /api/drain"]})


class _Timeout(Exception):
    """The client was too slow; ``partial``: it had sent part of a request."""

    def __init__(self, partial: bool) -> None:
        super().__init__()
        self.partial = partial
