"""The admin HTTP endpoint of the worker: health, readiness, metrics, JSON API.

The routes are declared once, in ``routes.ENDPOINTS`` (the router here, the
index page and docs/cli.md come from it).

Rules this module keeps:

* trio + h11, nothing else; one task per admin connection.
* Probes get through whatever other clients do.  At most
  ``MAX_ADMIN_CONNECTIONS`` connections (``MAX_PER_CLIENT`` from one
  address) are open; a new one beyond either cap *sheds* the oldest
  connection that is not being answered (idle, or still sending its head)
  instead of being refused, so idle floods and slowloris clients lose their
  slots to the newcomer.  A new connection must start a request within
  ``FIRST_REQUEST_TIMEOUT_S``; a request head must be complete within
  ``HEAD_TIMEOUT_S`` of its first byte and the whole request within
  ``REQUEST_TIMEOUT_S`` (else 408 and close); an idle keep-alive connection
  is closed after ``KEEPALIVE_IDLE_S``; heads (``MAX_HEAD_BYTES``, else 431)
  and bodies are bounded.
* Heavy reads never stall forwarding: ``/api/connections`` is paged
  (``limit`` at most ``MAX_PAGE``) and built with a scheduler checkpoint
  every ``ITEMS_PER_CHECKPOINT`` connections, one heavy read at a time;
  ``/metrics`` reads counters the hot path keeps (no per-connection walk but
  the bytes of open connections).  Probes never wait for a heavy read.
* Every request passes ``access.AdminAccess``: its ``Host`` names this
  endpoint (else 421: DNS rebinding); requests that change state and the
  tap need the admin token and must not come from another origin.
* The tap is zero cost while nobody taps; each tap client has a bounded
  queue (messages it cannot take are dropped and counted, and the stream
  says so); at most ``tap.MAX_SUBSCRIBERS`` at a time.
* Nothing derived from a request reaches a log unredacted.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import h11
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .. import __version__, logs
from ..config.model import AdminConfig
from ..config.render import effective_document
from ..forward.proxy import Proxy
from ..forward.recorder import route_summary
from ..forward.state import OPERATOR_ACTIONS
from ..forward.tap import TapBusy
from ..logs import log
from ..net.http import RequestLimits, RequestRejected, ServerConnection
from ..observe.recording import queue_for
from ..observe.tap import MAX_METHOD_CHARS, TapFilter
from ..redact import redact_target
from .access import AdminAccess, Refusal
from .dashboard import ASSETS, CSP
from .faultapi import FaultHandlers
from .history import History
from .replies import Ask as _Ask
from .replies import Reply as _Reply
from .replies import json_reply as _json
from .routes import index, route
from .source import AdminSource, LocalSource
from .tapstream import TapStream, stream_tap

logger = logging.getLogger(__name__)

MAX_ADMIN_CONNECTIONS = 128
MAX_PER_CLIENT = 32
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
#: The most of each body a tap (a recording) may ask for.
MAX_TAP_BODY_BYTES = 16 * 1024 * 1024
FIRST_REQUEST_TIMEOUT_S = 5.0
HEAD_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 10.0
KEEPALIVE_IDLE_S = 30.0
SEND_TIMEOUT_S = 10.0
#: /api/connections: connections per page by default, and at most.
DEFAULT_PAGE = 100
MAX_PAGE = 1000
ITEMS_PER_CHECKPOINT = 32
#: Handlers that answer from what is known now: the probes must not wait on a worker.
_UNSETTLED = frozenset({"_healthz", "_readyz", "_asset", "_index"})


class _Slot:
    """One admin connection, for shedding: who, since when, doing what."""

    __slots__ = ("busy", "client", "scope")

    def __init__(self, scope: trio.CancelScope, client: str) -> None:
        self.scope = scope
        self.client = client
        #: Between a complete request and the end of its response: never shed.
        self.busy = False


def _line(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


class AdminServer(FaultHandlers):
    """The worker's admin HTTP endpoint: probes, metrics, the JSON API and
    the dashboard, served with h11 on its own listening socket.

    Owns its connections (for shedding) and the one-at-a-time gate of heavy
    reads; it reads the proxy through ``status.py`` and changes it only by
    ``POST /api/drain``.
    """

    def __init__(self, source: AdminSource | Proxy, sock: socket.socket, config: AdminConfig) -> None:
        #: What it shows: one worker here (a Proxy is wrapped), or the supervisor's merged view.
        self.source: AdminSource = LocalSource(source) if isinstance(source, Proxy) else source
        self.sock = sock
        self.config = config
        self.address = sock.getsockname()[:2]
        self.access = AdminAccess(config, self.address[0], self.address[1])
        #: Open connections, oldest first.
        self._slots: dict[int, _Slot] = {}
        #: Connections closed to make room for newer ones.
        self.shed = 0
        self._heavy = trio.Semaphore(1)
        observe = self.source.config.observe
        self.history = (
            History(observe.history_interval_s, max(1, int(observe.history_s / observe.history_interval_s)))
            if observe.history_s > 0
            else None
        )
        self._own = _AdminCollector(self)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        async with listener, trio.open_nursery() as nursery:
            if self.history is not None:
                nursery.start_soon(self._record_history)
            task_status.started()
            await trio.serve_listeners(self._handle, [listener])

    async def _record_history(self) -> None:
        """One history point per interval, on the interval's boundary."""
        assert self.history is not None
        interval = self.history.interval_s
        self.source.sample(interval)  # the totals the first rates start from
        next_at = math.ceil(time.time() / interval) * interval  # on the wall clock's boundaries
        while True:
            await trio.sleep(max(0.0, next_at - time.time()))
            routes, methods = self.source.sample(interval)
            self.history.record(round(next_at, 3), routes, methods)
            # The next boundary after now: never two points for one interval, none skipped but
            # when the loop was blocked for longer than an interval.
            next_at = max(next_at + interval, math.ceil(time.time() / interval) * interval)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            client = stream.socket.getpeername()[0]
        except OSError:
            client = "?"
        with trio.CancelScope() as scope:
            slot = _Slot(scope, client)
            if not self._admit(slot):
                await stream.aclose()
                return
            try:
                async with stream:
                    await self._converse(stream, slot)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
            except Exception as exc:
                # A bug in one answer closes its connection, never the endpoint (nor the
                # supervisor that serves it).
                log(logger, logging.ERROR, "admin.request_failed", error=repr(exc))
            finally:
                self._slots.pop(id(slot), None)

    def _admit(self, slot: _Slot) -> bool:
        """Make room for ``slot`` by shedding the oldest connection not being
        answered (from the same client when that client is over its cap);
        False only when every candidate is busy answering."""
        same = [s for s in self._slots.values() if s.client == slot.client]
        if len(same) >= MAX_PER_CLIENT:
            candidates = same
        elif len(self._slots) >= MAX_ADMIN_CONNECTIONS:
            candidates = list(self._slots.values())
        else:
            candidates = []
        if candidates:
            victim = next((s for s in candidates if not s.busy), None)
            if victim is None:
                return False
            del self._slots[id(victim)]
            victim.scope.cancel()
            self.shed += 1
        self._slots[id(slot)] = slot
        return True

    async def _converse(self, stream: trio.SocketStream, slot: _Slot) -> None:
        # (read at each connection: tests shorten the timeouts)
        http = ServerConnection(
            stream,
            RequestLimits(
                FIRST_REQUEST_TIMEOUT_S,
                HEAD_TIMEOUT_S,
                REQUEST_TIMEOUT_S,
                MAX_HEAD_BYTES,
                MAX_BODY_BYTES,
                SEND_TIMEOUT_S,
            ),
        )
        idle_s = FIRST_REQUEST_TIMEOUT_S
        while True:
            try:
                got = await http.read_request(idle_s)
            except RequestRejected as exc:
                if exc.status is not None and http.can_answer:
                    await self._send(http, _json(exc.status, {"error": exc.message}), head_only=False)
                return
            if got is None:
                return
            idle_s = KEEPALIVE_IDLE_S
            request, body = got
            slot.busy = True
            reply = await self._dispatch(request, body)
            if isinstance(reply, TapStream):
                # Subscribed: once the source has settled again, everything that
                # forwards a message from now on shows it (a supervisor's workers
                # have applied the subscription before they report).
                await self.source.settle()
                await stream_tap(http, reply, self.source.taps, self._tap_about())
                return
            await self._send(http, reply, head_only=request.method == b"HEAD")
            slot.busy = False
            log(
                logger,
                logging.DEBUG,
                "admin.request",
                method=request.method.decode(),
                target=redact_target(request.target),
                status=reply.status,
            )
            if not http.next_cycle():
                return

    async def _send(self, http: ServerConnection, reply: _Reply, *, head_only: bool) -> None:
        await http.respond(
            reply.status,
            reply.body,
            reply.content_type,
            [("cache-control", "no-store"), ("x-content-type-options", "nosniff"), *reply.headers],
            head_only=head_only,
        )

    async def _dispatch(self, request: h11.Request, body: bytes) -> _Reply | TapStream:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        method = request.method.decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        misdirected = self.access.misdirected(headers.get("host"))
        if misdirected is not None:
            log(logger, logging.WARNING, "admin.host_refused", host=headers["host"][:100])
            return self._refuse(misdirected)
        endpoints, parameter = route(path, set(ASSETS))
        if not endpoints:
            return _json(404, {"error": "not found", "endpoints": index()})
        by_method = {e.method: e for e in endpoints}
        endpoint = by_method.get("GET" if method == "HEAD" else method)
        if endpoint is None:
            allowed = ", ".join("GET, HEAD" if e.method == "GET" else e.method for e in endpoints)
            return _json(405, {"error": f"method {method} not allowed"}, [("allow", allowed)])
        if endpoint.guarded:
            refusal = self.access.cross_origin(headers) or self.access.unauthorized(headers.get("authorization"))
            if refusal is not None:
                return self._refuse(refusal)
        if endpoint.handler not in _UNSETTLED:
            await self.source.settle()
        reply: Any = getattr(self, endpoint.handler)(_Ask(path, query, headers, parameter, body))
        if not isinstance(reply, (_Reply, TapStream)):  # a heavy read: one at a time, yielding as it goes
            async with self._heavy:
                reply = await reply
        assert isinstance(reply, (_Reply, TapStream))
        return reply

    def _refuse(self, refusal: Refusal) -> _Reply:
        return _json(refusal.status, {"error": refusal.error}, list(refusal.headers))

    # --- the handlers (routes.ENDPOINTS names them) ------------------------------------------

    def _healthz(self, ask: _Ask) -> _Reply:
        return _Reply(200, b"ok\n", "text/plain; charset=utf-8")

    def _status(self, ask: _Ask) -> _Reply:
        return _json(200, self.source.status())

    def _config(self, ask: _Ask) -> _Reply:
        return _json(200, effective_document(self.source.config))

    def _asset(self, ask: _Ask) -> _Reply:
        content_type, data = ASSETS[ask.path]
        return _Reply(200, data, content_type, [("content-security-policy", CSP)])

    def _readyz(self, ask: _Ask) -> _Reply:
        reasons = self.source.readiness()
        detail: dict[str, Any] = {}
        if self.source.config.faults_enabled:  # (never ready-or-not: said, so nobody mistakes it for the upstream)
            faults = self.source.faults()["faults"]
            detail["faults"] = [f"{f['route']}/{f['name']}: {f['description']}" for f in faults]
        if reasons:
            return _json(503, {"ready": False, "reasons": reasons, **detail})
        return _json(200, {"ready": True, **detail})

    def _metrics(self, ask: _Ask) -> _Reply:
        encoder, content_type = choose_encoder(ask.headers.get("accept") or "")
        return _Reply(200, encoder(self.exposition()), content_type)

    async def _connections(self, ask: _Ask) -> _Reply:
        """A page of the open connections: ``?limit=N&offset=M&route=NAME``."""
        params = urllib.parse.parse_qs(ask.query)
        try:
            limit = int(params.get("limit", [DEFAULT_PAGE])[0])
            offset = int(params.get("offset", [0])[0])
        except ValueError:
            return _json(400, {"error": "limit and offset must be integers"})
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            return _json(400, {"error": f"limit must be in 1..{MAX_PAGE} and offset >= 0"})
        route = params.get("route", [None])[0]
        parts, count = await self.source.connections(route, offset, limit)
        following = offset + limit if offset + limit < count else None
        # One connection per line, encoded as it is built: no single long
        # synchronous encode of a large page.
        tail = json.dumps({"count": count, "offset": offset, "limit": limit, "next_offset": following})
        body = b'{"connections": [\n' + b",\n".join(parts) + b"\n], " + tail[1:].encode() + b"\n"
        return _Reply(200, body, "application/json")

    async def _connection(self, ask: _Ask) -> _Reply:
        conn_id = ask.parameter or ""
        found = await self.source.connection(int(conn_id)) if conn_id.isdigit() else None
        if found is None:
            return _json(404, {"error": f"no open connection {conn_id!r}"})
        return _json(200, found)

    def _route_param(self, query: str) -> tuple[str | None, _Reply | None]:
        route = urllib.parse.parse_qs(query).get("route", [None])[0]
        names = self.source.route_names()
        if route is not None and route not in names:
            return None, _json(404, {"error": f"no route {route!r}", "routes": names})
        return route, None

    def _mcp(self, ask: _Ask) -> _Reply:
        route, refusal = self._route_param(ask.query)
        if refusal is not None:
            return refusal
        return _json(200, self.source.mcp(route))

    def _history(self, ask: _Ask) -> _Reply:
        route, refusal = self._route_param(ask.query)
        if refusal is not None:
            return refusal
        if self.history is None:
            return _json(404, {"error": "history is off ([observe] history = 0)"})
        return _Reply(200, _line(self.history.as_json(route)), "application/json")

    def _tap(self, ask: _Ask) -> _Reply | TapStream:
        """``?route=R&method=M&target=T&max_bytes=B&limit=N&duration=S``:
        subscribe, then stream (``max_bytes``: of each body, for a recording)."""
        route, refusal = self._route_param(ask.query)
        if refusal is not None:
            return refusal
        params = urllib.parse.parse_qs(ask.query)
        method = params.get("method", [None])[0]
        if method is not None and (not method or len(method) > MAX_METHOD_CHARS or not method.isprintable()):
            return _json(400, {"error": f"method must be 1 to {MAX_METHOD_CHARS} printable characters"})
        target = params.get("target", [None])[0]
        if target is not None and (not target or len(target) > MAX_METHOD_CHARS or not target.isprintable()):
            return _json(400, {"error": f"target must be 1 to {MAX_METHOD_CHARS} printable characters"})
        try:
            limit = int(params["limit"][0]) if "limit" in params else None
            duration = float(params["duration"][0]) if "duration" in params else None
            max_bytes = int(params["max_bytes"][0]) if "max_bytes" in params else None
        except ValueError:
            return _json(400, {"error": "limit and max_bytes must be integers and duration a number of seconds"})
        if (limit is not None and limit < 1) or (duration is not None and not duration > 0):
            return _json(400, {"error": "limit and duration must be positive"})
        if max_bytes is not None and not 64 <= max_bytes <= MAX_TAP_BODY_BYTES:
            return _json(400, {"error": f"max_bytes must be 64 to {MAX_TAP_BODY_BYTES}"})
        queue = self.source.config.observe.tap_queue
        if max_bytes is not None:  # (bounded in bytes: larger bodies, fewer of them)
            queue = min(queue, queue_for(max_bytes))
        try:
            subscriber = self.source.taps.subscribe(TapFilter(route, method, target, max_bytes), queue)
        except TapBusy as exc:
            return _json(503, {"error": str(exc)}, [("retry-after", "5")])
        log(logger, logging.INFO, "admin.tap", route=route, method=method, target=target, max_bytes=max_bytes)
        return TapStream(subscriber, limit, duration)

    def _tap_about(self) -> dict[str, Any]:
        """What a tap's first line says of the sidecar (a recording's header)."""
        return {
            "sidecar": __version__,
            "routes": {route.name: route_summary(route) for route in self.source.config.routes},
        }

    def _drain(self, ask: _Ask) -> _Reply:
        log(logger, logging.INFO, "admin.drain")
        self.source.begin_drain()
        return _json(202, {"draining": True, "drain_timeout_s": self.source.config.drain_timeout_s})

    async def _route_control(self, ask: _Ask) -> _Reply:
        action = urllib.parse.parse_qs(ask.query).get("action", [""])[0]
        if action not in OPERATOR_ACTIONS:
            return _json(400, {"error": f"action must be one of {', '.join(OPERATOR_ACTIONS)}, got {action!r}"})
        name = urllib.parse.unquote(ask.parameter or "")
        refused = self.source.control_route(name, action)
        if refused is not None:
            return _json(404, {"error": refused})
        await self.source.settle()  # (answered once every worker applies it)
        log(logger, logging.WARNING, "admin.route_control", route=name, action=action)
        return _json(200, {"route": name, "state": OPERATOR_ACTIONS[action]})

    async def _log_level(self, ask: _Ask) -> _Reply:
        level = urllib.parse.parse_qs(ask.query).get("level", [""])[0]
        if level not in logs.LEVELS:
            return _json(400, {"error": f"level must be one of {', '.join(logs.LEVELS)}, got {level!r}"})
        self.source.set_log_level(level)
        await self.source.settle()
        log(logger, logging.WARNING, "admin.log_level", to=level)
        return _json(200, {"level": level})

    def exposition(self) -> _Exposition:
        """What ``/metrics`` encodes (the source's families and the endpoint's own)."""
        return _Exposition(self)

    def _index(self, ask: _Ask) -> _Reply:
        return _json(200, {"service": "mcp-sidecar", "version": __version__, "endpoints": index()})


class _Exposition:
    """What ``/metrics`` encodes: the source's families and the endpoint's own."""

    def __init__(self, server: AdminServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield from self.server.source.collect()
        yield from self.server._own.collect()


class _AdminCollector(Collector):
    """The admin endpoint's own figures, read at scrape time."""

    def __init__(self, server: AdminServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily("mcp_sidecar_admin_connections", "Admin endpoint connections open now.")
        open_now.add_metric([], len(self.server._slots))
        yield open_now
        shed = CounterMetricFamily(
            "mcp_sidecar_admin_connections_shed",
            "Admin connections closed to make room for a newer one (idle or slow clients).",
        )
        shed.add_metric([], self.server.shed)
        yield shed
        taps = self.server.source.taps
        subscribers = GaugeMetricFamily("mcp_sidecar_tap_subscribers", "proxyctl tap streams open now.")
        subscribers.add_metric([], len(taps.subscribers))
        yield subscribers
        dropped = CounterMetricFamily(
            "mcp_sidecar_tap_dropped", "MCP messages a tap client's queue could not take (it read too slowly)."
        )
        dropped.add_metric([], taps.dropped)
        yield dropped
