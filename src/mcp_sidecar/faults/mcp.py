"""MCP faults on an HTTP connection (sans-io): both directions of one
connection of streamable HTTP (2025) or stateless (2026-07-28) MCP.

Rules this module keeps:

* ``RequestSide.feed(client bytes)`` returns what to do, in order:
  ``Send`` to the upstream, ``Reply`` to the client in the server's place
  (the request never reaches the server).  Each complete POST whose body
  is one JSON-RPC request is matched against the route's faults (method,
  target -- the tool, prompt or resource named --, client address) through
  ``decide``; notifications, responses and batches are never matched.
* ``ResponseSide.feed(upstream bytes)`` returns ``Send`` to the client,
  ``Wait`` (hold what follows), ``Close`` (end the connection: a cut); each
  response is treated as the request it answers asked: HTTP/1.1 answers in
  order, so the n-th response answers the n-th request sent upstream.
* What each fault does, and where:
  ``error``: a ``200`` with a JSON-RPC error for the request's id (the
  request is not forwarded); ``http_status``: that status (``Retry-After``
  on 429/503, a JSON-RPC error body; a ``404`` is what a server answers for
  a session it no longer knows); ``delay``: the response held; ``drop``:
  the request is forwarded (the server acts on it) and its response never
  delivered (the client's timeout fires -- the case of a lost answer, the
  worst for a client); ``cut``: the response's event stream closed after
  ``events`` events (a JSON response counts as one event); ``strip_keepalive``:
  the event stream's comment-only events removed.
* After a WebSocket upgrade both sides read frames (ws.py): the same
  faults, matched by request id.  A 2024-11-05 POST's fault acts on the
  session's stream, another connection's (legacy.py).
* Anything the framer cannot follow makes both sides a tunnel (http.py):
  bytes unchanged, no more faults on this connection.
"""

from __future__ import annotations

from collections import deque

from ..config.faults import FaultKind
from .actions import (
    Action,
    Close,
    Send,
    Wait,
    id_key,
    message_of_any,
)
from .book import ActiveFault
from .http import (
    LAST_CHUNK,
    ChunkDecoder,
    EventSplitter,
    Head,
    chunk,
    is_comment_only,
    split_head,
)
from .legacy import LegacyStream, LegacyStreams, endpoint_session, event_data
from .ws import WsAnswers, WsPlans


class ResponsePlan:
    """What to do with the response to one forwarded request (``stream``: a
    GET's event stream, read for a 2024-11-05 session's answers)."""

    __slots__ = ("events", "fault", "head_only", "kind", "stream")

    def __init__(self, fault: ActiveFault | None = None, *, head_only: bool = False, stream: bool = False) -> None:
        self.fault = fault
        self.kind = fault.spec.kind if fault is not None else None
        self.events = fault.spec.events if fault is not None else 0
        self.head_only = head_only
        self.stream = stream


