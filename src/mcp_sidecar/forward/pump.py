"""The forwarding hot path: move bytes from one leg to the other.

This is the product; every line here is paid on every chunk.  One loop for
every connection -- clear, TLS on either leg, behind the access gate: what
differs is the leg (legs.py: a plain socket, whose ``recv_into``/``send``
are the socket's own C methods, or TLS over one) and two optional
transforms of the client's bytes, the gate and the WebSocket keepalive's
rewrite.  Its shape was chosen by measurement (see docs/design.md and
scripts/bench):

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
* Bytes are never altered, reordered or held back waiting for more -- but
  by the gate (a request head held until complete, its own credentials
  removed: net/gate.py) and the keepalive (observe/connection.py's rules).
* splice(2) only between two plain legs.

Errors are reported with the leg that failed (``LegFailed.side``) so the
caller can propagate a reset to the other leg.
"""

from __future__ import annotations

import fcntl
import os
import socket
from typing import Any, Protocol

import trio

from ..errors import RemoteError
from ..net.gate import Close, Forward, Reply, RequestGate

#: Chunks moved without blocking before yielding to the scheduler.
CHECKPOINT_EVERY = 16


class ChunkObserver(Protocol):
    """What ``pump`` asks of an in-line observer of one direction.

    ``feed(chunk)`` is called with each chunk right after it was handed to
    the kernel and returns True to go on or False to see no more of this
    direction (the pump may then splice).  While ``rewriting`` is true (only
    ever where ``may_rewrite``) it is
    called *before* the send instead and may return ``bytes`` to forward in
    place of the chunk; at EOF it is called with an empty chunk and may
    return bytes still held.  It never raises, and copies what it keeps: the
    chunk is a view of the shared scratch buffer.
    """

    #: False: ``rewriting`` is never true for this direction (no keepalive), not asked.
    may_rewrite: bool

    @property
    def rewriting(self) -> bool: ...

    def feed(self, data: memoryview | bytes) -> bool | bytes: ...


class Leg(Protocol):
    """What the pump asks of a leg (legs.py: ``RawLeg``, ``TlsLeg``)."""

    sock: Any
    splice_fd: int | None
    pending: bool

    def recv_into(self, buffer: memoryview) -> int: ...

    def send(self, data: memoryview | bytes) -> int: ...

    async def wait_writable(self) -> None: ...

    async def flush(self) -> None: ...

    async def send_all(self, data: bytes | memoryview) -> None: ...

    async def send_eof(self) -> None: ...

    async def receive(self) -> bytes:
        """Bytes as they come, b"" at EOF (the prelude and the fault pump read so)."""
        ...


class Flow:
    """Per-direction counters, read by introspection and the idle watcher."""

    __slots__ = ("blocked_s", "bytes", "eof", "spliced", "tail")

    def __init__(self) -> None:
        self.bytes = 0
        #: Seconds spent waiting for the destination to take bytes (its send
        #: buffer full: backpressure), timed only when it happens.
        self.blocked_s = 0.0
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


async def _send_tail(dst: Leg, tail: bytes) -> None:
    """Deliver ``tail`` to a destination whose kernel buffer was full."""
    view = memoryview(tail)
    sent = 0
    total = len(tail)
    while sent < total:
        await dst.wait_writable()
        try:
            sent += dst.send(view[sent:])
        except BlockingIOError:
            continue
        except OSError as exc:
            raise LegFailed("dst", exc) from None
    if dst.pending:
        await _flush(dst)


