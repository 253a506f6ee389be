"""The forwarding hot path: move bytes from one socket to another.

This is the product; every line here is paid on every chunk.  Its shape was
chosen by measurement (see docs/design.md and scripts/bench):

* Raw non-blocking stdlib sockets.  The syscall is tried first;
  ``trio.lowlevel.wait_readable``/``wait_writable`` are awaited only on
  ``BlockingIOError``.  trio's ``SocketStream`` costs two scheduler
  checkpoints per operation and halves frame rates.
* One shared scratch buffer per process for ``recv_into``.  Between the
  ``recv_into`` and the ``send`` there is no ``await``, so no other task can
  touch the buffer; only when the destination is full is the unsent tail
  copied into a private ``bytes`` object.  An idle or flowing connection
  holds no buffer of its own; a blocked direction holds at most one chunk
  (``buffer_size``).  No further byte is read from the source until the
  tail is delivered: a slow reader slows the writer, through TCP.
* A scheduler checkpoint every ``CHECKPOINT_EVERY`` chunks moved without
  blocking, so that one busy connection cannot starve the others.
* Bytes are never altered, reordered or held back waiting for more.

Errors are reported with the leg that failed (``LegFailed.side``) so the
caller can propagate a reset to the other leg.
"""

from __future__ import annotations

import socket

import trio

#: Chunks moved without blocking before yielding to the scheduler.
CHECKPOINT_EVERY = 16


class Flow:
    """Per-direction counters, read by introspection and the idle watcher."""

    __slots__ = ("bytes", "eof")

    def __init__(self) -> None:
        self.bytes = 0
        self.eof = False


class LegFailed(Exception):
    """A socket error on one leg: ``side`` is ``"src"`` or ``"dst"``."""

    def __init__(self, side: str, error: OSError) -> None:
        self.side = side
        self.error = error
        super().__init__(f"{side}: {error}")


class ScratchBuffer:
    """The process-wide receive buffer; views of it are handed to pumps."""

    def __init__(self, size: int) -> None:
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._views: dict[int, memoryview] = {}

    def view(self, size: int) -> memoryview:
        """A reusable view of the first ``size`` bytes (one per size)."""
        if size > len(self._buffer):
            raise ValueError(f"scratch buffer is {len(self._buffer)} bytes, {size} asked")
        try:
            return self._views[size]
        except KeyError:
            view = self._views[size] = self._view[:size]
            return view


async def _send_tail(dst: socket.socket, tail: bytes) -> None:
    """Deliver ``tail`` to a destination whose kernel buffer was full."""
    view = memoryview(tail)
    sent = 0
    total = len(tail)
    while sent < total:
        await trio.lowlevel.wait_writable(dst)
        try:
            sent += dst.send(view[sent:])
        except BlockingIOError:
            continue
        except OSError as exc:
            raise LegFailed("dst", exc) from None


async def pump(src: socket.socket, dst: socket.socket, scratch: memoryview, flow: Flow) -> None:
    """Forward ``src`` -> ``dst`` until EOF on ``src``, then half-close ``dst``.

    Returns normally on EOF; raises ``LegFailed`` on a socket error;
    cancellation leaves both sockets open for the caller to close.
    """
    recv_into = src.recv_into
    send = dst.send
    wait_readable = trio.lowlevel.wait_readable
    streak = 0
    while True:
        try:
            n = recv_into(scratch)
        except BlockingIOError:
            await wait_readable(src)
            streak = 0
            continue
        except OSError as exc:
            raise LegFailed("src", exc) from None
        if not n:
            break
        try:
            sent = send(scratch[:n])
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise LegFailed("dst", exc) from None
        if sent < n:
            await _send_tail(dst, bytes(scratch[sent:n]))
            streak = 0
        flow.bytes += n
        streak += 1
        if streak >= CHECKPOINT_EVERY:
            streak = 0
            await trio.lowlevel.checkpoint()
    flow.eof = True
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the destination is already gone; its own pump reports that
