"""MCP faults on a WebSocket connection (sans-io): after the 101, the
client's frames (masked) carry requests, the server's frames the answers.

Rules this module keeps:

* Only whole text frames (FIN set, opcode 1) of at most ``MAX_BODY_BYTES``
  are read; control frames, fragments and larger frames go through as they
  come, untouched.  A frame is held only until it is complete.
* ``error``: the request frame is not forwarded; the client gets a server
  frame (unmasked, as RFC 6455 wants of a server) with the JSON-RPC error
  for its id.  ``delay``, ``drop`` and ``cut`` forward the request and act
  on the answer with the same id (answers on a WebSocket may come in any
  order): held, never delivered, or the connection closed before it.
  ``http_status`` and ``strip_keepalive`` have no meaning on a WebSocket.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config.faults import FaultKind
from ..observe.websocket import unmask
from .actions import Action, Close, Decide, Reply, Send, Wait, error_body, id_key, message_of_any, target_of
from .book import ActiveFault
from .http import MAX_BODY_BYTES

_TEXT = 0x1
_FIN = 0x80


def server_text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame (what a server sends)."""
    n = len(payload)
    if n < 126:
        head = bytes((_FIN | _TEXT, n))
    elif n < 1 << 16:
        head = bytes((_FIN | _TEXT, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((_FIN | _TEXT, 127)) + n.to_bytes(8, "big")
    return head + payload


class Frames:
    """Whole frames off a byte stream: ``(raw frame, text payload or None)``;
    a frame this side does not read (control, fragment, too large) is passed
    on in pieces as it comes (``None`` payload)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._passing = 0  # bytes of a frame being passed through

    def feed(self, data: bytes) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        buffer = self._buffer
        buffer += data
        while buffer:
            if self._passing:
                take = min(self._passing, len(buffer))
                out.append((bytes(buffer[:take]), None))
                del buffer[:take]
                self._passing -= take
                continue
            if len(buffer) < 2:
                break
            b0, b1 = buffer[0], buffer[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(buffer) < 4:
                    break
                n, pos = int.from_bytes(buffer[2:4], "big"), 4
            elif n == 127:
                if len(buffer) < 10:
                    break
                n, pos = int.from_bytes(buffer[2:10], "big"), 10
            masked = bool(b1 & 0x80)
            key_end = pos + (4 if masked else 0)
            readable = b0 == _FIN | _TEXT and n <= MAX_BODY_BYTES
            if not readable:  # passed on as it comes
                self._passing = key_end + n
                continue
            if len(buffer) < key_end + n:
                break
            raw = bytes(buffer[: key_end + n])
            del buffer[: key_end + n]
            payload = raw[key_end:]
            out.append((raw, unmask(payload, raw[pos:key_end]) if masked else payload))
        return out


class WsPlans:
    """The answers a fault acts on, by request id (shared by both sides)."""

    def __init__(self) -> None:
        self.by_id: dict[str, ActiveFault] = {}


class WsRequests:
    """The client's frames: a request a fault takes is answered or marked."""

    def __init__(self, decide: Decide, plans: WsPlans, may_match: Callable[[bytes], bool]) -> None:
        self._frames = Frames()
        self._decide = decide
        self._plans = plans
        self._may_match = may_match

    def feed(self, data: bytes) -> list[Action]:
        out: list[Action] = []
        for raw, payload in self._frames.feed(data):
            message = message_of_any(payload) if payload is not None and self._may_match(payload) else None
            if message is None or not isinstance(message.get("method"), str) or "id" not in message:
                out.append(Send(raw))
                continue
            fault = self._decide(message["method"], target_of(message), None)
            if fault is None or fault.spec.kind in (FaultKind.HTTP_STATUS, FaultKind.STRIP_KEEPALIVE):
                out.append(Send(raw))
            elif fault.spec.kind is FaultKind.ERROR:
                body = error_body(message["id"], fault.spec.code, fault.spec.message)
                out.append(Reply(server_text_frame(body), fault, raw))
            else:
                self._plans.by_id[id_key(message["id"])] = fault
                out.append(Send(raw))
        return out


class WsAnswers:
    """The server's frames: an answer a fault acts on is held, dropped or cut."""

    def __init__(self, plans: WsPlans) -> None:
        self._frames = Frames()
        self._plans = plans
        self._cut = False

    def feed(self, data: bytes) -> list[Action]:
        if self._cut:
            return []
        out: list[Action] = []
        for raw, payload in self._frames.feed(data):
            fault = None
            if payload is not None and self._plans.by_id:
                message = message_of_any(payload)
                if message is not None and "id" in message and "method" not in message:
                    fault = self._plans.by_id.pop(id_key(message["id"]), None)
            if fault is None:
                out.append(Send(raw))
            elif fault.spec.kind is FaultKind.DELAY:
                out += [Wait(fault.spec.delay_s, fault), Send(raw)]
            elif fault.spec.kind is FaultKind.CUT:
                out.append(Close(fault))  # (a WebSocket answer is one event: cut before it)
                self._cut = True
                break
            # FaultKind.DROP: never delivered
        return out
