"""The two legs of a connection: a plain socket, or TLS over one.

The pump (pump.py) runs one loop for every connection, clear, TLS or gated;
what differs is the leg it reads from and writes to.  A ``RawLeg``'s
``recv_into`` and ``send`` *are* the socket's methods (C, no Python frame
on the hot path); a ``TlsLeg``'s are Python methods with the same contract
over ``ssl.SSLObject`` and memory BIOs.

Rules this module keeps:

* ``recv_into(buffer)``: bytes read (0 at EOF); ``BlockingIOError`` when
  nothing can be read without waiting for the socket; ``OSError`` (an
  ``ssl.SSLError`` is one) when the leg failed.  A read that does not fill
  the buffer means the socket was empty (the pump waits next): a TLS leg
  decrypts every complete record it has before it says so.
* ``send(data)``: bytes taken (a TLS leg takes all or raises
  ``BlockingIOError`` while earlier ciphertext is still unsent); then
  ``pending`` says whether ciphertext waits for the socket, and ``flush``
  sends it.  A plain leg is never pending.
* A TLS leg: a peer that closes without close_notify is an EOF (as browsers
  do), not an error; what OpenSSL writes while reading (the alert refusing a
  renegotiation, a TLS 1.3 key update's answer) is sent before the pump
  waits; ``send_eof`` sends close_notify and shuts the write side (a TLS
  half-close: the peer may go on sending).
* ``try_write_whole(frame)`` writes a small frame (the WebSocket keepalive's
  ping) whole now, or not at all: never half a frame, never waiting, never
  behind a chunk half delivered (the caller checks ``Flow.tail``).
* No splice on TLS legs (the bytes must pass through OpenSSL): ``splice_fd``
  is None there.
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Callable
from typing import cast

import trio

from .pump import LegFailed

#: Plaintext read per receive (the prelude: TLS handshake, the gate's first request).
READ_BYTES = 64 * 1024
#: Ciphertext read from the socket per step while decrypting.
_CIPHERTEXT_BYTES = 64 * 1024


class RawLeg:
    """A plain non-blocking socket, as a leg."""

    tls = False

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: The pump's hot path: the socket's own methods.
        self.recv_into: Callable[[memoryview], int] = sock.recv_into
        self.send: Callable[[memoryview | bytes], int] = sock.send
        #: splice(2) may move this leg's bytes (None: they must pass through Python).
        self.splice_fd: int | None = sock.fileno()
        #: Ciphertext waits for the socket (never, on a plain leg).
        self.pending = False
        #: The last receive came up short: the socket is empty, so wait before
        #: reading (saves the recv that would return EAGAIN, as the pump does).
        self._drained = False

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.sock)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.sock)

    async def flush(self) -> None:
        """Send what waits (nothing, on a plain leg)."""

    async def receive(self) -> bytes:
        """Bytes as they come (the prelude); b"" at EOF; ``LegFailed("src")``."""
        if self._drained:
            await self.wait_readable()
        while True:
            try:
                data = self.sock.recv(READ_BYTES)
            except BlockingIOError:
                await self.wait_readable()
                continue
            except OSError as exc:
                raise LegFailed("src", exc) from None
            self._drained = len(data) < READ_BYTES
            return data

    async def send_all(self, data: bytes | memoryview) -> None:
        """Send everything (waiting as needed); ``LegFailed("dst")``."""
        view = memoryview(data)
        while view:
            try:
                sent = self.send(view)
            except BlockingIOError:
                await self.wait_writable()
                continue
            except OSError as exc:
                raise LegFailed("dst", exc) from None
            view = view[sent:]
        if self.pending:
            await self.flush()

    async def send_eof(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def try_write_whole(self, frame: bytes) -> bool:
        """Write ``frame`` whole now, or not at all (False: the socket is full)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT)
        if not poller.poll(0):
            return False
        try:
            return self.sock.send(frame) == len(frame)
        except OSError:
            return False


