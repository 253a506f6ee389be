"""Answering a client the proxy will not forward (circuit open).

Rules this module keeps:

* ``protocol = "tcp"``: closed at once with RST.
* ``protocol = "http"``: the request head is read (bounded in size and
  time) and answered ``503 Service Unavailable`` with ``Retry-After`` and a
  small JSON body naming the route and the reason; a WebSocket upgrade gets
  the same 503.
* ``protocol = "auto"``: the same 503 if the client's first bytes parse as
  an HTTP/1.x request, else RST -- at once when its first bytes cannot begin
  a request line (the one sniffer, observe/connection.py, peeked).  A client
  that sends nothing within ``SNIFF_TIMEOUT_S`` (a server-speaks-first
  protocol) is closed.
* Never raises ``OSError``; the socket is always closed.
"""

from __future__ import annotations

import json
import socket

import h11
import trio

from ..net import sockopts
from ..net.http import RequestLimits, RequestRejected, ServerConnection
from ..observe.connection import SNIFF_BYTES, Sniff, sniff_request

SNIFF_TIMEOUT_S = 1.0
MAX_HEAD_BYTES = 16 * 1024
#: The whole refusal (reading the head, answering) is bounded by this.
_LIMITS = RequestLimits(
    first_byte_s=SNIFF_TIMEOUT_S,
    head_s=SNIFF_TIMEOUT_S,
    request_s=SNIFF_TIMEOUT_S,
    max_head_bytes=MAX_HEAD_BYTES,
    max_body_bytes=MAX_HEAD_BYTES,
    send_s=SNIFF_TIMEOUT_S,
)


async def refuse(sock: socket.socket, protocol: str, route: str, reason: str, retry_after_s: int) -> None:
    """Answer and close ``sock``."""
    answered = False
    try:
        if protocol == "tcp":
            return
        if protocol == "auto" and not await _may_be_http(sock):
            return  # not HTTP: a reset, now
        http = ServerConnection(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), _LIMITS)
        with trio.move_on_after(SNIFF_TIMEOUT_S):
            try:
                got = await http.read_head()
            except RequestRejected:
                return  # not HTTP (or too slow, too large): a reset says enough
            if got is None:
                return
            body = (
                json.dumps(
                    {"error": "upstream unavailable", "route": route, "reason": reason, "retry_after_s": retry_after_s}
                ).encode()
                + b"\n"
            )
            await http.respond(
                503,
                body,
                "application/json",
                [("retry-after", str(retry_after_s)), ("connection", "close"), ("cache-control", "no-store")],
                reason=b"Service Unavailable",
            )
            sock.shutdown(socket.SHUT_WR)
            answered = True
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, h11.ProtocolError):
        pass
    finally:
        sockopts.close(sock, abort=not answered)


async def _may_be_http(sock: socket.socket) -> bool:
    """Whether the client's first bytes (peeked, left in place) may begin an
    HTTP request; False at once when they cannot, or when nothing came in time."""
    with trio.move_on_after(SNIFF_TIMEOUT_S):
        while True:
            await trio.lowlevel.wait_readable(sock)
            head = sock.recv(SNIFF_BYTES, socket.MSG_PEEK)
            verdict = sniff_request(head)
            if verdict is not Sniff.MAYBE or not head or len(head) >= SNIFF_BYTES:
                return verdict is Sniff.HTTP or (verdict is Sniff.MAYBE and bool(head))
            await trio.sleep(0.01)  # (a prefix of a method: wait for more bytes)
    return False
