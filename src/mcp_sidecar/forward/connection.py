"""One forwarded connection: connect upstream, pump both ways, close right.

Rules this module keeps:

* Each connection is one task owning one nursery with the two pumps (and
  the idle watcher when ``idle_timeout`` is set, the WebSocket keepalive
  once a 101 switched the connection).  One pipeline for every route:
  clear, TLS or gated connections differ only in their legs (legs.py) and
  the gate on the client's direction.  It ends when both
  directions have seen EOF, when a leg fails, on idle timeout, or when the
  proxy cancels it (drain deadline, forced stop).
* Half-close is propagated: EOF from one side becomes ``shutdown(SHUT_WR)``
  towards the other, and the other direction keeps flowing.
* A reset is propagated: an error on one leg closes the other with RST, so
  each peer sees what it would have seen on a direct connection.
* ``end`` records how it ended, as a bounded label (``state.End``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import trio

from ..config.addresses import format_sockaddr
from ..errors import ClientGone, LocalResourceError, UpstreamUnavailable
from ..faults.actions import Reply, Send
from ..logs import log
from ..net import sockopts
from ..net.gate import RequestGate
from ..net.tcpinfo import TCP_CLOSE, TCP_CLOSE_WAIT, tcp_state
from ..observe.connection import Sniff, sniff_request
from .faulthooks import RequestHook, ResponseHook
from .faultpump import ConnectionFaults, FaultEnded, deliver_reply, fault_pump, plan_connection
from .idle import IDLE_TASK, idle_watch
from .legs import RawLeg
from .observation import Mode, Observation
from .pump import Flow, GateClosed, LegFailed, pump
from .secure import client_prelude, upstream_leg
from .state import Connection, End, RouteState

logger = logging.getLogger(__name__)

_LEG_TASK = "mcp_sidecar.forward.connection.upstream_to_client"
_KEEPALIVE_TASK = "mcp_sidecar.forward.connection.ws_keepalive"
_SSE_KEEPALIVE_TASK = "mcp_sidecar.forward.connection.sse_keepalive"


def _peer(sock: socket.socket) -> str:
    try:
        return format_sockaddr(sock.getpeername())
    except OSError:
        return "?"


async def _ws_keepalive(conn: Connection, rt: RouteState, cleg: RawLeg, uleg: RawLeg, scope: trio.CancelScope) -> None:
    """Ping both sides between frames; close a connection whose side stops answering."""
    observation = conn.observation
    assert observation is not None
    observer = observation.observer
    settings = rt.config.settings
    while True:
        await trio.sleep(settings.ws_ping_interval_s)
        now = trio.current_time()
        observation.settle()  # the observer must know where the frames stand (observequeue.py)
        if observer.closing or observer.mode is not Mode.WEBSOCKET:
            return  # closing, or observation gave up (or was shed): frame boundaries are unknown
        for side, leg, flow in (("client", cleg, conn.u2c), ("upstream", uleg, conn.c2u)):
            pending = observer.outstanding(side)
            if pending is not None:
                if now - pending[1] > settings.ws_ping_timeout_s:
                    conn.end = End.WS_TIMEOUT
                    log(
                        logger,
                        logging.WARNING,
                        "websocket.zombie",
                        route=conn.route,
                        conn=conn.id,
                        side=side,
                        silent_s=round(now - pending[1], 3),
                    )
                    scope.cancel()
                    return
                continue
            if flow.tail:
                continue  # a chunk is half delivered: not a frame boundary
            frame = observation.keepalive_frame(side, now)
            if frame is not None and not leg.try_write_whole(frame):
                # Could not write it whole: the socket is full; try next time.
                observer.forget_ping(side)


async def _sse_keepalive(conn: Connection, rt: RouteState, cleg: RawLeg) -> None:
    """While an event stream is under way: when the upstream has sent nothing
    for ``sse_keepalive``, send the client a comment line between two events
    (observe/http.py says where one may go), as proxies and load balancers
    that cut silent streams need.  Ends with the stream."""
    observation = conn.observation
    assert observation is not None
    interval = rt.config.settings.sse_keepalive_s
    flow = conn.u2c
    seen, since = flow.bytes, trio.current_time()
    while True:
        await trio.sleep(interval / 4)  # (silence noticed within 1.25 intervals)
        now = trio.current_time()
        if flow.bytes != seen:
            seen, since = flow.bytes, now
            continue
        if now - since < interval or flow.tail:
            continue  # not silent long enough, or a chunk is half delivered
        line = observation.sse_keepalive()
        if line is None:
            if not observation.observer.event_stream_open:
                return  # the stream ended (or observation did): nothing more to keep alive
            continue
        if cleg.try_write_whole(line):
            since = now
            rt.observation.child(rt.observation.metrics.sse_keepalives).inc()
            if observation.traffic is not None:
                observation.traffic.sse_keepalives_sent += 1


async def _forward(
    conn: Connection, rt: RouteState, cleg: RawLeg, uleg: RawLeg, gate: RequestGate | None, first: bytes
) -> list[str]:
    """Run both directions; return the legs ("client"/"upstream") to abort with RST.

    One pipeline for every connection: plain legs splice bulk transfers, TLS
    legs go through OpenSSL, a gated route's client direction goes through
    the gate until an upgrade passes; every route gets the observation and
    the WebSocket keepalive its settings ask for."""
    abort: list[str] = []  # (a set is 216 bytes held for the connection's life)
    open_directions = 2
    settings = rt.config.settings
    use_splice = settings.splice
    if settings.protocol != "tcp":
        rt.observe(conn)
    observe = conn.observation
    faults = None
    if rt.faults is not None:  # ([faults] enabled: otherwise never a fault's path)
        faults = plan_connection(
            rt.faults,
            conn,
            settings.protocol != "tcp",
            trio.current_time(),
            lambda: rt.observation.taps,
            rt.legacy_streams,
        )

    async def leg(src: RawLeg, dst: RawLeg, flow: Flow, src_name: str, dst_name: str, gate: RequestGate | None) -> None:
        nonlocal open_directions
        callback = (
            None
            if observe is None
            else (observe.client_direction if src_name == "client" else observe.upstream_direction)
        )
        try:
            if first and src_name == "client" and faults is not None and faults.requests is not None:
                flow.bytes += len(first)  # (the gate's first request: through the faults too)
                await _first_through_faults(first, faults, src, dst, callback, _answer_observer(observe))
            elif first and src_name == "client":
                await dst.send_all(first)  # the request the gate admitted before the upstream was connected
                flow.bytes += len(first)
                if callback is not None and callback.feed(memoryview(first)) is False:
                    callback = None
            if faults is None:
                await pump(src, dst, rt.scratch, flow, splice=use_splice, observe=callback, gate=gate)
            elif hooks is not None:  # MCP faults riding the plain pump (faulthooks.py)
                hook = hooks[0](callback) if src_name == "client" else hooks[1](callback)
                await pump(src, dst, rt.scratch, flow, splice=False, observe=hook, gate=None)
            else:
                client_side = src_name == "client"
                shaping = faults.shaping
                await fault_pump(
                    src,
                    dst,
                    flow,
                    shaper=None if shaping is None else (shaping.upstream if client_side else shaping.downstream),
                    transform=faults.requests if client_side else faults.responses,
                    observe=callback,
                    answer_observer=_answer_observer(observe) if client_side else None,
                    gate=gate,
                )
        except FaultEnded as exc:
            conn.end = End.FAULT
            if exc.reset:
                abort.extend(("client", "upstream"))
            nursery.cancel_scope.cancel()
            return
        except LegFailed as exc:
            failed = src_name if exc.side == "src" else dst_name
            other = dst_name if failed == src_name else src_name
            if conn.end is None:
                conn.end = End.CLIENT_RESET if failed == "client" else End.UPSTREAM_RESET
            abort.append(other)
            nursery.cancel_scope.cancel()
            return
        except GateClosed as exc:
            conn.end = End.GATE_REFUSED
            log(
                logger,
                logging.INFO,
                "gate.refused",
                route=conn.route,
                conn=conn.id,
                client=conn.client,
                reason=exc.reason,
                replied=exc.replied,
            )
            nursery.cancel_scope.cancel()
            return
        open_directions -= 1
        if open_directions == 1:
            conn.first_eof = src_name  # (how a stream still open ended: who closed first)
        if open_directions == 0:
            nursery.cancel_scope.cancel()  # stops the idle watcher

    hooks: tuple[Callable[[Any], RequestHook], Callable[[Any], ResponseHook]] | None = None
    async with trio.open_nursery() as nursery:
        if faults is not None and faults.shaping is None and gate is None and faults.requests is not None:
            hooks = _fault_hooks(conn, faults, cleg, observe, nursery)
        # Constant task names: trio would format one per task from the function.
        nursery.start_soon(leg, uleg, cleg, conn.u2c, "upstream", "client", None, name=_LEG_TASK)
        if settings.idle_timeout_s > 0:
            nursery.start_soon(idle_watch, conn, settings.idle_timeout_s, nursery.cancel_scope, name=IDLE_TASK)
        if faults is not None and faults.shaping is not None:
            for after, reset in ((faults.shaping.reset_after_s, True), (faults.shaping.close_after_s, False)):
                if after is not None:
                    nursery.start_soon(_fault_timer, conn, after, reset, abort, nursery.cancel_scope)
        if observe is not None and settings.ws_ping_interval_s > 0 and faults is None:
            # Started by the 101 itself: no task waits in connections that never upgrade.
            observe.on_websocket = lambda: nursery.start_soon(
                _ws_keepalive, conn, rt, cleg, uleg, nursery.cancel_scope, name=_KEEPALIVE_TASK
            )
        if observe is not None and settings.sse_keepalive_s > 0:
            keeping = [False]  # one keepalive task at a time, started by the stream's response

            def event_stream() -> None:
                if not keeping[0]:
                    keeping[0] = True

                    async def keep() -> None:
                        try:
                            await _sse_keepalive(conn, rt, cleg)
                        finally:
                            keeping[0] = False

                    nursery.start_soon(keep, name=_SSE_KEEPALIVE_TASK)

            observe.on_event_stream = event_stream
        # The client's direction runs in this task (one task fewer per connection).
        await leg(cleg, uleg, conn.c2u, "client", "upstream", gate)
    if conn.end is None and open_directions == 0:
        conn.end = End.CLOSED
    return abort


async def _first_through_faults(
    first: bytes,
    faults: ConnectionFaults,
    cleg: RawLeg,
    uleg: RawLeg,
    observe: Any,
    answer_observer: Callable[[Reply], None] | None,
) -> None:
    """The request a gate admitted before the upstream was connected, as any other: faults first."""
    assert faults.requests is not None
    for action in faults.requests.feed(first):
        if isinstance(action, Send):
            await uleg.send_all(action.data)
            if observe is not None:
                observe.feed(memoryview(action.data))
        elif isinstance(action, Reply):
            await deliver_reply(cleg, action, answer_observer)


def _fault_hooks(
    conn: Connection, faults: ConnectionFaults, cleg: RawLeg, observe: Observation | None, nursery: trio.Nursery
) -> tuple[Callable[[Any], RequestHook], Callable[[Any], ResponseHook]]:
    """The connection's MCP faults as the pump's hooks (one per direction),
    with the tasks they hand what the loop cannot do."""
    answer_observer = _answer_observer(observe)

    async def answer(reply: Reply) -> None:
        try:
            await deliver_reply(cleg, reply, answer_observer)
        except LegFailed:
            pass  # (the client left: its connection ends by itself)

    def end(kind: str) -> None:
        conn.end = End.FAULT
        nursery.cancel_scope.cancel()

    assert faults.requests is not None and faults.responses is not None
    requests, responses = faults.requests, faults.responses
    return (
        lambda real: RequestHook(requests, real, lambda reply: nursery.start_soon(answer, reply)),
        lambda real: ResponseHook(responses, real, cleg, conn.u2c, nursery.start_soon, end),
    )


def _answer_observer(observe: Observation | None) -> Callable[[Reply], None] | None:
    """A fault answered in the server's place: observed as if it had (request, then answer)."""
    if observe is None:
        return None

    def seen(reply: Reply) -> None:
        observe.client_direction.feed(memoryview(reply.request))
        observe.upstream_direction.feed(memoryview(reply.data))

    return seen


