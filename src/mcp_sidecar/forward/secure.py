"""Connections with TLS on a leg or the access gate: what happens before they join the one pipeline.

Rules this module keeps:

* Before the upstream is connected: the client's TLS handshake (bounded by
  ``tls_handshake_timeout``), then, on a gated route, the client's first
  request is read and checked (its head bounded by ``gate_head_timeout``)
  -- a client without the token costs no upstream connection and reaches
  nothing.  Until admitted, a connection can be shed for a newcomer when the
  route is at ``max_connections`` (``RouteState.unadmitted``): silent or
  half-sent clients cannot hold the owner out.  A ``303`` of the gate (the URL
  token exchanged for the cookie) keeps the connection and waits for the
  next request.
* After connecting: the upstream's TLS handshake, verified; a failure ends
  the connection as ``upstream_tls_error`` and counts against the upstream
  (the circuit breaker).
* Then the connection runs the one pipeline (connection.py, pump.py) with
  these legs, the client's direction through the gate until an upgrade or
  CONNECT passes.
"""

from __future__ import annotations

import logging
import socket

import trio

from ..logs import log
from ..net.gate import Close, Forward, Reply, RequestGate
from .legs import RawLeg, TlsLeg
from .pump import LegFailed
from .state import Connection, End, RouteState

logger = logging.getLogger(__name__)


async def client_prelude(
    conn: Connection, rt: RouteState, csock: socket.socket
) -> tuple[RawLeg, RequestGate | None, bytes] | None:
    """The client's TLS handshake and the gate's first admitted request:
    ``(client leg, gate, bytes to forward first)``, or None with ``conn.end``
    set (the connection is over).  Until then the connection is
    *unadmitted*: it may be shed for a newcomer at ``max_connections``."""
    with trio.CancelScope() as waiting:
        rt.unadmitted[conn.id] = (conn, waiting)
        try:
            return await _prelude(conn, rt, csock)
        finally:
            rt.unadmitted.pop(conn.id, None)
    # (only a shed connection gets here: RouteState.shed_unadmitted set conn.end)
    log(
        logger,
        logging.INFO,
        "connection.shed",
        route=conn.route,
        conn=conn.id,
        client=conn.client,
        reason="unauthenticated, at max_connections",
    )
    return None


async def _prelude(
    conn: Connection, rt: RouteState, csock: socket.socket
) -> tuple[RawLeg, RequestGate | None, bytes] | None:
    settings = rt.config.settings
    leg: RawLeg = RawLeg(csock)
    if rt.tls_server is not None:
        tls = TlsLeg(csock, rt.tls_server, server_side=True)
        with trio.move_on_after(settings.tls.handshake_timeout_s) as scope:
            try:
                await tls.handshake()
            except LegFailed as exc:
                conn.end = End.TLS_ERROR
                log(
                    logger,
                    logging.INFO,
                    "tls.handshake_failed",
                    route=conn.route,
                    conn=conn.id,
                    client=conn.client,
                    error=_tls_reason(exc.error),
                )
                return None
        if scope.cancelled_caught:
            conn.end = End.TLS_HANDSHAKE_TIMEOUT
            log(
                logger,
                logging.INFO,
                "tls.handshake_failed",
                route=conn.route,
                conn=conn.id,
                client=conn.client,
                error="timeout",
            )
            return None
        conn.tls = tls.facts
        leg = tls
    if settings.gate.mode != "token":
        return leg, None, b""
    assert settings.gate.token is not None
    gate = RequestGate(settings.gate.token, secure=rt.tls_server is not None, counts=rt.gate_results)
    deadline = trio.current_time() + settings.gate.head_timeout_s
    while True:
        with trio.move_on_at(deadline) as scope:
            try:
                data = await leg.receive()
            except LegFailed:
                conn.end = End.CLIENT_RESET
                return None
        if scope.cancelled_caught:
            conn.end = End.HEAD_TIMEOUT
            log(
                logger,
                logging.INFO,
                "gate.head_timeout",
                route=conn.route,
                conn=conn.id,
                client=conn.client,
                timeout_s=settings.gate.head_timeout_s,
            )
            return None
        if not data:
            conn.end = End.CLIENT_GONE
            return None
        first = bytearray()
        for action in gate.feed(data):
            if isinstance(action, Forward):
                first += action.data
            elif isinstance(action, Reply):
                try:
                    await leg.send_all(action.data)
                except LegFailed:
                    conn.end = End.CLIENT_RESET
                    return None
                if action.close:
                    conn.end = End.GATE_REFUSED
                    log(
                        logger,
                        logging.INFO,
                        "gate.refused",
                        route=conn.route,
                        conn=conn.id,
                        client=conn.client,
                        reason=action.reason,
                    )
                    return None
                # Answered (the token exchanged for the cookie): the next request gets its own time.
                deadline = trio.current_time() + settings.gate.head_timeout_s
            else:
                assert isinstance(action, Close)
                conn.end = End.GATE_REFUSED
                return None
        if first:
            return leg, (None if gate.tunnel else gate), bytes(first)


async def upstream_leg(conn: Connection, rt: RouteState, usock: socket.socket, host: str) -> RawLeg | None:
    """The upstream's leg, TLS verified when the route says so; None with
    ``conn.end`` set if the handshake failed."""
    context = rt.connector.tls
    if context is None:
        return RawLeg(usock)
    tls = TlsLeg(usock, context, server_side=False, server_hostname=rt.connector.tls_name or host)
    reason = None
    with trio.move_on_after(rt.config.settings.tls.handshake_timeout_s) as scope:
        try:
            await tls.handshake()
        except LegFailed as exc:
            reason = _tls_reason(exc.error)
    if scope.cancelled_caught:
        reason = "timeout"
    if reason is None:
        return tls
    conn.end = End.UPSTREAM_TLS_ERROR
    if rt.breaker.record_failure(trio.current_time(), "tls"):
        log(
            logger,
            logging.ERROR,
            "circuit.open",
            route=conn.route,
            reason="tls",
            open_s=rt.breaker.open_s,
            opened_total=rt.breaker.opened_total,
        )
    log(
        logger,
        logging.WARNING,
        "upstream.tls_failed",
        route=conn.route,
        conn=conn.id,
        upstream=conn.upstream,
        error=reason,
    )
    return None


def _tls_reason(error: BaseException) -> str:
    """A short reason for logs (OpenSSL's reason code, never any bytes)."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, str):
        return reason.lower()
    if isinstance(error, ConnectionError):
        return "connection closed"
    return type(error).__name__
