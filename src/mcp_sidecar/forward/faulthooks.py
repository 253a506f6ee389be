"""MCP faults inside pump.py's loop: the connection keeps the optimized
pump, and the fault sides ride its rewriting hook (the one the WebSocket
keepalive uses).

Rules this module keeps:

* Used for a connection with MCP faults and no TCP shaping and no gate
  (those take faultpump.py).  A hook is the direction's ``ChunkObserver``:
  it feeds the fault side, hands the pump what to forward, and feeds the
  real observer what was forwarded (observation sees the client's view).
* The client's direction is always read (requests must be framed to be
  matched); the answers' direction only while the response side has
  something to do (a fault's answer due, a WebSocket, a 2024-11-05 stream):
  otherwise the pump forwards and observes as it does without faults.
* What a hook cannot do inside the loop it hands to a task of the
  connection: a reply in the server's place (written to the client), a held
  answer (the direction's bytes kept, at most ``MAX_HELD_BYTES``, then sent
  when the delay is over; the server ending the direction meanwhile ends the
  hold), a cut (the connection's scope cancelled).  An event another
  connection's fault writes on a 2024-11-05 stream goes whole, between two
  of the pump's chunks (``StreamWriter``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ..faults.actions import Close, Reply, Send, Wait
from ..faults.http import chunk
from ..faults.mcp import ResponseSide
from ..faults.requests import RequestSide
from .pump import ChunkObserver, Flow, LegFailed

#: A held answer's direction keeps at most this much; beyond, the hold ends early.
MAX_HELD_BYTES = 1024 * 1024


class RequestHook:
    """The client's direction: requests framed, matched, forwarded or answered."""

    may_rewrite = True
    rewriting = True

    def __init__(self, requests: RequestSide, real: ChunkObserver | None, answered: Callable[[Reply], None]) -> None:
        self.requests = requests
        self.real = real
        self.answered = answered

    def feed(self, data: memoryview | bytes) -> bool | bytes:
        if not data:  # end of the direction
            if self.real is not None:
                rest = self.real.feed(data)
                return rest if isinstance(rest, bytes) else b""
            return b""
        actions = self.requests.feed(bytes(data))
        for action in actions:
            if isinstance(action, Reply):
                self.answered(action)
        forwarded = b"".join([action.data for action in actions if isinstance(action, Send)])
        if forwarded and self.real is not None and self.real.feed(memoryview(forwarded)) is False:
            self.real = None
        return forwarded


class ResponseHook:
    """The answers' direction: passed as they come unless a fault's answer is due."""

    may_rewrite = True

    def __init__(
        self,
        responses: ResponseSide,
        real: ChunkObserver | None,
        client: Any,
        flow: Flow,
        start: Callable[..., Any],
        end: Callable[[str], None],
    ) -> None:
        self.flow = flow
        self.responses = responses
        self.real = real
        self.client = client
        self.start = start
        self.end = end
        self._held: bytearray | None = None
        self._scope: trio.CancelScope | None = None
        self._releasing = False

    @property
    def rewriting(self) -> bool:
        return self._held is not None or self.responses.busy

    def _observed(self, data: bytes) -> None:
        if data and self.real is not None and self.real.feed(memoryview(data)) is False:
            self.real = None

    def feed(self, data: memoryview | bytes) -> bool | bytes:
        if not self.rewriting:  # (called after the send: the pump forwarded it as it is)
            if self.real is not None and self.real.feed(data) is False:
                self.real = None  # (observation gave up; the faults go on)
            return True
        if not data:  # end of the direction: what is held goes now (the hold cut short)
            rest = b"" if self._releasing else bytes(self._held or b"")
            if not self._releasing:
                self._stop_holding()
            self._observed(rest)
            if self.real is not None:
                self.real.feed(memoryview(b""))
            return rest
        out = bytearray()
        for action in self.responses.feed(bytes(data)):
            if isinstance(action, Send):
                if self._held is not None:
                    self._held += action.data
                else:
                    out += action.data
            elif isinstance(action, Wait):
                if self._held is None:
                    self._held = bytearray()
                    self._scope = trio.CancelScope()
                    self.start(self._release, action.seconds, self._scope)
            elif isinstance(action, Close):
                self.end(str(action.fault.spec.kind))
                break
        if self._held is not None and len(self._held) > MAX_HELD_BYTES and not self._releasing:
            out += self._held  # (bounded: the hold ends early)
            self._stop_holding()
        stream = self.responses.stream
        if stream is not None and stream.handle is None:
            stream.handle = StreamWriter(self.client, self.flow, self.responses.stream_chunked, self._observed)
        forwarded = bytes(out)
        self._observed(forwarded)
        return forwarded

    def _stop_holding(self) -> None:
        self._held = None
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _release(self, seconds: float, scope: trio.CancelScope) -> None:
        """The hold is over: what was kept goes to the client, in order."""
        with scope:
            await trio.sleep(seconds)
        if scope.cancelled_caught:
            return
        self._releasing = True
        try:
            while self._held:
                data = bytes(self._held)
                self._held.clear()
                try:
                    await self.client.send_all(data)
                except LegFailed:
                    return
                self._observed(data)
        finally:
            self._held, self._scope, self._releasing = None, None, False


class StreamWriter:
    """A 2024-11-05 stream's client side, for another connection's ``error``
    fault: its event written whole between two of the pump's chunks (never
    while a chunk is half delivered: ``Flow.tail``)."""

    #: Tries, each after a short pause, before the event is given up.
    ATTEMPTS = 200
    PAUSE_S = 0.005

    def __init__(self, leg: Any, flow: Flow, chunked: bool, observed: Callable[[bytes], None]) -> None:
        self.leg = leg
        self.flow = flow
        self.chunked = chunked
        self.observed = observed

    async def inject(self, event: bytes) -> bool:
        data = chunk(event) if self.chunked else event
        for _ in range(self.ATTEMPTS):
            if not self.flow.tail and self.leg.try_write_whole(data):
                self.observed(data)
                return True
            await trio.sleep(self.PAUSE_S)
        return False
