"""The supervisor <-> worker channel: length-prefixed pickled messages.

A private ``socketpair`` between a supervisor and the worker it spawned:
nobody else can write to it, so pickle (which carries the validated
``ProxyConfig`` as it is) is safe here and nowhere else.  The messages are
the typed classes of ``messages.py``.

Rules this module keeps:

* One message per frame: a 4-byte big-endian length, then the pickle;
  frames over ``MAX_MESSAGE_BYTES`` close the channel.
* Sends are serialised by a lock (the heartbeat and the replies share it).
* Any failure of the other end is ``ChannelClosed``: the caller decides.
* ``BlockingChannel`` speaks the same frames without trio, for a standby
  worker waiting to be activated (no event loop runs, so it dirties almost
  none of the memory it shares with the fork server); what it read past the
  last message is handed on to the ``Channel`` that follows.
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import time
from typing import Any

import trio

from ..errors import RemoteError

_LEN = struct.Struct("!I")
#: The largest frame either end reads (a bound on what a confused peer can
#: make it hold).  Room for the largest message a worker relays in one
#: batch (taprelay.py): a batch's 1 MiB and one message more, whose body is
#: cut at most at 16 MiB (a tap's ``max_bytes``, a recording's
#: ``max_body_bytes``) and may grow to twice that as a recording's escaped text.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ChannelClosed(RemoteError):
    """The other end went away."""


class Channel:
    """One end of a supervisor <-> worker socketpair."""

    def __init__(self, stream: trio.SocketStream, buffered: bytes = b"") -> None:
        self.stream = stream
        self._buffer = bytearray(buffered)
        self._send_lock = trio.Lock()

    async def send(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._send_lock:
            try:
                await self.stream.send_all(_LEN.pack(len(data)) + data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelClosed from exc

    async def _fill(self, n: int) -> None:
        while len(self._buffer) < n:
            try:
                chunk = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelClosed from exc
            if not chunk:
                raise ChannelClosed
            self._buffer += chunk

    async def receive(self) -> Any:
        await self._fill(_LEN.size)
        (size,) = _LEN.unpack_from(self._buffer)
        if size > MAX_MESSAGE_BYTES:
            raise ChannelClosed(f"message of {size} bytes")
        await self._fill(_LEN.size + size)
        data = bytes(self._buffer[_LEN.size : _LEN.size + size])
        del self._buffer[: _LEN.size + size]
        return pickle.loads(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


def _frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class BlockingChannel:
    """The same channel, blocking, before any event loop runs."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        sock.setblocking(True)

    def send(self, message: object) -> None:
        try:
            self.sock.sendall(_frame(message))
        except OSError as exc:
            raise ChannelClosed from exc

    def _message(self) -> Any | None:
        if len(self.buffer) < _LEN.size:
            return None
        (size,) = _LEN.unpack_from(self.buffer)
        if size > MAX_MESSAGE_BYTES:
            raise ChannelClosed(f"message of {size} bytes")
        if len(self.buffer) < _LEN.size + size:
            return None
        data = bytes(self.buffer[_LEN.size : _LEN.size + size])
        del self.buffer[: _LEN.size + size]
        return pickle.loads(data)

    def receive(self, timeout_s: float | None = None) -> Any | None:
        """The next message, or None if none came within ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            message = self._message()
            if message is not None:
                return message
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                    return None
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise ChannelClosed from exc
            if not chunk:
                raise ChannelClosed
            self.buffer += chunk
