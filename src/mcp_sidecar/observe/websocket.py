"""An incremental RFC 6455 frame-header scanner (sans-io, one per direction).

Rules this module keeps:

* Bytes in (any chunking), ``Frame`` events out; the events never depend on
  how the bytes were split.
* Only headers are buffered (at most 14 bytes).  Payloads are skipped by
  counting, except for frames the caller wants to read: control frames
  (close code and reason, ping/pong payloads for RTT matching, at most 125
  bytes) and text frames up to ``max_text`` bytes (MCP JSON-RPC).  Those are
  unmasked here; larger payloads are never copied.
* Fragmented messages: a text message split over continuation frames is
  reassembled while it stays under ``max_text``; beyond that it is counted
  but not inspected.  With permessage-deflate (RSV1 set) frames are counted
  and their content is not inspected.
* A protocol violation raises ``WebSocketError``: the observer gives up, the
  bytes keep flowing (fail open).
"""

from __future__ import annotations

from ..errors import ObserverError
from .budget import UNBOUNDED, Allowance
from .events import Frame, FrameHeader

OPCODES = {0x0: "continuation", 0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}
MAX_TEXT_BYTES = 256 * 1024


class WebSocketError(ObserverError):
    """The bytes break RFC 6455 (a reserved opcode, an oversized or fragmented
    control frame, a top-bit length): the observer gives up on this
    connection; the bytes keep flowing."""


def unmask(data: bytes, key: bytes) -> bytes:
    """RFC 6455 masking (its own inverse): ``data`` XOR the 4-byte ``key`` repeated."""
    if not data or not key:
        return data
    n = len(data)
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")


def _header_size(b1: int) -> int:
    """The whole header's size, from its second byte."""
    return 2 + _EXTENDED[b1 & 0x7F] + (4 if b1 & 0x80 else 0)


_EXTENDED = [0] * 126 + [2, 8]


