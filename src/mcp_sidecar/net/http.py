"""HTTP/1.1 on h11 and trio, for everything but the forwarding path: one way
to serve (the admin endpoint, the 503 refusal, the demo upstream) and one way
to ask (probes, diagnostics, the demo's self-check, alerts, tests).

Rules this module keeps:

* Serving bounds the peer: a request must start within ``first_byte_s``,
  its head must be complete within ``head_s`` of its first byte and the
  whole request within ``request_s``; heads are bounded to ``max_head_bytes``
  (431) and bodies to ``max_body_bytes`` (413).  A breach raises
  ``RequestRejected`` with the status to answer (408 for a request that
  started and stalled; ``status`` None when nothing was sent at all).
* Asking reads a whole response, bounded to ``MAX_RESPONSE_BYTES``, or
  streams its body (``ClientExchange.body``) for event streams.
* h11 does the protocol; the trio code here only moves bytes and keeps time.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11
import trio

from ..errors import RemoteError

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
RECEIVE_BYTES = 65536


# --- serving -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestLimits:
    """How long and how large a client's request may be (seconds, bytes)."""

    first_byte_s: float = 5.0
    head_s: float = 5.0
    request_s: float = 10.0
    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    send_s: float = 10.0


class RequestRejected(RemoteError):
    """The client's request breaks a bound or the protocol: answer ``status``
    (when not None) and close."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ServerConnection:
    """One client connection of an h11 server: read requests, send responses.

    Owns the h11 state machine and the stream; the caller owns the stream's
    life (closing it) and decides what to answer.
    """

    def __init__(self, stream: trio.abc.Stream, limits: RequestLimits = RequestLimits()) -> None:
        self.stream = stream
        self.limits = limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        self._head_deadline: float | None = None
        self._request_deadline: float | None = None
        self._idle_s = limits.first_byte_s
        self._head_bytes = 0

    @property
    def can_answer(self) -> bool:
        """A response may still be started (no response under way)."""
        return self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    async def read_request(self, first_byte_s: float | None = None) -> tuple[h11.Request, bytes] | None:
        """The next request and its body, or None when the client closed (or
        sent nothing within ``first_byte_s``, default ``limits.first_byte_s``)."""
        request = await self.read_head(first_byte_s)
        if request is None:
            return None
        body = bytearray()
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    raise RequestRejected(413, "request body too large")
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            else:  # ConnectionClosed mid-body
                return None

    async def read_head(self, first_byte_s: float | None = None) -> h11.Request | None:
        """The next request's head (its body, if any, not read yet)."""
        limits = self.limits
        self._head_deadline = self._request_deadline = None
        self._idle_s = limits.first_byte_s if first_byte_s is None else first_byte_s
        self._head_bytes = 0
        event = await self._next_event()
        if isinstance(event, h11.Request):
            if sum(len(k) + len(v) + 4 for k, v in event.headers) + len(event.target) > limits.max_head_bytes:
                raise RequestRejected(431, "request head too large")
            return event
        return None  # ConnectionClosed, or idle

    async def _next_event(self) -> h11.Event:
        """The next h11 event, receiving under the request's deadlines."""
        limits = self.limits
        conn = self.conn
        try:
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA and event is not h11.PAUSED:
                    assert isinstance(event, h11.Event)
                    return event
                if self._head_deadline is None:
                    deadline = trio.current_time() + self._idle_s
                elif conn.their_state is h11.SEND_BODY:
                    assert self._request_deadline is not None
                    deadline = self._request_deadline
                else:
                    deadline = self._head_deadline
                with trio.move_on_at(deadline) as scope:
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                if scope.cancelled_caught:
                    if self._head_deadline is None:
                        return h11.ConnectionClosed()  # idle: nothing was asked
                    raise RequestRejected(408, "request timeout")
                if self._head_deadline is None:
                    now = trio.current_time()
                    self._head_deadline, self._request_deadline = now + limits.head_s, now + limits.request_s
                if conn.their_state is not h11.SEND_BODY:
                    # h11 bounds only an incomplete head; bound a complete one too.
                    self._head_bytes += len(data)
                    if self._head_bytes > limits.max_head_bytes + RECEIVE_BYTES:
                        raise RequestRejected(431, "request head too large")
                conn.receive_data(bytes(data))
        except h11.RemoteProtocolError as exc:
            raise RequestRejected(exc.error_status_hint, str(exc)) from None

    async def send(self, *events: h11.Event) -> None:
        """Send events as they are (a streamed response: head, data..., end)."""
        data = b"".join(self.conn.send(e) or b"" for e in events)
        with trio.fail_after(self.limits.send_s):
            await self.stream.send_all(data)

    async def respond(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
        *,
        head_only: bool = False,
        reason: bytes = b"",
    ) -> None:
        """One whole response with its ``content-length``."""
        head = h11.Response(
            status_code=status,
            reason=reason,
            headers=[("content-type", content_type), ("content-length", str(len(body))), *(headers or [])],
        )
        events: list[h11.Event] = [head]
        if body and not head_only:
            events.append(h11.Data(data=body))
        events.append(h11.EndOfMessage())
        await self.send(*events)

    def next_cycle(self) -> bool:
        """Ready for the next request on this connection (keep-alive)?"""
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
            return False
        try:
            self.conn.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True


# --- asking ----------------------------------------------------------------------------------


@dataclass
class HttpResponse:
    """A whole response: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class ClientExchange:
    """One request on a stream, read back as a head and then a body that may
    be consumed whole (``read``) or as it arrives (``body``)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.response: h11.Response | None = None

    async def send(
        self, authority: str, target: str, method: str, body: bytes, headers: list[tuple[str, str]] | None
    ) -> None:
        hdrs = [("host", authority), ("connection", "close"), *(headers or [])]
        if body or method in ("POST", "PUT"):
            hdrs.append(("content-length", str(len(body))))
        out = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            out += self.conn.send(h11.Data(data=body))
        out += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(out)

    async def _next(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA and event is not h11.PAUSED:
                assert isinstance(event, h11.Event)
                return event
            self.conn.receive_data(bytes(await self.stream.receive_some(RECEIVE_BYTES)))

    async def head(self) -> h11.Response:
        while self.response is None:
            event = await self._next()
            if isinstance(event, h11.Response):
                self.response = event
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.RemoteProtocolError("closed before a response")
        return self.response

    async def body(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive."""
        await self.head()
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def read(self) -> HttpResponse:
        response = await self.head()
        data = bytearray()
        async for chunk in self.body():
            data += chunk
            if len(data) > MAX_RESPONSE_BYTES:
                raise ValueError("response body too large")
        return HttpResponse(
            response.status_code, {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers}, bytes(data)
        )


async def request(
    host: str,
    port: int,
    target: str = "/",
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    tls: bool = False,
) -> HttpResponse:
    """One request on a fresh connection; the caller bounds the time."""
    if tls:
        stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl.create_default_context()
        )
    else:
        stream = await trio.open_tcp_stream(host, port)
    return await request_on(stream, f"{host}:{port}", target, method=method, body=body, headers=headers)


async def request_on(
    stream: trio.abc.Stream,
    authority: str,
    target: str = "/",
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> HttpResponse:
    """One request on ``stream`` (closed afterwards)."""
    async with stream:
        exchange = ClientExchange(stream)
        await exchange.send(authority, target, method, body, headers)
        return await exchange.read()