class TlsLeg(RawLeg):
    """TLS over a raw non-blocking socket (client or server side)."""

    tls = True

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        super().__init__(sock)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_side=server_side, server_hostname=server_hostname)
        self._eof = False
        #: Ciphertext the socket did not take yet.
        self._unsent = b""
        self.recv_into = self._recv_into
        self.send = self._send
        self.splice_fd = None

    # -- the pump's contract ------------------------------------------------------------------

    def _recv_into(self, buffer: memoryview | bytearray) -> int:
        view = memoryview(buffer)
        size = len(view)
        got = 0
        while got < size and not self._eof:
            try:
                # With a buffer, read() returns the count (typeshed says bytes).
                n: int = cast(int, self.ssl.read(size - got, view[got:]))
            except ssl.SSLWantReadError:
                n = -1
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self._eof = True  # close_notify, or closed without one: an EOF, as browsers do
                break
            except ssl.SSLError:
                self._push_quietly()  # the fatal alert, if any, then the failure
                raise
            if n > 0:
                got += n
                continue
            if n == 0:
                self._eof = True
                break
            try:  # no complete record decrypted: more ciphertext from the socket
                data = self.sock.recv(_CIPHERTEXT_BYTES)
            except BlockingIOError:
                if got:
                    break
                self._push()  # (an alert or key update answer may be what the peer waits for)
                raise
            if not data:
                self._in.write_eof()
                continue  # the next read says close_notify, or EOF without it
            self._in.write(data)
        self._push()
        return got

    def _send(self, data: memoryview | bytes) -> int:
        if self._unsent or self._out.pending:
            self._push()
            if self.pending:
                raise BlockingIOError  # earlier ciphertext first: the pump waits for the socket
        self.ssl.write(bytes(data))
        self._push()
        return len(data)

    def _push(self) -> None:
        """Hand the socket what ciphertext it takes now; the rest stays ``pending``."""
        if self._out.pending:
            self._unsent += self._out.read()
        if self._unsent:
            try:
                sent = self.sock.send(self._unsent)
            except BlockingIOError:
                sent = 0
            self._unsent = self._unsent[sent:]
        self.pending = bool(self._unsent)

    def _push_quietly(self) -> None:
        try:
            self._push()
        except OSError:
            pass

    async def flush(self) -> None:
        while True:
            try:
                self._push()
            except OSError as exc:
                raise LegFailed("dst", exc) from None
            if not self.pending:
                return
            await self.wait_writable()

    # -- the handshake and the prelude ----------------------------------------------------------

    async def handshake(self) -> None:
        """Raises ``LegFailed("src", ...)``: this leg's peer, whichever side it is."""
        while True:
            try:
                self.ssl.do_handshake()
                await self._flush_src()
                return
            except ssl.SSLWantReadError:
                await self._flush_src()
                data = await RawLeg.receive(self)
                if not data:
                    raise LegFailed("src", ConnectionResetError("EOF during the TLS handshake")) from None
                self._in.write(data)
            except ssl.SSLError as exc:
                await self._flush_quietly()  # the alert, if any
                raise LegFailed("src", exc) from None

    async def _flush_src(self) -> None:
        try:
            await self.flush()
        except LegFailed as exc:
            raise LegFailed("src", exc.error) from None

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except (LegFailed, OSError):
            pass

    async def receive(self) -> bytes:
        buffer = bytearray(READ_BYTES)
        while True:
            try:
                n = self._recv_into(buffer)
            except BlockingIOError:
                await self.wait_readable()
                continue
            except OSError as exc:
                raise LegFailed("src", exc) from None
            if self.pending:
                await self._flush_src()
            return bytes(buffer[:n])

    async def send_eof(self) -> None:
        try:
            self.ssl.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass  # our close_notify is written; the peer's is read by receive
        await self._flush_quietly()
        await RawLeg.send_eof(self)

    def try_write_whole(self, frame: bytes) -> bool:
        if self.pending:
            return False
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT)
        if not poller.poll(0):
            return False
        try:
            self.ssl.write(frame)
            self._push()  # a few dozen bytes into a writable socket: whole (else the pump's next send flushes)
        except OSError:
            return False
        return True

    @property
    def facts(self) -> dict[str, str | None]:
        """What /api/connections shows of the session (never key material)."""
        cipher = self.ssl.cipher()
        return {
            "version": self.ssl.version(),
            "cipher": cipher[0] if cipher else None,
            "alpn": self.ssl.selected_alpn_protocol(),
        }
