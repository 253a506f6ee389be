"""Server-sent events, sans-io: bytes in, events out.

Follows the WHATWG event-stream rules: lines end in CR, LF or CRLF (a CR at
the end of a chunk may be the first half of a CRLF); ``data`` lines join
with ``\\n``; a blank line dispatches; ``:`` starts a comment (keep-alive);
the default event type is ``message``.  Buffers are bounded: a line longer
than ``max_line`` raises ``SseError`` (the caller gives up on the stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ObserverError

MAX_LINE_BYTES = 1024 * 1024


class SseError(ObserverError):
    """A line longer than the bound: the stream is not inspected further."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    """A dispatched event: its type, data lines joined, id and retry."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line (``: ...``), the usual keep-alive."""

    text: str


@dataclass
class SseParser:
    """One event stream's parser: the incomplete line and the event being
    assembled (its data lines, type, id, retry)."""

    max_line: int = MAX_LINE_BYTES
    _buffer: bytearray = field(default_factory=bytearray)
    _pending_cr: bool = False
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _retry: int | None = None
    #: Bytes of the event being assembled (its data lines so far).
    _data_bytes: int = 0
    #: Between events: the last line was blank (or the stream just began);
    #: comments keep it so.
    _between: bool = True
    #: The stream ends its lines with CRLF (as far as seen).
    _crlf: bool = False

    @property
    def at_boundary(self) -> bool:
        """Between two events, at the start of a line: a comment line may go here."""
        return self._between and not self._buffer and not self._pending_cr

    def comment_line(self, text: bytes = b"keepalive") -> bytes:
        """A comment line in the stream's own line endings."""
        return b": " + text + (b"\r\n" if self._crlf else b"\n")

    @property
    def buffered(self) -> int:
        """Bytes held: the incomplete line and the event's data lines."""
        return len(self._buffer) + self._data_bytes

    def feed(self, chunk: bytes) -> list[SseEvent | Comment]:
        out: list[SseEvent | Comment] = []
        start = 0
        if self._pending_cr and chunk[:1] == b"\n":
            start = 1  # the LF of a CRLF split across chunks
            self._crlf = True
        self._pending_cr = False
        i = start
        n = len(chunk)
        while i < n:
            c = chunk[i]
            if c == 0x0A or c == 0x0D:
                self._buffer += chunk[start:i]
                self._line(bytes(self._buffer), out)
                self._buffer.clear()
                if c == 0x0D:
                    if i + 1 < n:
                        if chunk[i + 1] == 0x0A:
                            i += 1
                            self._crlf = True
                    else:
                        self._pending_cr = True
                start = i + 1
            i += 1
        self._buffer += chunk[start:]
        if len(self._buffer) > self.max_line:
            raise SseError(f"line longer than {self.max_line} bytes")
        return out

    def _line(self, raw: bytes, out: list[SseEvent | Comment]) -> None:
        line = raw.decode("utf-8", "replace")
        if not line:
            self._between = True
            if self._data:
                out.append(SseEvent(self._event or "message", "\n".join(self._data), self._id, self._retry))
            self._data, self._event, self._retry = [], "", None
            self._data_bytes = 0
            return
        if line.startswith(":"):
            out.append(Comment(line[1:].lstrip(" ")))
            return
        self._between = False
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_bytes += len(raw)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
