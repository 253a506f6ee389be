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
* A read that does not fill the buffer means the socket is empty: the next
  step is ``wait_readable``, not a ``recv`` that would return EAGAIN (one
  syscall saved per small message, which is most of MCP traffic).
* A scheduler checkpoint every ``CHECKPOINT_EVERY`` chunks moved without
  blocking, so that one busy connection cannot starve the others.
* Bytes are never altered, reordered or held back waiting for more.

Errors are reported with the leg that failed (``LegFailed.side``) so the
caller can propagate a reset to the other leg.
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import Protocol

import trio

from ..errors import RemoteError

#: Chunks moved without blocking before yielding to the scheduler.
CHECKPOINT_EVERY = 16


class ChunkObserver(Protocol):
    """What ``pump`` asks of an in-line observer of one direction.

    ``feed(chunk)`` is called with each chunk right after it was handed to
    the kernel and returns True to go on or False to see no more of this
    direction (the pump may then splice).  While ``rewriting`` is true it is
    called *before* the send instead and may return ``bytes`` to forward in
    place of the chunk; at EOF it is called with an empty chunk and may
    return bytes still held.  It never raises, and copies what it keeps: the
    chunk is a view of the shared scratch buffer.
    """

    @property
    def rewriting(self) -> bool: ...

    def feed(self, data: memoryview) -> bool | bytes: ...


class Flow:
    """Per-direction counters, read by introspection and the idle watcher."""

    __slots__ = ("bytes", "eof", "spliced", "tail")

    def __init__(self) -> None:
        self.bytes = 0
        #: Of ``bytes``, those moved by splice(2) (never copied through Python).
        self.spliced = 0
        self.eof = False
        #: True while a partly sent chunk is being delivered (no frame may be
        #: inserted into the destination meanwhile).
        self.tail = False


class LegFailed(RemoteError):
    """A socket error on one leg (a reset, a broken pipe): ``side`` is
    ``"src"`` or ``"dst"``, so the caller resets the other leg."""

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


_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032
HAVE_SPLICE = hasattr(os, "splice")


class Pipe:
    """A non-blocking pipe sized to the route's buffer: splice's staging area.

    Bytes wait here (in the kernel) while the destination is full, so a
    blocked direction holds at most ``size`` bytes, as with the scratch copy.
    """

    __slots__ = ("r", "w", "size")
    #: Pipes open in this process (two descriptors each): the worker's
    #: descriptor budget counts them (exhaustion.py).
    open = 0

    def __init__(self, size: int) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        Pipe.open += 1
        try:
            fcntl.fcntl(self.w, _F_SETPIPE_SZ, size)
        except OSError:
            pass  # over /proc/sys/fs/pipe-max-size or the user's pipe quota
        self.size = fcntl.fcntl(self.w, _F_GETPIPE_SZ)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)
        Pipe.open -= 1


async def _splice_out(pipe: Pipe, dst: socket.socket, n: int) -> None:
    """Move ``n`` bytes already in ``pipe`` to ``dst``."""
    splice = os.splice
    r, dst_fd = pipe.r, dst.fileno()
    while n:
        try:
            n -= splice(r, dst_fd, n, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(dst)
        except OSError as exc:
            raise LegFailed("dst", exc) from None


async def pump(
    src: socket.socket,
    dst: socket.socket,
    scratch: memoryview,
    flow: Flow,
    *,
    splice: bool = False,
    observe: ChunkObserver | None = None,
) -> None:
    """Forward ``src`` -> ``dst`` until EOF on ``src``, then half-close ``dst``.

    With ``splice``, a direction whose reads fill the buffer (a bulk
    transfer) switches to ``splice(2)`` through a pipe of the same size, so
    the kernel moves the bytes without copying them through Python; it
    switches back to ``recv_into`` as soon as a read comes up short (small
    messages: one syscall cheaper each way).  The pipe is created on the
    first bulk read, so connections that never move bulk data use no pipe.

    ``observe`` (in-line observation) sees every chunk right after it was
    handed to the kernel -- in the same step, so a request is always seen
    before its response -- and returns True, or False when it wants no
    more; it must not raise and must copy what it keeps (the chunk is a view
    of the shared scratch buffer).  While it observes, the direction never
    splices.  Only while ``observe.rewriting`` (the WebSocket keepalive
    awaits a pong) does it see chunks *before* they are sent, and may return
    ``bytes`` to forward instead (its own pongs removed, a pong header held
    back until its payload shows whose it is); at EOF it is called with an
    empty chunk and may return bytes still held.

    Returns normally on EOF; raises ``LegFailed`` on a socket error;
    cancellation leaves both sockets open for the caller to close.
    """
    recv_into = src.recv_into
    send = dst.send
    wait_readable = trio.lowlevel.wait_readable
    full = len(scratch)
    streak = 0
    drained = False
    bulk = False
    pipe: Pipe | None = None
    try:
        while True:
            if drained:
                # The last read did not fill the buffer: the socket was empty,
                # so wait instead of paying for a read that returns EAGAIN.
                await wait_readable(src)
                streak = 0
            if bulk and pipe is not None and observe is None:
                try:
                    n = os.splice(src.fileno(), pipe.w, pipe.size, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    drained = True
                    continue
                except OSError as exc:
                    raise LegFailed("src", exc) from None
                if not n:
                    break
                await _splice_out(pipe, dst, n)
                flow.spliced += n
                drained = n < pipe.size
            else:
                try:
                    n = recv_into(scratch)
                except BlockingIOError:
                    drained = True
                    continue
                except OSError as exc:
                    raise LegFailed("src", exc) from None
                if not n:
                    break
                out: memoryview | bytes = scratch[:n]
                after = observe
                if observe is not None and observe.rewriting:
                    after = None
                    verdict = observe.feed(out)
                    if verdict is False:
                        observe = None
                    elif verdict is not True:
                        out = verdict  # rewritten by the WebSocket keepalive
                if out:
                    try:
                        sent = send(out)
                    except BlockingIOError:
                        sent = 0
                    except OSError as exc:
                        raise LegFailed("dst", exc) from None
                    # Observed right after the send, before any await: a request
                    # is always seen before its response.
                    if after is not None and after.feed(out) is False:
                        observe = None
                    if sent < len(out):
                        flow.tail = True
                        await _send_tail(dst, bytes(out[sent:]))
                        flow.tail = False
                        streak = 0
                drained = n < full
            flow.bytes += n
            bulk = not drained
            if bulk and splice and pipe is None and observe is None:
                try:
                    pipe = Pipe(full)
                except OSError:
                    splice = False  # out of descriptors: keep copying
            streak += 1
            if streak >= CHECKPOINT_EVERY and not drained:
                streak = 0
                await trio.lowlevel.checkpoint()
    finally:
        if pipe is not None:
            pipe.close()
    if observe is not None:
        rest = observe.feed(memoryview(b""))
        if isinstance(rest, bytes) and rest:
            await _send_tail(dst, rest)
    flow.eof = True
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the destination is already gone; its own pump reports that
