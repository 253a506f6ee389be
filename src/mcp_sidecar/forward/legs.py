"""Connection legs that are not a bare socket: TLS, and the gate's pump.

The raw pump (pump.py) moves bytes between two plain sockets at full speed.
A connection with TLS on a leg, or with the access gate on its client side,
goes through ``pump_legs`` instead: the same rules (observe after the send,
half-close propagated, errors reported by side) over ``Leg`` objects.

Rules this module keeps:

* ``TlsLeg`` is TLS over a raw non-blocking socket with ``ssl.SSLObject``
  and memory BIOs: trio only waits for readability and writability, the
  record layer is OpenSSL's.  ``receive`` returns plaintext (b"" at the
  peer's close_notify or EOF), ``send_all`` encrypts and writes everything,
  ``send_eof`` sends close_notify and shuts the socket's write side (a TLS
  half-close: the peer may go on sending, and is read until it stops).
* A peer that closes without close_notify is an EOF (as browsers do), not
  an error; a TLS failure (bad record, handshake refused) is ``LegFailed``
  on that side, which resets the other leg.
* No splice on these legs (the bytes must pass through OpenSSL), no
  WebSocket keepalive (its frames would have to be encrypted in order with
  the stream; off on TLS routes).
"""

from __future__ import annotations

import socket
import ssl

import trio

from ..errors import RemoteError
from ..net.gate import Close, Forward, Reply, RequestGate
from .pump import CHECKPOINT_EVERY, ChunkObserver, Flow, LegFailed

#: Plaintext read per receive.
READ_BYTES = 64 * 1024


class RawLeg:
    """A plain non-blocking socket, as a leg."""

    tls = False

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: The last read came up short: the socket is empty, so wait before
        #: reading (saves the recv that would return EAGAIN, as pump.py does).
        self._drained = False

    async def receive(self) -> bytes:
        if self._drained:
            await trio.lowlevel.wait_readable(self.sock)
        while True:
            try:
                data = self.sock.recv(READ_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)
                continue
            except OSError as exc:
                raise LegFailed("src", exc) from None
            self._drained = len(data) < READ_BYTES
            return data

    async def send_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            except OSError as exc:
                raise LegFailed("dst", exc) from None
            view = view[sent:]

    async def send_eof(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class TlsLeg(RawLeg):
    """TLS over a raw non-blocking socket (client or server side)."""

    tls = True

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        super().__init__(sock)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_side=server_side, server_hostname=server_hostname)
        self._eof = False

    async def _flush(self) -> None:
        data = self._out.read()
        if data:
            await RawLeg.send_all(self, data)

    async def _fill(self) -> bool:
        """Read ciphertext from the socket into the BIO; False at EOF."""
        data = await RawLeg.receive(self)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def handshake(self) -> None:
        """Raises ``LegFailed("src", ...)``: this leg's peer, whichever side it is."""
        try:
            await self._handshake()
        except LegFailed as exc:
            raise LegFailed("src", exc.error) from None

    async def _handshake(self) -> None:
        while True:
            try:
                self.ssl.do_handshake()
                await self._flush()
                return
            except ssl.SSLWantReadError:
                await self._flush()
                if not await self._fill():
                    raise LegFailed("src", ConnectionResetError("EOF during the TLS handshake")) from None
            except ssl.SSLError as exc:
                await self._flush_quietly()
                raise LegFailed("src", exc) from None

    async def _flush_for_reader(self) -> None:
        if self._out.pending:
            try:
                await self._flush()
            except LegFailed as exc:
                raise LegFailed("src", exc.error) from None  # this leg's peer is the reader's source

    async def _flush_quietly(self) -> None:
        try:
            await self._flush()  # the alert, if any
        except LegFailed:
            pass

    async def receive(self) -> bytes:
        while True:
            try:
                data = self.ssl.read(READ_BYTES)
            except ssl.SSLWantReadError:
                # What OpenSSL wrote while reading (an alert refusing a renegotiation,
                # a TLS 1.3 key update's answer) goes out before we wait: the peer
                # may be waiting for it.
                await self._flush_for_reader()
                if self._eof or not await self._fill():
                    self._eof = True
                    return b""  # closed without close_notify: an EOF, as browsers do
                continue
            except ssl.SSLZeroReturnError:
                return b""  # close_notify
            except ssl.SSLError as exc:
                await self._flush_quietly()  # the fatal alert, if any
                raise LegFailed("src", exc) from None
            if self._out.pending:  # (TLS 1.3 may answer a key update)
                try:
                    await self._flush()
                except LegFailed as exc:
                    raise LegFailed("src", exc.error) from None
            return data

    async def send_all(self, data: bytes | memoryview) -> None:
        try:
            self.ssl.write(bytes(data))
        except ssl.SSLError as exc:
            raise LegFailed("dst", exc) from None
        await self._flush()

    async def send_eof(self) -> None:
        try:
            self.ssl.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass  # our close_notify is written; the peer's is read by receive
        try:
            await self._flush()
        except LegFailed:
            pass
        await RawLeg.send_eof(self)

    @property
    def facts(self) -> dict[str, str | None]:
        """What /api/connections shows of the session (never key material)."""
        cipher = self.ssl.cipher()
        return {"version": self.ssl.version(), "cipher": cipher[0] if cipher else None,
                "alpn": self.ssl.selected_alpn_protocol()}


async def pump_legs(src: RawLeg, dst: RawLeg, flow: Flow, *, observe: ChunkObserver | None = None,
                    gate: RequestGate | None = None, reply_to: RawLeg | None = None) -> None:
    """Forward ``src`` -> ``dst`` until EOF on ``src``, then half-close ``dst``.

    With ``gate`` (the client's direction of a gated route), bytes go through
    it: forwarded, answered on ``reply_to`` (the client), or the connection
    closed (``GateClosed``).  ``observe`` sees what was forwarded, after the
    send.  Raises ``LegFailed`` naming the side that failed.
    """
    streak = 0
    while True:
        data = await src.receive()
        if not data:
            break
        flow.bytes += len(data)
        if gate is None:
            await dst.send_all(data)
            if observe is not None and observe.feed(memoryview(data)) is False:
                observe = None
        else:
            for action in gate.feed(data):
                if isinstance(action, Forward):
                    await dst.send_all(action.data)
                    if observe is not None and observe.feed(memoryview(action.data)) is False:
                        observe = None
                elif isinstance(action, Reply):
                    assert reply_to is not None
                    try:
                        await reply_to.send_all(action.data)
                    except LegFailed as exc:
                        raise LegFailed("src", exc.error) from None  # the client is the source here
                    if action.close:
                        raise GateClosed(action.reason, replied=True)
                else:
                    assert isinstance(action, Close)
                    raise GateClosed(action.reason, replied=False)
            if gate.tunnel:
                gate = None  # an upgrade or CONNECT passed: plain forwarding from here
        streak += 1
        if streak >= CHECKPOINT_EVERY:
            streak = 0
            await trio.lowlevel.checkpoint()
    if observe is not None:
        observe.feed(memoryview(b""))
    flow.eof = True
    await dst.send_eof()


class GateClosed(RemoteError):
    """The gate ended the connection (``reason``; ``replied``: a 4xx was sent):
    the client's fault (no token, a bad one, malformed HTTP)."""

    def __init__(self, reason: str, *, replied: bool) -> None:
        self.reason = reason
        self.replied = replied
        super().__init__(reason)
