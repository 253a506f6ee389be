"""Kernel TCP statistics (Linux ``TCP_INFO``) for one socket.

Reading ``TCP_INFO`` is one ``getsockopt``: microseconds.  The offsets are
those of ``struct tcp_info`` in ``linux/tcp.h`` (stable ABI: fields are only
ever appended); ``rtt``/``rttvar`` are smoothed values in microseconds,
``total_retrans`` counts every retransmitted segment of the connection.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from dataclasses import dataclass

_TCP_INFO = getattr(socket, "TCP_INFO", 11)
_TCP_INFO_LEN = 104  # up to and including tcpi_total_retrans
_RTT = struct.Struct("=II")  # tcpi_rtt, tcpi_rttvar at offset 68
_LAST = struct.Struct("=IIII")  # last_data_sent, last_ack_sent, last_data_recv, last_ack_recv at 44 (ms)
_U32 = struct.Struct("=I")


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The kernel's figures for one socket: smoothed RTT and its variance, retransmits, idle times."""

    rtt_s: float
    rttvar_s: float
    total_retrans: int
    #: Time since data was last sent / received on this socket (kernel clock):
    #: how long the leg has been idle, at no cost to the hot path.
    since_sent_s: float
    since_recv_s: float

    @property
    def idle_s(self) -> float:
        return min(self.since_sent_s, self.since_recv_s)

    def as_json(self) -> dict[str, float | int]:
        return {
            "rtt_ms": round(self.rtt_s * 1000, 3),
            "rttvar_ms": round(self.rttvar_s * 1000, 3),
            "retransmits": self.total_retrans,
        }


#: ``tcpi_state`` (the first byte of TCP_INFO): closed (after a reset, too),
#: and the peer sent FIN while we did not.
TCP_CLOSE = 7
TCP_CLOSE_WAIT = 8


def tcp_state(sock: socket.socket) -> int | None:
    """The kernel's TCP state of ``sock`` (``TCP_CLOSE_WAIT`` ...), or None."""
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0]
    except (OSError, ValueError, IndexError):
        return None


def read_tcp_info(sock: socket.socket) -> TcpInfo | None:
    """The socket's kernel figures, or None (closed socket, other OS)."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_LEN)
    except (OSError, ValueError):
        return None
    if len(raw) < _TCP_INFO_LEN:
        return None
    rtt_us, rttvar_us = _RTT.unpack_from(raw, 68)
    sent_ms, _, recv_ms, _ = _LAST.unpack_from(raw, 44)
    return TcpInfo(rtt_us / 1e6, rttvar_us / 1e6, _U32.unpack_from(raw, 100)[0], sent_ms / 1000, recv_ms / 1000)


#: ``struct tcp_info`` up to ``tcpi_delivery_rate`` (Linux 4.9): offset 160, u64 bytes/s.
_DELIVERY_LEN = 168
_U64 = struct.Struct("=Q")


def unacked_bytes(sock: socket.socket | None) -> int:
    """Bytes the peer has not acknowledged yet, sent or not (``SIOCOUTQ``): what
    it still has to take.  One ``ioctl``, about a microsecond; 0 when closed."""
    if sock is None:
        return 0
    try:
        return int(_U32.unpack(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return 0


def delivery_rate(sock: socket.socket | None) -> float:
    """The kernel's recent delivery rate on this socket (bytes/s; 0 when unknown)."""
    if sock is None:
        return 0.0
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _DELIVERY_LEN)
    except (OSError, ValueError):
        return 0.0
    return float(_U64.unpack_from(raw, 160)[0]) if len(raw) >= _DELIVERY_LEN else 0.0


_ACKED_LEN = 128  # up to and including tcpi_bytes_acked (offset 120, u64; Linux 4.1)


def bytes_acked(sock: socket.socket | None) -> int | None:
    """Bytes the peer has acknowledged since the connection began; None when
    the socket is closed or the kernel does not say."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _ACKED_LEN)
    except (OSError, ValueError):
        return None
    return int(_U64.unpack_from(raw, 120)[0]) if len(raw) >= _ACKED_LEN else None
