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

from dataclasses import dataclass

OPCODES = {0x0: "continuation", 0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}
MAX_TEXT_BYTES = 256 * 1024


class WebSocketError(ValueError):
    pass


@dataclass
class Frame:
    opcode: str
    fin: bool
    length: int
    masked: bool
    compressed: bool
    #: The unmasked payload for control frames; for a complete text message
    #: (fin, small enough, uncompressed) the whole message's text.
    payload: bytes | None = None
    close_code: int | None = None
    close_reason: str | None = None
    #: Stream offsets: where the frame's header starts and its payload ends.
    start: int = 0
    end: int = 0


def _unmask(data: bytes, key: bytes) -> bytes:
    if not data:
        return data
    n = len(data)
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")


class FrameScanner:
    def __init__(self, max_text: int = MAX_TEXT_BYTES) -> None:
        self.max_text = max_text
        self._header = bytearray()
        self._frame: Frame | None = None
        self._remaining = 0
        self._key = b""
        self._keep: bytearray | None = None  # payload being collected (masked)
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
    def current(self) -> Frame | None:
        """The frame whose header is read and whose payload is still arriving."""
        return self._frame

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        view = memoryview(data)
        while view:
            if self._frame is None:
                if not self._header:
                    self._frame_start = self.position
                before = len(view)
                view = self._read_header(view)
                self.position += before - len(view)
                if self._frame is not None and self._remaining == 0:
                    self._finish(out)
                continue
            take = min(self._remaining, len(view))
            if self._keep is not None:
                self._keep += view[:take]
            self._remaining -= take
            self.position += take
            view = view[take:]
            if self._remaining == 0:
                self._finish(out)
        return out

    def _read_header(self, view: memoryview) -> memoryview:
        header = self._header
        # Fill only as many bytes as the header needs (2, then the full size).
        need = 2
        while True:
            if len(header) < need:
                take = min(need - len(header), len(view))
                header += view[:take]
                view = view[take:]
                if len(header) < need:
                    return view
            b0, b1 = header[0], header[1]
            size = 2 + {126: 2, 127: 8}.get(b1 & 0x7F, 0) + (4 if b1 & 0x80 else 0)
            if len(header) >= size:
                break
            need = size
        opcode = b0 & 0x0F
        if opcode not in OPCODES:
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
        name = OPCODES[opcode]
        if opcode >= 0x8 and (length > 125 or not fin):
            raise WebSocketError(f"invalid {name} frame")
        self._frame = Frame(name, fin, length, masked, compressed, start=self._frame_start,
                            end=self._frame_start + size + length)
        self._remaining = length
        header.clear()
        # Decide whether this payload is worth keeping.
        self._keep = None
        if opcode >= 0x8:
            self._keep = bytearray()
        elif opcode == 0x1 or (opcode == 0x0 and self._in_message):
            if opcode == 0x1:
                self._message = bytearray()
                self._message_ok = not compressed
                self._in_message = not fin
            if self._message_ok and self._message is not None and len(self._message) + length <= self.max_text:
                self._keep = bytearray()
            else:
                self._message_ok = False
        elif opcode == 0x2:
            self._message = None
            self._in_message = not fin
        return view

    def _finish(self, out: list[Frame]) -> None:
        frame = self._frame
        assert frame is not None
        payload = _unmask(bytes(self._keep), self._key) if self._keep is not None else None
        if frame.opcode in ("close", "ping", "pong"):
            frame.payload = payload
            if frame.opcode == "close" and payload:
                if len(payload) < 2:
                    raise WebSocketError("close frame with a one-byte payload")
                frame.close_code = int.from_bytes(payload[:2], "big")
                frame.close_reason = payload[2:].decode("utf-8", "replace")
        elif frame.opcode in ("text", "continuation") and self._message is not None:
            if payload is not None and self._message_ok:
                self._message += payload
            if frame.fin:
                if self._message_ok:
                    frame.payload = bytes(self._message)
                self._message = None
                self._in_message = False
        elif frame.opcode == "binary" and frame.fin:
            self._in_message = False
        out.append(frame)
        self._frame = None
        self._keep = None
