"""Answering a client the proxy will not forward (circuit open).

* ``protocol = "tcp"``: closed at once with RST.
* ``protocol = "http"``: the request head is read with h11 (bounded in size
  and time) and answered ``503 Service Unavailable`` with ``Retry-After`` and
  a small JSON body naming the route and the reason; a WebSocket upgrade
  gets the same 503.
* ``protocol = "auto"``: the same 503 if the client's first bytes parse as
  an HTTP/1.x request, else RST.  A client that sends nothing within
  ``SNIFF_TIMEOUT_S`` (a server-speaks-first protocol) is closed.
"""

from __future__ import annotations

import json
import socket

import h11
import trio

from ..net import sockopts

SNIFF_TIMEOUT_S = 1.0
MAX_HEAD_BYTES = 16 * 1024


async def _read_request(sock: socket.socket, conn: h11.Connection) -> bool:
    """True once a complete request head has been parsed."""
    received = 0
    with trio.move_on_after(SNIFF_TIMEOUT_S):
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                return True
            if event is not h11.NEED_DATA:
                return False
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not data:
                return False
            received += len(data)
            if received > MAX_HEAD_BYTES:
                return False
            conn.receive_data(data)
    return False


async def refuse(sock: socket.socket, protocol: str, route: str, reason: str, retry_after_s: int) -> None:
    """Answer and close ``sock``; never raises OSError."""
    try:
        if protocol == "tcp":
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            is_http = await _read_request(sock, conn)
        except h11.RemoteProtocolError:
            is_http = False
        if not is_http:
            return
        body = json.dumps({"error": "upstream unavailable", "route": route, "reason": reason,
                           "retry_after_s": retry_after_s}).encode() + b"\n"
        data = conn.send(h11.Response(status_code=503, headers=[
            ("content-type", "application/json"), ("content-length", str(len(body))),
            ("retry-after", str(retry_after_s)), ("connection", "close"), ("cache-control", "no-store")],
            reason=b"Service Unavailable"))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        with trio.move_on_after(SNIFF_TIMEOUT_S):
            view = memoryview(data)
            while view:
                try:
                    view = view[sock.send(view):]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
        sock.shutdown(socket.SHUT_WR)
        protocol = "done"
    except (OSError, h11.LocalProtocolError):
        pass
    finally:
        sockopts.close(sock, abort=protocol != "done")