async def _flush(dst: Leg) -> None:
    """Ciphertext a TLS leg could not hand the socket yet."""
    try:
        await dst.flush()
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

    __slots__ = ("r", "size", "w")
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
    src: Leg,
    dst: Leg,
    scratch: memoryview,
    flow: Flow,
    *,
    splice: bool = False,
    observe: ChunkObserver | None = None,
    gate: RequestGate | None = None,
) -> None:
    """Forward ``src`` -> ``dst`` until EOF on ``src``, then half-close ``dst``.

    With ``splice`` (and two plain legs), a direction whose reads fill the
    buffer (a bulk transfer) switches to ``splice(2)`` through a pipe of the
    same size, so the kernel moves the bytes without copying them through
    Python; it switches back to ``recv_into`` as soon as a read comes up
    short (small messages: one syscall cheaper each way).  The pipe is
    created on the first bulk read, so connections that never move bulk
    data use no pipe.

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

    ``gate`` (the client's direction of a gated route) sees the client's
    bytes before anything is sent: what it forwards goes to ``dst``, its
    replies to ``src`` (the client); it closes the connection with
    ``GateClosed``; after an upgrade or ``CONNECT`` passed, it steps aside.

    Returns normally on EOF; raises ``LegFailed`` on a socket (or TLS) error;
    cancellation leaves both sockets open for the caller to close.
    """
    recv_into = src.recv_into
    send = dst.send
    sock = src.sock
    wait_readable = trio.lowlevel.wait_readable
    current_time = trio.current_time
    full = len(scratch)
    streak = 0
    drained = False
    bulk = False
    splice = splice and HAVE_SPLICE and src.splice_fd is not None and dst.splice_fd is not None
    pipe: Pipe | None = None
    try:
        while True:
            if drained:
                # The last read did not fill the buffer: the socket was empty,
                # so wait instead of paying for a read that returns EAGAIN.
                await wait_readable(sock)
                streak = 0
            if bulk and pipe is not None and observe is None:
                try:
                    n = os.splice(sock.fileno(), pipe.w, pipe.size, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    drained = True
                    continue
                except OSError as exc:
                    raise LegFailed("src", exc) from None
                if not n:
                    break
                await _splice_out(pipe, dst.sock, n)
                flow.spliced += n
                drained = n < pipe.size
            else:
                try:
                    n = recv_into(scratch)
                except BlockingIOError:
                    drained = True
                    if src.pending:  # (a TLS leg wrote while reading: the peer may wait for it)
                        await _flush_src(src)
                    continue
                except OSError as exc:
                    raise LegFailed("src", exc) from None
                if not n:
                    break
                if gate is not None:
                    gate, observe = await _through_gate(gate, scratch[:n], src, dst, observe)
                else:
                    out: memoryview | bytes = scratch[:n]
                    after = observe
                    if observe is not None and observe.may_rewrite and observe.rewriting:
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
                            blocked = current_time()
                            await _send_tail(dst, bytes(out[sent:]))
                            flow.blocked_s += current_time() - blocked
                            flow.tail = False
                            streak = 0
                        elif dst.pending:
                            await _flush(dst)
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
    await dst.send_eof()


async def _flush_src(src: Leg) -> None:
    try:
        await src.flush()
    except LegFailed as exc:
        raise LegFailed("src", exc.error) from None
    except OSError as exc:
        raise LegFailed("src", exc) from None


async def _through_gate(
    gate: RequestGate, data: memoryview, src: Leg, dst: Leg, observe: ChunkObserver | None
) -> tuple[RequestGate | None, ChunkObserver | None]:
    """The client's bytes through the access gate: forwarded, answered on
    ``src`` (the client), or the connection closed (``GateClosed``).  The
    gate steps aside (None) once an upgrade or ``CONNECT`` passed."""
    for action in gate.feed(bytes(data)):
        if isinstance(action, Forward):
            await dst.send_all(action.data)
            if observe is not None and observe.feed(memoryview(action.data)) is False:
                observe = None
        elif isinstance(action, Reply):
            try:
                await src.send_all(action.data)
            except LegFailed as exc:
                raise LegFailed("src", exc.error) from None  # the client is the source here
            if action.close:
                raise GateClosed(action.reason, replied=True)
        else:
            assert isinstance(action, Close)
            raise GateClosed(action.reason, replied=False)
    return (None if gate.tunnel else gate), observe


class GateClosed(RemoteError):
    """The gate ended the connection (``reason``; ``replied``: a 4xx was sent):
    the client's fault (no token, a bad one, malformed HTTP)."""

    def __init__(self, reason: str, *, replied: bool) -> None:
        self.reason = reason
        self.replied = replied
        super().__init__(reason)