class ResponseSide:
    """The upstream's bytes: responses framed, each treated as its request's plan says."""

    def __init__(self, legacy: LegacyStreams | None = None) -> None:
        #: The route's 2024-11-05 streams, and this connection's, once its endpoint event named it.
        self._legacy = legacy
        self.stream: LegacyStream | None = None
        #: The answers a fault acts on after a WebSocket upgrade (shared with the request side).
        self.ws_plans = WsPlans()
        self._ws: WsAnswers | None = None
        self._plans: deque[ResponsePlan] = deque()
        self._buffer = bytearray()
        self._tunnel = False
        self._plan: ResponsePlan | None = None
        self._head: Head | None = None
        self._framing = ""  # "length", "chunked", "close", "" (no body)
        self._left = 0
        self._chunks: ChunkDecoder | None = None
        self._events: EventSplitter | None = None
        self._seen_events = 0

    _upgrading = False

    def upgrading(self) -> None:
        """A WebSocket upgrade went up: its answer (a 101) is read, to read the frames after it."""
        self._upgrading = True

    def expect(self, plan: ResponsePlan) -> None:
        """A request went upstream.  Only the answers a fault acts on are
        framed: an HTTP/1.1 client sends a request once the previous answer
        is complete (no pipelining: browsers, httpx, the SDKs), so when a
        fault's request goes up, the next response to come is its answer.
        Every other answer passes untouched, at no cost."""
        if (plan.kind is not None or plan.stream) and not self._tunnel:
            self._plans.append(plan)

    def feed(self, data: bytes) -> list[Action]:
        if self._ws is not None:
            return self._ws.feed(data)
        if self._cut:
            return []  # (the connection is closing: nothing more goes to the client)
        if self._tunnel or (self._head is None and not self._plans and not self._buffer and not self._upgrading):
            return [Send(data)] if data else []  # (no fault's answer due: passed as it comes)
        self._buffer += data
        out: list[Action] = []
        while self._buffer and not self._tunnel:
            if self._head is None and not self._plans and not self._upgrading:
                out.append(Send(bytes(self._buffer)))  # (after a fault's answer: the rest passes)
                self._buffer.clear()
                break
            if self._head is None:
                try:
                    head = split_head(self._buffer, response=True)
                except ValueError:
                    self._pass_rest(out)
                    break
                if head is None:
                    break
                if self._start(head, out):
                    continue
                break
            self._body(out)
        return _merged(out)

    def _pass_rest(self, out: list[Action]) -> None:
        self._tunnel = True
        if self._buffer:
            out.append(Send(bytes(self._buffer)))
            self._buffer.clear()

    def _start(self, head: Head, out: list[Action]) -> bool:
        """A response head: True to go on framing, False when the rest is a tunnel."""
        if 100 <= head.status < 200:
            out.append(Send(head.raw))
            if head.status == 101:  # a WebSocket (or another protocol, read as frames: untouched if not)
                self._ws = WsAnswers(self.ws_plans)
                rest = bytes(self._buffer)
                self._buffer.clear()
                out += self._ws.feed(rest)
                return False
            return True
        self._upgrading = False  # (an upgrade refused: this is its answer, passed)
        plan = self._plans.popleft() if self._plans else ResponsePlan()
        self._plan, self._head = plan, head
        if plan.head_only or head.status in (204, 304):
            self._framing = ""
        elif head.chunked:
            self._framing, self._chunks = "chunked", ChunkDecoder()
        elif head.length is not None:
            self._framing, self._left = "length", head.length
        else:
            self._framing = "close"
        kind = plan.kind
        if kind is FaultKind.DELAY:
            assert plan.fault is not None
            out.append(Wait(plan.fault.spec.delay_s, plan.fault))
        if kind is not FaultKind.DROP:
            out.append(Send(head.raw))
        if kind is FaultKind.CUT and plan.events == 0:
            assert plan.fault is not None
            out.append(Close(plan.fault))  # cut before the first event (a JSON answer is one)
            self._tunnel = self._cut = True
            self._buffer.clear()
            return False
        self._rewrites = kind in (FaultKind.CUT, FaultKind.STRIP_KEEPALIVE) and head.event_stream
        if plan.stream and head.event_stream and self._legacy is not None:
            self._rewrites = True  # (read event by event, for a 2024-11-05 session's answers)
            self.stream = LegacyStream()
        if self._rewrites:
            self._events, self._seen_events = EventSplitter(), 0
        if not self._framing:
            self._done()
        return True

    _rewrites = False
    _cut = False

    def _done(self) -> None:
        self._head, self._plan, self._chunks, self._events = None, None, None, None
        self.close()

    @property
    def busy(self) -> bool:
        """Whether the next upstream bytes must be read here (a fault's answer
        due or under way, an upgrade's answer, a WebSocket, a 2024-11-05 stream);
        otherwise they pass as they come, unread."""
        return bool(
            self._plans
            or self._head is not None
            or self._buffer
            or self._upgrading
            or self._ws is not None
            or self.stream is not None
        )

    @property
    def stream_chunked(self) -> bool:
        """The stream's body is chunked (an injected event is then a chunk)."""
        return self._framing == "chunked"

    def close(self) -> None:
        """The stream (if one was known) is gone: its session's faults cannot reach it."""
        if self.stream is not None and self._legacy is not None:
            self._legacy.forget(self.stream)

    def _body(self, out: list[Action]) -> None:
        plan = self._plan
        assert plan is not None
        drop = plan.kind is FaultKind.DROP
        if self._framing == "length":
            take = min(self._left, len(self._buffer))
            part = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._left -= take
            if not drop:
                out.append(Send(part))
            if not self._left:
                self._done()
            return
        if self._framing == "close":
            part = bytes(self._buffer)
            self._buffer.clear()
            if self._rewrites:
                self._rewrite(part, out, chunked=False)
            elif not drop:
                out.append(Send(part))
            return
        assert self._chunks is not None
        data = bytes(self._buffer)
        self._buffer.clear()
        try:
            payload, rest = self._chunks.feed(data)
        except ValueError:
            out.append(Send(data))
            self._tunnel = True
            return
        if self._rewrites:
            self._rewrite(payload, out, chunked=True)
            if self._chunks is not None and self._chunks.done and not self._tunnel:
                assert self._events is not None
                out.append(Send(chunk(self._events.rest()) + LAST_CHUNK))
        elif not drop:
            used = data[: len(data) - len(rest)] if rest else data
            out.append(Send(used))
        if self._chunks is not None and self._chunks.done:
            self._done()
            self._buffer += rest

    def _rewrite(self, payload: bytes, out: list[Action], *, chunked: bool) -> None:
        """An event stream cut after ``events`` events, or without its keepalives;
        or a 2024-11-05 session's stream, its answers held, dropped or cut."""
        plan = self._plan
        assert plan is not None and self._events is not None
        if plan.stream:
            self._session_events(payload, out, chunked)
            return
        assert plan.fault is not None
        kept = bytearray()
        for event in self._events.feed(payload):
            if plan.kind is FaultKind.STRIP_KEEPALIVE and is_comment_only(event):
                continue
            kept += event
            if plan.kind is FaultKind.CUT and not is_comment_only(event):
                self._seen_events += 1
                if self._seen_events >= plan.events:
                    out.append(Send(chunk(bytes(kept)) if chunked else bytes(kept)))
                    out.append(Close(plan.fault))
                    self._tunnel = self._cut = True
                    self._buffer.clear()
                    return
        if kept:
            out.append(Send(chunk(bytes(kept)) if chunked else bytes(kept)))

    def _session_events(self, payload: bytes, out: list[Action], chunked: bool) -> None:
        stream, legacy = self.stream, self._legacy
        assert stream is not None and legacy is not None and self._events is not None
        kept = bytearray()

        def flush() -> None:
            if kept:
                out.append(Send(chunk(bytes(kept)) if chunked else bytes(kept)))
                kept.clear()

        for event in self._events.feed(payload):
            if stream.session is None:
                stream.session = endpoint_session(event)
                legacy.register(stream)
            fault = None
            if stream.plans:
                data = event_data(event)
                message = message_of_any(data) if data is not None else None
                if message is not None and "id" in message and "method" not in message:
                    fault = stream.plans.pop(id_key(message["id"]), None)
            if fault is None:
                kept += event
            elif fault.spec.kind is FaultKind.DELAY:
                flush()
                out.append(Wait(fault.spec.delay_s, fault))
                kept += event
            elif fault.spec.kind is FaultKind.CUT:
                flush()
                out.append(Close(fault))
                self._tunnel = self._cut = True
                self._buffer.clear()
                return
            # FaultKind.DROP: never delivered
        flush()


def _merged(actions: list[Action]) -> list[Action]:
    out: list[Action] = []
    for action in actions:
        if isinstance(action, Send) and out and isinstance(out[-1], Send):
            out[-1] = Send(out[-1].data + action.data)
        elif not (isinstance(action, Send) and not action.data):
            out.append(action)
    return out
