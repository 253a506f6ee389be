"""The supervisor <-> worker channel: length-prefixed pickled messages.

A private ``socketpair`` between a supervisor and the worker it spawned:
nobody else can write to it, so pickle (which carries the validated
``ProxyConfig`` as it is) is safe here and nowhere else.  Messages are
tuples whose first item names them; see supervisor.py for the protocol.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import trio

_LEN = struct.Struct("!I")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class ChannelClosed(Exception):
    """The other end went away."""


class Channel:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()

    async def send(self, *message: Any) -> None:
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

    async def receive(self) -> tuple[Any, ...]:
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
