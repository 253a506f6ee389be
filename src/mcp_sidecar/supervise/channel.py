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
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import trio

from ..errors import RemoteError

_LEN = struct.Struct("!I")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class ChannelClosed(RemoteError):
    """The other end went away."""


class Channel:
    """One end of a supervisor <-> worker socketpair."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
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
