"""The client's side of an HTTP connection with MCP faults (sans-io):
requests framed, matched, forwarded or answered in the server's place
(the rules are mcp.py's, at its top; the answers' side is there too).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from ..config.faults import FaultKind
from .actions import Action, Decide, Reply, Send, error_body, id_key, message_of, target_of
from .book import ActiveFault
from .http import MAX_BODY_BYTES, REASONS, Head, json_response, split_head
from .legacy import LegacyStreams, message_event, session_in_target
from .mcp import ResponsePlan, ResponseSide
from .ws import WsRequests

#: The faults a 2024-11-05 POST may get when its session's stream is known here (else: only http_status).
_LEGACY_KINDS = frozenset({FaultKind.ERROR, FaultKind.HTTP_STATUS, FaultKind.DELAY, FaultKind.DROP, FaultKind.CUT})
_LEGACY_ELSEWHERE = frozenset({FaultKind.HTTP_STATUS})


class _Mode(Enum):
    HEAD = "head"
    BODY = "body"
    TUNNEL = "tunnel"
    WEBSOCKET = "websocket"


class RequestSide:
    """The client's bytes: requests framed, matched, forwarded or answered."""

    def __init__(
        self,
        decide: Decide,
        responses: ResponseSide,
        may_match: Callable[[bytes], bool] | None = None,
        legacy: LegacyStreams | None = None,
    ) -> None:
        #: The route's 2024-11-05 streams (None: that transport is not looked at).
        self._legacy = legacy
        self._ws: WsRequests | None = None
        self._decide = decide
        #: A quick look at a body's bytes: False when no fault can match it (not decoded then).
        self._may_match = may_match or (lambda body: True)
        self._responses = responses
        self._buffer = bytearray()
        self._mode = _Mode.HEAD
        self._head: Head | None = None
        self._left = 0  # body bytes still to come

    @property
    def tunnel(self) -> bool:
        return self._mode is _Mode.TUNNEL

    def feed(self, data: bytes) -> list[Action]:
        if self._mode is _Mode.TUNNEL:
            return [Send(data)] if data else []
        if self._ws is not None:
            return self._ws.feed(data)
        if self._mode is _Mode.HEAD and not self._buffer and self._passes_whole(data):
            return [Send(data)]
        self._buffer += data
        out: list[Action] = []
        while self._mode is not _Mode.TUNNEL:
            if self._mode is _Mode.HEAD:
                if not self._buffer:
                    break
                try:
                    head = split_head(self._buffer, response=False)
                except ValueError:
                    self._to_tunnel(out)
                    break
                if head is None:
                    break
                if head.upgrade and head.method == "GET":  # a WebSocket: its frames from here on
                    out.append(Send(head.raw))
                    self._responses.upgrading()
                    self._ws = WsRequests(self._decide, self._responses.ws_plans, self._may_match)
                    rest = bytes(self._buffer)
                    self._buffer.clear()
                    out += self._ws.feed(rest)
                    break
                if head.chunked or head.upgrade or head.method == "CONNECT":
                    out.append(Send(head.raw))
                    self._to_tunnel(out)
                    break
                self._head, self._left, self._mode = head, head.length or 0, _Mode.BODY
            assert self._head is not None
            head = self._head
            if self._left > MAX_BODY_BYTES:  # too large to hold: forwarded as it comes
                take = min(self._left, len(self._buffer))
                out.append(Send(head.raw + bytes(self._buffer[:take])))
                self._head = Head(b"", head.method, head.target, 0)
                self._left -= take
                del self._buffer[:take]
                if self._left:
                    break
                self._mode = _Mode.HEAD
                continue
            if len(self._buffer) < self._left:
                break
            body = bytes(self._buffer[: self._left])
            del self._buffer[: self._left]
            self._mode = _Mode.HEAD
            out.append(self._request(head, body))
        return out

    def _passes_whole(self, data: bytes) -> bool:
        """The usual case, quickly: ``data`` is exactly one request that no
        fault can take (a request that is not a POST, or whose body cannot
        match: ``may_match``)."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or not data.startswith((b"POST ", b"GET ", b"DELETE ")):
            return False
        head = data[: end + 2].lower()
        if self._legacy is not None and b"text/event-stream" in head and data.startswith(b"GET "):
            return False  # (a stream: read, for a 2024-11-05 session's answers)
        if b"\r\ntransfer-encoding:" in head or b"\r\nupgrade:" in head:
            return False  # chunked, or an upgrade: the long way
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            value = head[at + 17 : head.find(b"\r", at + 17)].strip()
            if not value.isdigit():
                return False
            length = int(value)
        if end + 4 + length != len(data):
            return False
        return not length or not data.startswith(b"POST ") or not self._may_match(data[end + 4 :])

    def _legacy_request(self, raw: bytes, message: dict[str, Any], session: str) -> Action:
        """A 2024-11-05 POST: its answer is an event on the session's stream."""
        assert self._legacy is not None
        stream = self._legacy.get(session)
        fault = self._decide(message["method"], target_of(message), _LEGACY_KINDS if stream else _LEGACY_ELSEWHERE)
        if fault is None:
            return Send(raw)
        spec = fault.spec
        if spec.kind is FaultKind.HTTP_STATUS:
            return self._status_reply(fault, message, raw)
        assert stream is not None
        if spec.kind is FaultKind.ERROR:
            event = message_event(error_body(message["id"], spec.code, spec.message))
            accepted = b"HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\nAccepted"
            return Reply(accepted, fault, raw, inject=(stream, event))
        stream.plans[id_key(message["id"])] = fault
        return Send(raw)

    def _status_reply(self, fault: ActiveFault, message: dict[str, Any], raw: bytes) -> Reply:
        spec = fault.spec
        extra = () if spec.retry_after_s is None else (f"Retry-After: {round(spec.retry_after_s)}",)
        reason = REASONS.get(spec.status, "Error")
        code = -32001 if spec.status == 404 else spec.code
        body_out = error_body(message["id"], code, "Session not found" if spec.status == 404 else spec.message)
        return Reply(json_response(spec.status, reason, body_out, extra), fault, raw)

    def _to_tunnel(self, out: list[Action]) -> None:
        """The rest goes through unchanged (the responses to it pass: no plan)."""
        if self._buffer:
            out.append(Send(bytes(self._buffer)))
            self._buffer.clear()
        self._mode = _Mode.TUNNEL

    def _request(self, head: Head, body: bytes) -> Action:
        raw = head.raw + body
        if head.method == "GET" and self._legacy is not None and b"text/event-stream" in head.raw.lower():
            self._responses.expect(ResponsePlan(stream=True))
            return Send(raw)
        if head.method != "POST" or not body or not self._may_match(body):
            return Send(raw)  # (no fault can take it: its answer passes untouched)
        message = message_of(body)
        if message is None:
            return Send(raw)
        session = session_in_target(head.target) if self._legacy is not None else None
        if session is not None:
            return self._legacy_request(raw, message, session)
        fault = self._decide(message["method"], target_of(message), None)
        if fault is None:
            return Send(raw)
        spec = fault.spec
        if spec.kind is FaultKind.ERROR:
            return Reply(json_response(200, "OK", error_body(message["id"], spec.code, spec.message)), fault, raw)
        if spec.kind is FaultKind.HTTP_STATUS:
            return self._status_reply(fault, message, raw)
        self._responses.expect(ResponsePlan(fault, head_only=head.method == "HEAD"))
        return Send(raw)