async def _fault_timer(
    conn: Connection, after_s: float, reset: bool, abort: list[str], scope: trio.CancelScope
) -> None:
    """``reset_peer`` after a time (RST both ways) or ``timeout`` (closed)."""
    await trio.sleep(after_s)
    conn.end = End.FAULT
    if reset:
        abort += ["client", "upstream"]
    scope.cancel()


def _client_gone(csock: socket.socket, protocol: str) -> bool:
    """Has the client left before its upstream connection was made?

    A reset, or a FIN with nothing sent (nothing to deliver), always; a FIN
    after an HTTP request too -- HTTP/1.1 clients do not half-close while
    they wait for an answer, a closed one abandoned its request.  On opaque
    TCP a FIN after data is a half-close, part of the stream: delivered.
    """
    try:
        head = csock.recv(8, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if not head:
        return True
    state = tcp_state(csock)
    if state == TCP_CLOSE:  # reset: the kernel may still hold the bytes it sent before
        return True
    if protocol == "tcp" or state != TCP_CLOSE_WAIT:
        return False
    return protocol == "http" or sniff_request(head) is not Sniff.NOT_HTTP


async def serve_connection(rt: RouteState, csock: socket.socket, client: str) -> None:
    """Handle one accepted client socket to the end; never raises OSError."""
    settings = rt.config.settings
    conn = Connection(rt.config.name, client, csock)
    rt.register(conn, trio.current_time())
    usock: socket.socket | None = None
    abort: list[str] = []  # (a set is 216 bytes held for the connection's life)
    secure = rt.tls_server is not None or rt.connector.tls is not None or settings.gate.mode == "token"
    try:
        # (csock inherited its options from the listening socket: sockopts.tune_listener)
        prelude: tuple[RawLeg, RequestGate | None, bytes] | None = None
        if secure:
            prelude = await client_prelude(conn, rt, csock)  # TLS handshake, the gate's first request
            if prelude is None:
                return
        t0 = trio.current_time()
        try:
            usock, conn.connect_attempts, address = await rt.connector.connect(
                lambda: _client_gone(csock, settings.protocol)
            )
        except ClientGone as exc:
            conn.end = End.CLIENT_GONE
            conn.connect_attempts = exc.attempts
            log(
                logger,
                logging.DEBUG,
                "connection.client_gone",
                route=conn.route,
                conn=conn.id,
                client=client,
                attempts=exc.attempts,
            )
            return
        except LocalResourceError as exc:
            conn.end = End.LOCAL_RESOURCES
            rt.exhaustion.record(exc.resource, exc.errno_name, "upstream_connect", trio.current_time())
            rt.breaker.release_probe()
            abort.append("client")
            log(
                logger,
                logging.ERROR,
                "connection.local_resources",
                route=conn.route,
                conn=conn.id,
                resource=exc.resource,
                error=exc.errno_name,
                detail=str(exc),
            )
            return
        except UpstreamUnavailable as exc:
            conn.end = End.UPSTREAM_UNAVAILABLE
            conn.connect_attempts = exc.attempts
            if rt.breaker.record_failure(trio.current_time(), exc.reason):
                log(
                    logger,
                    logging.ERROR,
                    "circuit.open",
                    route=conn.route,
                    reason=exc.reason,
                    open_s=rt.breaker.open_s,
                    opened_total=rt.breaker.opened_total,
                )
            abort.append("client")
            log(
                logger,
                logging.WARNING,
                "upstream.unavailable",
                route=conn.route,
                conn=conn.id,
                client=client,
                upstream=exc.upstream,
                reason=exc.reason,
                attempts=exc.attempts,
                detail=exc.detail,
            )
            return
        conn.connect_s = trio.current_time() - t0
        rt.metrics.upstream_connect.observe(conn.connect_s)
        if rt.breaker.record_success():
            log(logger, logging.INFO, "circuit.closed", route=conn.route)
        conn.usock = usock
        conn.upstream = _peer(usock)
        sockopts.tune(usock, settings.tcp_keepalive_s, settings.user_timeout_s)
        # TCP_INFO is read at close and every tcp_stats_interval (and by the
        # API when asked), not at connect: two syscalls per connection saved.
        if prelude is None:  # a clear route: plain legs, no gate
            cleg, gate, first = RawLeg(csock), None, b""
            uleg: RawLeg | None = RawLeg(usock)
        else:
            cleg, gate, first = prelude
            uleg = await upstream_leg(conn, rt, usock, address.host)
        if uleg is None:
            abort.append("client")
            return
        abort = await _forward(conn, rt, cleg, uleg, gate, first)
    except OSError as exc:  # setsockopt on a socket the client already reset
        conn.end = conn.end or End.CLIENT_RESET
        log(logger, logging.DEBUG, "connection.error", route=conn.route, conn=conn.id, error=str(exc))
    finally:
        if conn.end is None:
            conn.end = End.DRAIN_TIMEOUT if rt.draining else End.CANCELLED
        if usock is None and conn.end not in (End.UPSTREAM_UNAVAILABLE, End.LOCAL_RESOURCES):
            rt.breaker.release_probe()  # went away before the upstream answered either way
        conn.sample_tcp(rt.metrics)  # the last sample, at close
        if conn.observation is not None:
            conn.observation.close(conn.end, conn.first_eof)  # buffers given back now, not at the next GC
        sockopts.close(csock, abort="client" in abort)
        if usock is not None:
            sockopts.close(usock, abort="upstream" in abort)
        rt.closed(conn)
        duration = trio.current_time() - conn.started
        rt.metrics.connection_duration.observe(duration)
        policy = settings.connection_log
        if policy == "all" or (
            policy == "sampled"
            and (conn.end != End.CLOSED or (rt.ended.get(End.CLOSED, 1) - 1) % settings.connection_log_every == 0)
        ):
            rtt = {f"rtt_{leg}_ms": round(info.rtt_s * 1000, 3) for leg, info in conn.tcp.items() if info}
            log(
                logger,
                logging.INFO,
                "connection.closed",
                unlimited=policy == "all",
                limit_key=f"connection.closed:{conn.end}",
                route=conn.route,
                conn=conn.id,
                client=client,
                upstream=conn.upstream,
                end=conn.end,
                duration_s=round(duration, 6),
                bytes_client_to_upstream=conn.c2u.bytes,
                bytes_upstream_to_client=conn.u2c.bytes,
                **rtt,
            )
