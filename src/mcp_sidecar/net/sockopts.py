"""Socket options applied to both legs of every forwarded connection.

* ``TCP_NODELAY`` always: without it every small POST of the Inspector's SSE
  transports stalls ~40 ms on Nagle's algorithm plus delayed ACKs.
* TCP keepalive when configured: finds peers that vanished without a FIN or
  RST (a dead laptop, a dropped NAT entry), which matters because the idle
  timeout is off by default.
* ``TCP_USER_TIMEOUT`` when configured: a peer that acknowledges nothing
  for that long while data is sent to it is dead, whatever keepalive says
  (keepalive only probes idle connections; a stream towards a vanished
  client is not idle).
* Set once on a listening socket, they are inherited by every socket it
  accepts (Linux copies them at accept): ``tune_listener`` spares the
  client leg of each connection its setsockopt calls.
* ``abort``: close with RST (``SO_LINGER`` 0) to propagate a reset from the
  other leg, as a direct connection would have seen it.
"""

from __future__ import annotations

import socket
import struct

import trio

KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 6
_LINGER_ABORT = struct.pack("ii", 1, 0)


def tune(sock: socket.socket, keepalive_s: float, user_timeout_s: float = 0.0) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if user_timeout_s > 0:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(user_timeout_s * 1000)))
    if keepalive_s > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(keepalive_s)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


def tune_listener(sock: socket.socket, keepalive_s: float, user_timeout_s: float = 0.0) -> None:
    """The options accepted sockets inherit (keepalive turned off if not configured)."""
    tune(sock, keepalive_s, user_timeout_s)
    if keepalive_s <= 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)


def close(sock: socket.socket, *, abort: bool = False) -> None:
    """Close a socket trio may be watching; with ``abort``, send RST."""
    if sock.fileno() < 0:
        return
    if abort:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
        except OSError:
            pass
    trio.lowlevel.notify_closing(sock)
    sock.close()
