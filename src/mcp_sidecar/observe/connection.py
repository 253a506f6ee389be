"""One connection, observed (sans-io): bytes of each direction and a time in,
events out -- and, while the WebSocket keepalive needs it, the bytes to forward.

The protocol machine of a forwarded connection lives here, once: sniffing
(``protocol = "auto"``), HTTP/1.1 (``http.HttpObserver``), WebSocket frames
(``websocket.FrameScanner``), tunnels, the keepalive's ping frames and the
pongs that answer them, and the MCP transport each JSON-RPC message travelled
by.  What the events mean (metrics, quality, the tap, the request log, the CPU
budget) is the caller's business (``forward/observation.py``).

Rules this module keeps:

* ``client(data, now)`` / ``upstream(data, now)`` take a chunk of one
  direction (a view the caller reuses: what is kept is copied) and return
  the events it completed, in order.  The events never depend on how the
  bytes were split.  A request's bytes are fed before its response's.
* Modes move one way: ``SNIFF`` -> ``HTTP`` or ``TCP``; ``HTTP`` ->
  ``WEBSOCKET`` (a 101 to a WebSocket upgrade) or ``TCP`` (any other
  protocol switch); any -> ``FAILED``, ``SHED`` or ``CLOSED`` through
  ``stop``.  Only ``SNIFF``, ``HTTP`` and ``WEBSOCKET`` look at bytes.
* One request-line sniffer (``sniff_request``): the first client bytes of
  an ``auto`` connection, and the connect path's "did the client leave"
  test, use it.  A server that speaks first is not HTTP.
* It raises only what a peer's bytes can cause (``PEER_FAULTS``) and
  ``InspectionMemoryExhausted``; the caller decides what that means (fail
  open: the bytes keep flowing, ``release`` gives back what was held).

Byte rewriting (the WebSocket keepalive; ``keepalive = True``, after a 101):

1. Bytes are never altered, reordered or held back, except as 2-4 say.
2. A ping of ours (``keepalive_ping``) goes towards a side only at a frame
   boundary of the stream towards it, and only when the caller has no chunk
   partly delivered there; at most one is outstanding per side, none after a
   close frame.  Towards the client it is unmasked (we speak as the server),
   towards the upstream masked with a fresh key (we speak as the client).
3. The pong that answers our ping (its payload is our ping's) is removed
   from the stream; no other byte is.
4. While a ping of ours is outstanding, the header of a pong that may be
   ours (its length is our payload's) is held until its payload shows whose
   it is: at most 14 + 32 bytes per side.  Held bytes go out, in order, with
   the next chunk that decides, at EOF (``rewrite`` of an empty chunk), or
   when observation stops (``release``).
5. Whatever is not rewritten is forwarded as it came: ``rewriting`` says
   when a chunk must pass through ``rewrite`` before it is sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from .budget import UNBOUNDED, InspectionMemoryExhausted, MemoryBudget
from .events import (
    ConnectionEvent,
    Frame,
    FramesCounted,
    HttpDetected,
    JsonRpcSeen,
    KeepaliveAnswered,
    NotificationSeen,
    Opaque,
    PingAnswered,
    Upgraded,
    WebSocketClosing,
    WebSocketOpened,
)
from .http import HttpObserver
from .jsonrpc import decode
from .websocket import FrameScanner, unmask

__all__ = [
    "KEEPALIVE_PAYLOAD_LEN",
    "PEER_FAULTS",
    "ConnectionObserver",
    "InspectionMemoryExhausted",
    "Mode",
    "Sniff",
    "sniff_request",
    "transport_label",
]

#: What a peer's bytes can make an observer raise: its own protocol errors,
#: malformed values (JSON, UTF-8) and JSON nested past the recursion limit.
#: Anything else is a bug of ours.
PEER_FAULTS = (ValueError, UnicodeDecodeError, RecursionError)

#: The proxy's keepalive pings carry 32 bytes: "mcp-sidecar:" + 20 random hex.
KEEPALIVE_PAYLOAD_LEN = 32
_KEEPALIVE_PREFIX = b"mcp-sidecar:"
#: Pings of the peers remembered per side for their RTT, awaiting a pong.
MAX_OUTSTANDING_PINGS = 16


class Mode(StrEnum):
    """What observation does with a connection now."""

    SNIFF = "sniff"  # protocol "auto": waiting for the client's first bytes
    HTTP = "http"
    WEBSOCKET = "websocket"  # after a 101
    TCP = "tcp"  # opaque, by choice or because the bytes are not HTTP
    FAILED = "failed"  # gave up: the peer's bytes broke a parser, the inspection memory ran out, a bug of ours
    SHED = "shed"  # over the CPU budget
    CLOSED = "closed"  # the connection ended


#: Modes tested by identity on the hot path (``in`` on enum members hashes in Python).
_HTTP, _WEBSOCKET, _SNIFF = Mode.HTTP, Mode.WEBSOCKET, Mode.SNIFF


# --- the one request-line sniffer -----------------------------------------------------------


class Sniff(StrEnum):
    """What the first bytes of a client say."""

    HTTP = "http"  # an HTTP/1.x request line starts here
    MAYBE = "maybe"  # a prefix of one: more bytes decide
    NOT_HTTP = "not_http"


_METHODS = (b"GET ", b"POST ", b"PUT ", b"PATCH ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"CONNECT ", b"TRACE ")
_REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS|CONNECT|TRACE) ")
#: Bytes that decide: the longest method and its space.
SNIFF_BYTES = 8


def sniff_request(head: bytes) -> Sniff:
    """Whether ``head`` (the first bytes a client sent) begins an HTTP/1.x request line."""
    if _REQUEST_LINE.match(head):
        return Sniff.HTTP
    head = head[:SNIFF_BYTES]
    if len(head) < SNIFF_BYTES and any(method.startswith(head) for method in _METHODS):
        return Sniff.MAYBE
    return Sniff.NOT_HTTP


# --- the MCP transport a message travelled by --------------------------------------------------

#: How a message travelled (``JsonRpcSeen.transport``) -> the bounded label of the metrics:
#: ``http`` (streamable HTTP: a JSON body or its event stream), ``legacy-sse`` (the 2024-11-05
#: HTTP+SSE transport), ``websocket``, ``inspector-v2`` (inside Inspector v2's API envelope).
_TRANSPORT_LABELS = {
    "http": "http",
    "sse": "http",
    "legacy": "legacy-sse",
    "ws": "websocket",
    "inspector-v2": "inspector-v2",
}


def transport_label(transport: str) -> str:
    return _TRANSPORT_LABELS[transport]


_NO_EVENTS: tuple[ConnectionEvent, ...] = ()


class ConnectionObserver:
    """The protocol machine of one forwarded connection (see the module's rules).

    Owns the HTTP observer (from the first request line), the two frame
    scanners (from a 101), the keepalive's outstanding pings and the bytes
    it holds back, and the peers' pings awaiting their pongs.
    """

    __slots__ = ("_held", "_keepalive", "_ours", "_pings", "_sniffed", "closing", "http", "memory", "mode", "ws")

    def __init__(self, protocol: str, memory: MemoryBudget = UNBOUNDED, *, keepalive: bool = False) -> None:
        #: "auto" sniffs, "http" observes from the first byte, "tcp" never looks.
        self.mode = Mode.SNIFF if protocol == "auto" else Mode(protocol)
        self.memory = memory
        self.http: HttpObserver | None = HttpObserver(memory.allowance()) if self.mode is Mode.HTTP else None
        #: The frame scanners, by the side whose bytes they read (after a 101).
        self.ws: dict[str, FrameScanner] | None = None
        #: A close frame passed: no more keepalive pings (RFC 6455 5.5.1).
        self.closing = False
        self._sniffed = b""
        self._keepalive = keepalive
        #: Our ping outstanding towards each side: (payload, sent at).
        self._ours: dict[str, tuple[bytes, float] | None] = {"client": None, "upstream": None}
        #: Bytes withheld per source side (a pong header that may be ours).
        self._held: dict[str, bytearray] = {"client": bytearray(), "upstream": bytearray()}
        #: The peers' pings by payload, per sending side: when they were seen.
        self._pings: dict[str, dict[bytes, float]] | None = None

    @property
    def observing(self) -> bool:
        mode = self.mode
        return mode is _HTTP or mode is _WEBSOCKET or mode is _SNIFF

    @property
    def rewriting(self) -> bool:
        """True while a chunk must go through ``rewrite`` before it is sent
        (a ping of ours is outstanding, or bytes are held back)."""
        if self.mode is not _WEBSOCKET:
            return False
        ours, held = self._ours, self._held
        return ours["client"] is not None or ours["upstream"] is not None or bool(held["client"] or held["upstream"])

    def outstanding(self, side: str) -> tuple[bytes, float] | None:
        """Our keepalive ping towards ``side`` that is not answered yet: (payload, sent at)."""
        return self._ours[side]

    # -- bytes in ------------------------------------------------------------------------------

    def client(self, data: Any, now: float) -> Sequence[ConnectionEvent]:
        """The client's chunk (already forwarded as it is)."""
        mode = self.mode
        if mode is _HTTP:
            http = self.http
            assert http is not None
            return http.feed_client(data, now) or _NO_EVENTS
        if mode is _WEBSOCKET:
            return self._frames("client", data, now, None)
        if mode is _SNIFF:
            return self._sniff(data, now)
        return _NO_EVENTS

    def upstream(self, data: Any, now: float) -> Sequence[ConnectionEvent]:
        """The upstream's chunk (already forwarded as it is)."""
        mode = self.mode
        if mode is _HTTP:
            http = self.http
            assert http is not None
            events = http.feed_upstream(data, now)
            if http.upgraded:  # a 101 (or a CONNECT's 2xx) was in this chunk
                return self._after_upgrade(events, now)
            return events or _NO_EVENTS
        if mode is _WEBSOCKET:
            return self._frames("upstream", data, now, None)
        if mode is _SNIFF:  # a server that speaks first is not HTTP
            self.mode = Mode.TCP
            self._sniffed = b""
            return (Opaque(),)
        return _NO_EVENTS

    def feed(self, side: str, data: Any, now: float) -> Sequence[ConnectionEvent]:
        return self.client(data, now) if side == "client" else self.upstream(data, now)

    def _sniff(self, data: Any, now: float) -> Sequence[ConnectionEvent]:
        self._sniffed += bytes(data)
        verdict = sniff_request(self._sniffed)
        if verdict is Sniff.MAYBE:
            return _NO_EVENTS
        buffered, self._sniffed = self._sniffed, b""
        if verdict is Sniff.NOT_HTTP:
            self.mode = Mode.TCP
            return (Opaque(),)
        self.mode = Mode.HTTP
        self.http = HttpObserver(self.memory.allowance())
        return [HttpDetected(), *self.http.feed_client(buffered, now)]

    def _after_upgrade(self, events: Sequence[ConnectionEvent], now: float) -> list[ConnectionEvent]:
        """The HTTP observer handed over: WebSocket frames, or an opaque tunnel."""
        out: list[ConnectionEvent] = []
        for event in events:
            if type(event) is not Upgraded:
                out.append(event)
                continue
            assert isinstance(event, Upgraded)
            if not event.websocket:  # a tunnel of another protocol: opaque from here on
                self.mode = Mode.TCP
                self.http = None
                out.append(Opaque())
                continue
            self.mode = Mode.WEBSOCKET
            self._pings = {"client": {}, "upstream": {}}
            self.ws = {
                "client": FrameScanner(memory=self.memory.allowance()),
                "upstream": FrameScanner(memory=self.memory.allowance()),
            }
            out.append(WebSocketOpened())
            if event.client_trailing:
                out += self._frames("client", event.client_trailing, now, None)
            if event.upstream_trailing:
                out += self._frames("upstream", event.upstream_trailing, now, None)
        return out

    # -- WebSocket frames ----------------------------------------------------------------------

    def _frames(self, side: str, data: Any, now: float, drops: list[tuple[int, int]] | None) -> list[ConnectionEvent]:
        """Scan and match the frames of ``side``'s bytes; with ``drops``, note
        the stream ranges of pongs answering our keepalive (never forwarded)."""
        ws = self.ws
        assert ws is not None
        out: list[ConnectionEvent] = []
        # Counted per chunk, not per frame: a chunk often holds dozens of frames.
        counts: dict[str, list[int]] = {}
        for frame in ws[side].feed(data):
            opcode = frame.opcode
            count = counts.get(opcode)
            if count is None:
                count = counts[opcode] = [0, 0]
            if opcode == "text" or opcode == "continuation":
                count[0] += 1
                count[1] += frame.length
                payload = frame.payload
                if payload and (payload[:1] == b"{" or payload[:1] == b"["):
                    self._message(side, payload, now, out)
            elif opcode == "binary":
                count[0] += 1
                count[1] += frame.length
            elif self._control(side, frame, now, out) and drops is not None:
                drops.append((frame.start, frame.end))
            else:
                count[0] += 1
                count[1] += frame.length
        if counts:
            out.append(FramesCounted(side, counts))
        return out

    def _message(self, side: str, payload: bytes, now: float, out: list[ConnectionEvent]) -> None:
        """A complete text message that looks like JSON: MCP over WebSocket."""
        if payload[:1] == b"{" and b'"id"' not in payload:
            # A notification: nothing to correlate, so it is not decoded here
            # (the caller decodes it only if somebody taps).
            out.append(NotificationSeen(side, payload, b'"notifications/progress"' in payload))
            return
        for message in decode(payload):
            out.append(JsonRpcSeen(side, message, now, None, "ws", len(payload)))

    def _control(self, side: str, frame: Frame, now: float, out: list[ConnectionEvent]) -> bool:
        """Close, ping, pong: True if it is the pong of our own keepalive."""
        opcode = frame.opcode
        payload = frame.payload
        if opcode == "pong":
            ours = self._ours[side]
            if ours is not None and payload == ours[0]:
                self._ours[side] = None
                out.append(KeepaliveAnswered(side, now - ours[1]))
                return True
            if payload is not None and self._pings is not None:
                sent = self._pings["upstream" if side == "client" else "client"].pop(payload, None)
                if sent is not None:
                    out.append(PingAnswered(now - sent))
        elif opcode == "ping":
            if payload is not None and self._pings is not None:
                pings = self._pings[side]
                if len(pings) < MAX_OUTSTANDING_PINGS:
                    pings[payload] = now
        elif opcode == "close" and not self.closing:
            self.closing = True
            out.append(WebSocketClosing(side, frame.close_code, frame.close_reason))
        return False

    # -- the keepalive: our pings in, their pongs out --------------------------------------------

    def keepalive_ping(self, side: str, now: float) -> bytes | None:
        """A ping frame to write towards ``side`` now, or None: the stream
        towards it is not at a frame boundary, a ping is unanswered, a close
        frame passed, or the frames are not known (not a WebSocket)."""
        if (
            not self._keepalive
            or self.mode is not _WEBSOCKET
            or self.ws is None
            or self.closing
            or self._ours[side] is not None
        ):
            return None
        source = "upstream" if side == "client" else "client"  # frames towards side come from there
        if not self.ws[source].at_boundary or self._held[source]:
            return None
        payload = _KEEPALIVE_PREFIX + os.urandom(10).hex().encode()
        self._ours[side] = (payload, now)
        if side == "client":  # we speak as the server: unmasked
            return bytes((0x89, len(payload))) + payload
        key = os.urandom(4)  # we speak as the client: masked
        return bytes((0x89, 0x80 | len(payload))) + key + unmask(payload, key)

    def forget_ping(self, side: str) -> None:
        """The ping ``keepalive_ping`` built could not be written whole: it
        was never sent (the caller tries again later)."""
        self._ours[side] = None

    def rewrite(self, side: str, data: Any, now: float) -> tuple[bytes, list[ConnectionEvent]]:
        """The bytes to forward in place of ``data`` (rules 3 and 4), and the
        events of the chunk.  An empty ``data`` is the EOF: what was held goes."""
        held = self._held[side]
        if not data:
            out = bytes(held)
            held.clear()
            return out, []
        if self.mode is not _WEBSOCKET:
            return self.release(side, data), list(self.feed(side, data, now))
        ws = self.ws
        assert ws is not None
        scanner = ws[side]
        base = scanner.position - len(held)
        combined = bytes(held) + bytes(data)
        drops: list[tuple[int, int]] = []
        events = self._frames(side, data, now, drops)
        hold_from = None
        current = scanner.current
        if self._ours[side] is not None:
            if current is not None and current.opcode == "pong" and current.length == KEEPALIVE_PAYLOAD_LEN:
                hold_from = current.start
            elif current is None and not scanner.at_boundary:
                hold_from = scanner.frame_start  # a header still incomplete: hold its few bytes
        forwarded = bytearray()
        pos = base
        for start, end in drops:
            if start >= pos:
                forwarded += combined[pos - base : start - base]
                pos = end
        stop = hold_from if hold_from is not None and hold_from >= pos else base + len(combined)
        forwarded += combined[pos - base : stop - base]
        held.clear()
        held += combined[stop - base :]
        return bytes(forwarded), events

    def release(self, side: str, data: Any) -> bytes:
        """No more rewriting: what was held for ``side``, then ``data``."""
        held = self._held[side]
        if not held:
            return bytes(data)
        out = bytes(held) + bytes(data)
        held.clear()
        return out

    def holding(self, side: str) -> bool:
        return bool(self._held[side])

    # -- the end ---------------------------------------------------------------------------------

    def stop(self, mode: Mode) -> None:
        """Observation ends (``FAILED``, ``SHED``, ``CLOSED``): every buffer is
        given back; held bytes stay until ``release`` or ``rewrite`` of EOF."""
        self.mode = mode
        if self.http is not None:
            self.http.close()
        for scanner in (self.ws or {}).values():
            scanner.close()
        self._sniffed = b""

    def sse_keepalive(self) -> bytes | None:
        """Bytes to send the client now to keep a silent event stream alive
        (``HttpObserver.sse_keepalive``), or None."""
        if self.mode is _HTTP and self.http is not None:
            return self.http.sse_keepalive()
        return None

    @property
    def event_stream_open(self) -> bool:
        return self.mode is _HTTP and self.http is not None and self.http.event_stream_open

    def eof(self, side: str, now: float) -> list[ConnectionEvent]:
        """``side`` closed its direction: the upstream's close ends a response
        whose body runs until it (``HttpObserver.upstream_eof``)."""
        if side == "upstream" and self.http is not None and self.mode is _HTTP:
            return list(self.http.upstream_eof(now))
        return []

    def abort(self, now: float) -> list[ConnectionEvent]:
        """The connection ended: HTTP exchanges still under way end aborted."""
        if self.http is not None and self.mode is _HTTP:
            return list(self.http.abort(now))
        return []
