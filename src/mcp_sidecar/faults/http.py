"""HTTP/1.1 framing for the MCP faults (sans-io): where each request and
each response starts and ends, and what a response's body says, so that
a fault can answer a request in the server's place or hold, drop, cut or
thin out its response.

Rules this module keeps:

* Lenient and safe: anything this framer does not understand (a head over
  ``MAX_HEAD_BYTES``, a chunked request body, an upgrade, a malformed
  line) turns it into a tunnel for the rest of the connection: bytes go
  through unchanged, no fault applies any more.  Faults are for test
  benches; framing errors are the peers' to see, not ours to hide.
* Bounded: a head is held until complete (at most ``MAX_HEAD_BYTES``), a
  request body until complete (at most ``MAX_BODY_BYTES``; a larger one is
  forwarded as it comes, uninspected), an event-stream body at most one
  event (``MAX_EVENT_BYTES``) while it is cut or thinned.
"""

from __future__ import annotations

import re

from ..observe.sse import Comment, SseEvent, SseParser

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_EVENT_BYTES = 1024 * 1024

_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")


_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)[ \t]*\r\n", re.I)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.I)
_UPGRADE = re.compile(rb"\r\nupgrade:", re.I)
_EVENT_STREAM = re.compile(rb"\r\ncontent-type:[ \t]*text/event-stream", re.I)


class Head:
    """A request or response head: its raw bytes (forwarded as they are) and
    what framing needs, read from them with a few searches (no header table:
    this runs for every request of a route with MCP faults)."""

    __slots__ = ("method", "raw", "status", "target")

    def __init__(self, raw: bytes, method: str, target: str, status: int) -> None:
        self.raw = raw
        #: Request: method and target; response: status.
        self.method = method
        self.target = target
        self.status = status

    @property
    def chunked(self) -> bool:
        return _CHUNKED.search(self.raw) is not None

    @property
    def length(self) -> int | None:
        match = _LENGTH.search(self.raw)
        return int(match.group(1)) if match is not None else None

    @property
    def upgrade(self) -> bool:
        return _UPGRADE.search(self.raw) is not None

    @property
    def event_stream(self) -> bool:
        return _EVENT_STREAM.search(self.raw) is not None


def split_head(buffer: bytearray, *, response: bool) -> Head | None:
    """Take one complete head off ``buffer`` (None: not complete yet).
    Raises ValueError when it cannot be a head (the caller tunnels)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise ValueError("head too large")
        return None
    raw = bytes(buffer[: end + 4])
    del buffer[: end + 4]
    line_end = raw.find(b"\r\n")
    first = raw[:line_end].split(b" ", 2)
    if response:
        if len(first) < 2 or not first[0].startswith(b"HTTP/1.") or not first[1].isdigit():
            raise ValueError("status line")
        return Head(raw, "", "", int(first[1]))
    if len(first) != 3 or not first[2].startswith(b"HTTP/1."):
        raise ValueError("request line")
    return Head(raw, first[0].decode("latin-1"), first[1].decode("latin-1"), 0)


class ChunkDecoder:
    """A chunked body's payload, as it comes: ``feed`` returns the payload
    decoded and the bytes past the body's end (the next message's)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._left = 0  # payload bytes left in the current chunk
        self._crlf = False  # the CRLF after a chunk's payload is due
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        self._buffer += data
        out = bytearray()
        buffer = self._buffer
        while not self.done:
            if self._left:
                take = min(self._left, len(buffer))
                if not take:
                    break
                out += buffer[:take]
                del buffer[:take]
                self._left -= take
                self._crlf = not self._left
            elif self._crlf:
                if len(buffer) < 2:
                    break
                del buffer[:2]
                self._crlf = False
            else:
                line_end = buffer.find(b"\r\n")
                if line_end < 0:
                    if len(buffer) > 4096:
                        raise ValueError("chunk size line")
                    break
                size = int(bytes(buffer[:line_end]).split(b";", 1)[0].strip(), 16)  # ValueError: not chunked
                if size:
                    del buffer[: line_end + 2]
                    self._left = size
                    continue
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    break
                del buffer[: trailer_end + 4]
                self.done = True
        rest = b""
        if self.done:
            rest = bytes(buffer)
            buffer.clear()
        return bytes(out), rest


def chunk(payload: bytes) -> bytes:
    """One chunk of a chunked body (nothing for no payload)."""
    return b"%x\r\n%s\r\n" % (len(payload), payload) if payload else b""


LAST_CHUNK = b"0\r\n\r\n"


class EventSplitter:
    """An event stream's payload, cut into whole events (each with its blank line)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, payload: bytes) -> list[bytes]:
        self._buffer += payload
        events = []
        pos = 0
        while (match := _EVENT_END.search(self._buffer, pos)) is not None:
            events.append(bytes(self._buffer[: match.end()]) if not pos else bytes(self._buffer[pos : match.end()]))
            pos = match.end()
        del self._buffer[:pos]
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise ValueError("event too large")
        return events

    def rest(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


def read_event(event: bytes) -> tuple[SseEvent | None, bool]:
    """One whole event (as EventSplitter cuts them), read by the observers' own
    parser: the event it dispatches (None: none), and whether it is comment
    lines only (a keepalive: ``: ping``)."""
    items = SseParser().feed(event)
    dispatched = next((item for item in items if isinstance(item, SseEvent)), None)
    return dispatched, dispatched is None and any(isinstance(item, Comment) for item in items)


def is_comment_only(event: bytes) -> bool:
    """An event of comment lines only (a keepalive)."""
    return read_event(event)[1]


def json_response(status: int, reason: str, body: bytes, extra: tuple[str, ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += list(extra)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