class FrameScanner:
    """The frames of one direction of a WebSocket, read from its bytes.

    Owns the partial header, the payload being read (control frames, small
    text frames) and the text message being reassembled; what it holds
    between chunks is charged to ``memory`` after every chunk.
    """

    def __init__(self, max_text: int = MAX_TEXT_BYTES, memory: Allowance | None = None) -> None:
        self.max_text = max_text
        self.memory = memory or UNBOUNDED.allowance()
        self._header = bytearray()
        self._frame: FrameHeader | None = None
        self._remaining = 0
        self._key = b""
        self._keep: bytearray | None = None  # payload being collected (masked)
        self._wanted = False  # the current frame's payload is to be read
        self._message: bytearray | None = None  # text message being reassembled
        self._message_ok = False
        self._in_message = False
        #: Bytes consumed so far (stream offset of the next byte).
        self.position = 0
        self._frame_start = 0

    @property
    def at_boundary(self) -> bool:
        """True between frames: a frame may be inserted here."""
        return self._frame is None and not self._header

    @property
    def frame_start(self) -> int:
        """Stream offset where the frame being read (or its header) starts."""
        return self._frame_start

    @property
    def current(self) -> FrameHeader | None:
        """The frame whose header is read and whose payload is still arriving."""
        return self._frame

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        view = memoryview(data)
        n = len(view)
        pos = 0
        base = self.position
        max_text = self.max_text
        while pos < n:
            if self._frame is None and not self._header and not self._in_message and n - pos >= 2:
                # Fast path, the usual frame: whole in this chunk, FIN, no RSV
                # bit, text or binary, outside a fragmented message.
                b0 = view[pos]
                opcode = b0 & 0x0F
                if b0 & 0xF0 == 0x80 and (opcode == 0x1 or opcode == 0x2):
                    b1 = view[pos + 1]
                    length = b1 & 0x7F
                    size = 2
                    if length == 126 and n - pos >= 4:
                        length = (view[pos + 2] << 8) | view[pos + 3]
                        size = 4
                    if length < 126 or size == 4:
                        masked = b1 & 0x80
                        if masked:
                            size += 4
                        end = pos + size + length
                        if end <= n:
                            payload = None
                            if opcode == 0x1 and length <= max_text:
                                raw = bytes(view[pos + size : end])
                                payload = unmask(raw, bytes(view[pos + size - 4 : pos + size])) if masked else raw
                            out.append(
                                Frame(
                                    "text" if opcode == 0x1 else "binary",
                                    True,
                                    length,
                                    bool(masked),
                                    False,
                                    payload,
                                    None,
                                    None,
                                    base + pos,
                                    base + end,
                                )
                            )
                            self._message = None
                            pos = end
                            continue
            pos = self._step(view, pos, n, base, out)
        self.position = base + n
        if self._message is not None or self._keep is not None or self.memory.held:
            self.memory.hold(len(self._message or b"") + len(self._keep or b""))
        return out

    def _step(self, view: memoryview, pos: int, n: int, base: int, out: list[Frame]) -> int:
        """Read from ``pos`` through the general path: a header split across
        chunks, a payload arriving in pieces, control frames, fragments."""
        if self._frame is not None:  # a payload arriving in pieces
            take = min(self._remaining, n - pos)
            if self._wanted:
                assert self._keep is not None  # (a wanted payload has its buffer)
                self._keep += view[pos : pos + take]
            self._remaining -= take
            pos += take
            if self._remaining == 0:
                self._finish(out, self._keep)
            return pos
        if not self._header:
            self._frame_start = base + pos
            if n - pos >= 2 and n - pos >= _header_size(view[pos + 1]):
                # A whole header here (usual); maybe the whole frame.
                size = _header_size(view[pos + 1])
                self._start(view[pos : pos + size], size)
                pos += size
                length = self._remaining
                if n - pos >= length:
                    payload = view[pos : pos + length] if self._wanted else None
                    pos += length
                    self._remaining = 0
                    self._finish(out, payload)
                elif self._wanted:
                    self._keep = bytearray()
                return pos
        # A header split across chunks: gather exactly its bytes.
        header = self._header
        need = 2 if len(header) < 2 else _header_size(header[1])
        take = min(need - len(header), n - pos)
        header += view[pos : pos + take]
        pos += take
        if len(header) == need and (need > 2 or _header_size(header[1]) == 2):
            self._start(header, need)
            header.clear()
            if self._wanted:
                self._keep = bytearray()
            if self._remaining == 0:
                self._finish(out, self._keep)
        return pos

    def close(self) -> None:
        """Drop what is held and give the budget back."""
        self._message = self._keep = None
        self.memory.release()

    def _start(self, header: memoryview | bytearray, size: int) -> None:
        """Interpret a complete header: the frame, its length, whether to read it."""
        b0, b1 = header[0], header[1]
        opcode = b0 & 0x0F
        name = OPCODES.get(opcode)
        if name is None:
            raise WebSocketError(f"reserved opcode {opcode:#x}")
        length = b1 & 0x7F
        pos = 2
        if length == 126:
            length = int.from_bytes(header[2:4], "big")
            pos = 4
        elif length == 127:
            length = int.from_bytes(header[2:10], "big")
            if length >> 63:
                raise WebSocketError("payload length with the top bit set")
            pos = 10
        masked = bool(b1 & 0x80)
        self._key = bytes(header[pos : pos + 4]) if masked else b""
        fin = bool(b0 & 0x80)
        compressed = bool(b0 & 0x40)
        if opcode >= 0x8 and (length > 125 or not fin):
            raise WebSocketError(f"invalid {name} frame")
        self._frame = FrameHeader(
            name, fin, length, masked, compressed, self._frame_start, self._frame_start + size + length
        )
        self._remaining = length
        self._keep = None
        # Decide whether this payload is worth reading.
        self._wanted = False
        if opcode >= 0x8:
            self._wanted = True
        elif opcode == 0x1 or (opcode == 0x0 and self._in_message):
            if opcode == 0x1:
                self._message = bytearray()
                self._message_ok = not compressed
                self._in_message = not fin
            if self._message_ok and self._message is not None and len(self._message) + length <= self.max_text:
                self._wanted = True
            else:
                self._message_ok = False
        elif opcode == 0x2:
            self._message = None
            self._in_message = not fin

    def _finish(self, out: list[Frame], kept: memoryview | bytearray | None) -> None:
        header = self._frame
        assert header is not None
        payload = unmask(bytes(kept), self._key) if kept is not None else None
        opcode = header.opcode
        shown = None
        close_code = close_reason = None
        if opcode == "text" and header.fin and payload is not None:  # the usual MCP message: one frame
            shown = payload
            self._message = None
            self._in_message = False
        elif opcode in ("close", "ping", "pong"):
            shown = payload
            if opcode == "close" and payload:
                if len(payload) < 2:
                    raise WebSocketError("close frame with a one-byte payload")
                close_code = int.from_bytes(payload[:2], "big")
                close_reason = payload[2:].decode("utf-8", "replace")
        elif opcode in ("text", "continuation") and self._message is not None:
            if payload is not None and self._message_ok:
                self._message += payload
            if header.fin:
                if self._message_ok:
                    shown = bytes(self._message)
                self._message = None
                self._in_message = False
        elif opcode == "binary" and header.fin:
            self._in_message = False
        out.append(
            Frame(
                opcode,
                header.fin,
                header.length,
                header.masked,
                header.compressed,
                shown,
                close_code,
                close_reason,
                header.start,
                header.end,
            )
        )
        self._frame = None
        self._keep = None
