"""HTTP/1.1 exchanges seen in-line, with llhttp (httptools; sans-io).

One persistent llhttp request parser reads the client's bytes and one
persistent response parser the upstream's: llhttp frames keep-alive and
pipelined messages, chunked and close-delimited bodies, ``1xx`` and ``101``
in C, and calls back into Python only per message, per header and per body
piece.  What llhttp cannot know, because it depends on the request a response
answers, is read here: the response to a ``HEAD`` (no body, whatever its
``Content-Length`` says) and to a ``CONNECT`` (a tunnel after a ``2xx``) are
read head-only; an upgrade proposal pauses the client's side until its
answer shows which protocol the bytes that follow belong to.

Rules this module keeps:

* ``feed_client``/``feed_upstream`` take bytes and a timestamp and return
  events; the caller feeds a request's bytes before any of its response's
  (the pump observes each chunk right after sending it, so a response cannot
  overtake its request).
* Exchanges are answered in order; at most ``MAX_PIPELINE`` wait for an
  answer, at most ``MAX_BUFFERED_BYTES`` wait while a side is paused, and a
  message head is at most ``MAX_HEAD_BYTES``.  The events never depend on
  how the bytes were split.
* What a request, a body or an event means for MCP (which transport era,
  which session) is decided by ``mcphttp.py``; this module frames.
* Bodies are inspected only where MCP lives: JSON request/response bodies up
  to ``MAX_JSON_BYTES`` (decoded as JSON-RPC envelopes, ``jsonrpc.py``) and
  ``text/event-stream`` responses (SSE parser, bounded lines).  Other bodies
  are counted, not kept.  What is buffered is charged to the worker's
  inspection budget after every step.
* After a ``101`` (or a ``2xx`` to ``CONNECT``) the observer hands over:
  ``Upgraded`` carries the bytes that followed the handshake on each side and
  whether the new protocol is WebSocket.
* Anything llhttp rejects (and any breach of the bounds above) raises
  ``HttpObserverError``, naming the fault but never quoting the peer's
  bytes; the caller gives up on this connection (fail open); the bytes were
  forwarded regardless.
"""

from __future__ import annotations

from collections import deque

import httptools

from .budget import UNBOUNDED, Allowance
from .events import (
    BodyTooLarge,
    ExchangeDone,
    HttpEvent,
    JsonRpcSeen,
    ResponseStarted,
    SessionEndpoint,
    SseSeen,
    Tunneled,
    Upgraded,
)
from .httpsides import (
    HEAD_END,
    MAX_BUFFERED_BYTES,
    MAX_HEAD_BYTES,
    MAX_JSON_BYTES,
    MAX_PIPELINE,
    Current,
    HeadOnly,
    HttpObserverError,
    RequestSide,
    ResponseSide,
    describe_fault,
    keepalive_insert,
)
from .jsonrpc import UNSET, answering, bounded_text
from .mcphttp import body_messages, endpoint_session, event_messages, jsonrpc_messages

__all__ = [
    "MAX_BUFFERED_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_JSON_BYTES",
    "MAX_PIPELINE",
    "ExchangeDone",
    "HttpObserver",
    "HttpObserverError",
    "JsonRpcSeen",
    "SessionEndpoint",
    "SseSeen",
    "Tunneled",
    "Upgraded",
    "jsonrpc_messages",
]
from .sse import Comment, SseError, SseParser


class HttpObserver:
    """The exchanges of one HTTP/1.1 connection, read from both directions.

    Owns the two llhttp parsers, the queue of exchanges awaiting their
    answer, the bytes held while a side waits, and the bodies being
    collected for JSON-RPC; what it buffers is charged to ``memory`` (the
    worker's inspection budget) after every step.
    """

    def __init__(self, memory: Allowance | None = None) -> None:
        self.memory = memory or UNBOUNDED.allowance()
        self._requests = httptools.HttpRequestParser(RequestSide(self))
        self._responses = httptools.HttpResponseParser(ResponseSide(self))
        #: Exchanges whose request has started and whose response has not ended.
        self._queue: deque[Current] = deque()
        self._last_request: Current | None = None
        #: Events of the step in progress (the callbacks append to it).
        self._out: list[HttpEvent] = []
        self._now = 0.0
        #: Bytes of the JSON bodies being collected (request and response).
        self._json_bytes = 0
        #: Client bytes after an upgrade proposal, until its answer (None: not paused).
        self._client_held: bytearray | None = None
        #: Upstream bytes not yet given to a parser (before their request, or a
        #: head read head-only that is not complete yet).
        self._upstream_held = bytearray()
        self._in_response = False
        self._client_in_head = False
        self._upstream_in_head = False
        self._client_head_bytes = 0
        self._upstream_head_bytes = 0
        #: Bytes fed one at a time to stop exactly at a response's end (see _feed_responses).
        self._careful_bytes = 0
        #: The exchange whose response ended last (what a 101 answered).
        self._answered: Current | None = None
        #: The response ending now keeps the connection open; one did not: no more bytes.
        self._keep_alive = True
        self._upstream_closed = False
        self.upgraded = False
        #: The legacy SSE stream's session, once its endpoint event was seen.
        self.stream_session: str | None = None
        #: Inside a chunk's data (llhttp's chunk callbacks), and the last two
        #: bytes of an event stream's response fed: where a chunk may be added.
        self._in_chunk = False
        self._stream_tail = b""

    # -- client side ----------------------------------------------------------------------

    def feed_client(self, data: bytes, now: float) -> list[HttpEvent]:
        if not data:  # (EOF is not fed)
            return []
        if self.upgraded:
            return [Tunneled("client", bytes(data))]
        self._now = now
        out: list[HttpEvent] = []
        self._out = out
        if self._client_held is not None:  # paused: the proposal's answer decides what this is
            self._client_held += data
            if len(self._client_held) > MAX_BUFFERED_BYTES:
                raise HttpObserverError("client kept sending while its upgrade was unanswered")
        else:
            self._feed_requests(data)
        self._account()
        return out

    def _feed_requests(self, data: bytes | bytearray | memoryview) -> None:
        in_head = self._client_in_head
        try:
            self._requests.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The proposal's head is read; what follows waits for its answer.
            self._client_held = bytearray(memoryview(data)[exc.args[0] :])
            if len(self._client_held) > MAX_BUFFERED_BYTES:
                raise HttpObserverError("client kept sending while its upgrade was unanswered") from None
        except httptools.HttpParserError as exc:
            raise self._parser_error("client", exc) from None
        if in_head and self._client_in_head:  # the whole chunk was (part of) one head
            self._client_head_bytes += len(data)
            if self._client_head_bytes > MAX_HEAD_BYTES:
                raise HttpObserverError("request head too large")

    # -- upstream side --------------------------------------------------------------------

    def feed_upstream(self, data: bytes, now: float) -> list[HttpEvent]:
        if not data:
            return []
        if self.upgraded:
            return [Tunneled("upstream", bytes(data))]
        self._now = now
        out: list[HttpEvent] = []
        self._out = out
        self._feed_responses(data)
        self._account()
        return out

    def _feed_responses(self, data: bytes | bytearray | memoryview) -> None:
        queue = self._queue
        if (
            len(queue) == 1
            and not queue[0].head_only
            and not self._upstream_held
            and not self._upstream_closed
            and not self._upstream_in_head
        ):
            # The usual step: one exchange waiting, its response framed by llhttp.
            try:
                self._responses.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                self._switched(memoryview(data)[exc.args[0] :])
            except httptools.HttpParserError as exc:
                raise self._parser_error("upstream", exc) from None
            else:
                if self._upstream_in_head:  # a head began and is not complete: count it
                    self._upstream_head_bytes += len(data)
                    if self._upstream_head_bytes > MAX_HEAD_BYTES:
                        raise HttpObserverError("response head too large")
                elif queue and queue[0].sse is not None:  # an event stream under way
                    self._stream_tail = (self._stream_tail + bytes(data[-2:]))[-2:]
            return
        if self._upstream_held:
            self._upstream_held += data
            data = bytes(self._upstream_held)
            self._upstream_held.clear()
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n and not self.upgraded:
            if self._upstream_closed:
                raise HttpObserverError("upstream: data after `Connection: close`")
            if not self._queue and not self._in_response:
                self._hold_upstream(view[pos:], "upstream sent a response with no request")
                return
            current = self._queue[0]
            if not self._in_response and current.head_only:
                pos = self._head_only(current, view, pos)
                if pos < 0:
                    return
                continue
            # llhttp frames it.  If the next exchange's response is to be read
            # head-only, stop exactly where this response ends: feed it a byte
            # at a time (pipelining of HEAD/CONNECT behind another response is
            # rare; bounded).
            careful = len(self._queue) > 1 and any(q.head_only for q in self._queue)
            if careful:
                self._careful_bytes += 1
                if self._careful_bytes > MAX_BUFFERED_BYTES:
                    raise HttpObserverError("a HEAD or CONNECT pipelined behind a large response")
            end = pos + 1 if careful else n
            in_head = self._upstream_in_head
            try:
                self._responses.feed_data(view[pos:end])
            except httptools.HttpParserUpgrade as exc:
                self._switched(view[pos + exc.args[0] :])
                return
            except httptools.HttpParserError as exc:
                raise self._parser_error("upstream", exc) from None
            if in_head and self._upstream_in_head:  # the whole piece was (part of) one head
                self._upstream_head_bytes += end - pos
                if self._upstream_head_bytes > MAX_HEAD_BYTES:
                    raise HttpObserverError("response head too large")
            elif self._queue and self._queue[0].sse is not None and not self._upstream_in_head:
                self._stream_tail = (self._stream_tail + bytes(view[max(pos, end - 2) : end]))[-2:]
            pos = end

    def _head_only(self, current: Current, view: memoryview, pos: int) -> int:
        """Read the response to a HEAD or CONNECT by its head alone; the
        position after it, or -1 when the head is not complete yet."""
        end = bytes(view[pos : pos + MAX_HEAD_BYTES + 4]).find(HEAD_END)
        if end < 0:
            self._hold_upstream(view[pos:], "response head too large")
            return -1
        head = bytes(view[pos : pos + end + 4])
        side = HeadOnly()
        parser = httptools.HttpResponseParser(side)
        try:
            parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # a 101 to a HEAD: the head is what is read either way
        except httptools.HttpParserError as exc:
            raise self._parser_error("upstream", exc) from None
        after = pos + end + 4
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return after  # informational: the answer is still to come
        self._keep_alive = parser.should_keep_alive()
        if current.method == b"CONNECT" and not 200 <= status < 300:
            current.head_only = False  # refused: a normal response, with a body
            return pos
        self._response_head(current, status, side.ctype, side.session)
        self._response_done(current)
        if current.method == b"CONNECT":
            self._switched(view[after:])
            return len(view)
        return after

    def _hold_upstream(self, data: memoryview, fault: str) -> None:
        self._upstream_held += data
        if len(self._upstream_held) > MAX_BUFFERED_BYTES:
            raise HttpObserverError(fault)

    # -- events ---------------------------------------------------------------------------

    def _response_head(self, current: Current, status: int, ctype: bytes | None, session: bytes | None) -> None:
        exchange = current.exchange
        exchange.status = status
        exchange.headers_at = self._now
        if session is not None and not exchange.session:
            exchange.session = bounded_text(session.decode("latin-1"))
        content_type = ctype.split(b";", 1)[0].strip().lower().decode("latin-1") if ctype else ""
        exchange.content_type = content_type
        if content_type == "text/event-stream":
            current.sse = SseParser()
            if exchange.listen_id is not None:
                exchange.stream = "listen"
            elif current.method == b"GET":
                exchange.stream = (
                    "inspector-v2" if current.v2 else "legacy-sse" if exchange.path in ("/sse", "/stdio") else "get"
                )
        elif content_type == "application/json":
            current.response_json = bytearray()
        self._out.append(ResponseStarted(exchange))

    def _response_done(self, current: Current) -> None:
        exchange = current.exchange
        exchange.ended = self._now
        buffer = current.response_json
        if buffer:
            _, messages, transport = body_messages(buffer, v2=current.v2, legacy=current.legacy)
            if len(messages) == 1 and len(current.request_ids) == 1:
                # An error whose id is null, the only possible answer on this
                # exchange (a server refusing at once, e.g. a foreign Host):
                # it answers the exchange's one request.
                messages = [answering(messages[0], current.request_ids[0])]
            # (a body's first byte: its head's, as the body usually comes with it)
            seen = (current.request_session, transport, len(buffer), None, exchange, exchange.headers_at)
            for message in messages:
                self._out.append(JsonRpcSeen("upstream", message, self._now, *seen))
            self._done_with(buffer)
        current.response_json = None
        self._queue.popleft()
        self._careful_bytes = 0
        if not self._keep_alive:
            self._upstream_closed = True
        self._keep_alive = True
        self._answered = current
        self._out.append(ExchangeDone(exchange))
        status = exchange.status or 0
        accepted = status == 101 or (current.method == b"CONNECT" and 200 <= status < 300)
        if current.switch and not accepted and self._client_held is not None:
            # The switch was declined: what the client sent meanwhile is the next request.
            held, self._client_held = self._client_held, None
            if held:
                self._feed_requests(held)

    def _switched(self, upstream_trailing: memoryview) -> None:
        """The connection is another protocol from here on: a WebSocket if the
        answered request proposed one (and got its 101), else a tunnel."""
        answered = self._answered
        websocket = (
            answered is not None and answered.exchange.status == 101 and answered.upgrade.lower() == b"websocket"
        )
        self.upgraded = True
        client = bytes(self._client_held or b"")
        self._client_held = None
        self._out.append(Upgraded(client, bytes(upstream_trailing), self._now, websocket))

    def _parser_error(self, side: str, exc: httptools.HttpParserError) -> BaseException:
        cause = exc.__context__
        if isinstance(cause, HttpObserverError):
            return cause
        if cause is not None and not isinstance(cause, httptools.HttpParserError):
            return cause  # a defect in a callback of ours: not the peer's fault
        return HttpObserverError(f"{side}: {describe_fault(exc)}")

    def _sse(self, current: Current, data: bytes) -> None:
        out = self._out
        now = self._now
        began = current.sse_began if current.sse_began is not None else now
        try:
            sse = current.sse
            assert sse is not None
            events = sse.feed(data)
        except SseError:
            current.sse = None
            return
        # (an event still assembled began in this chunk if one ended here, else when it began)
        current.sse_began = None if sse.at_boundary else (now if events else began)
        for event in events:
            event_began, began = began, now  # (the events after the first began in this chunk)
            if isinstance(event, Comment):
                out.append(SseSeen("comment", now, keepalive=True))
                continue
            current.exchange.sse_events += 1
            out.append(SseSeen(event.event, now))
            if event.event == "endpoint":
                announced = endpoint_session(event.data)
                if announced is not None:
                    self.stream_session = announced
                    out.append(SessionEndpoint(announced))
            elif event.data[:1] in ("{", "["):
                session = current.request_session if current.request_session is not None else self.stream_session
                data = event.data.encode()
                messages, transport = event_messages(
                    data,
                    v2=current.v2,
                    request_session=current.request_session,
                    stream_session=self.stream_session,
                    legacy=current.legacy,
                )
                exchange = current.exchange
                waiting = current.request_ids
                seen = (session, transport, len(data), None, exchange, event_began)
                for message in messages:
                    out.append(JsonRpcSeen("upstream", message, now, *seen))
                    if waiting and message.method is UNSET and message.id in waiting:
                        waiting.remove(message.id)
                        if not waiting:  # every request of the POST answered on its stream
                            current.answered_at = self._now

    # -- bounded buffers --------------------------------------------------------------------

    def _collect(self, buffer: bytearray, data: bytes, origin: str) -> bytearray | None:
        """Collect a JSON body up to MAX_JSON_BYTES; beyond that, stop (None):
        the body is counted (``BodyTooLarge``), never parsed."""
        if len(buffer) + len(data) > MAX_JSON_BYTES:
            self._json_bytes -= len(buffer)
            self._out.append(BodyTooLarge(origin))
            return None
        buffer += data
        self._json_bytes += len(data)
        return buffer

    def _done_with(self, buffer: bytearray | None) -> None:
        if buffer:
            self._json_bytes -= len(buffer)

    def _account(self) -> None:
        """Charge what is buffered now to the inspection budget."""
        level = self._json_bytes
        if self._upstream_held:
            level += len(self._upstream_held)
        if self._client_held:
            level += len(self._client_held)
        queue = self._queue
        if queue and queue[0].sse is not None:
            level += queue[0].sse.buffered
        if level or self.memory.held:
            self.memory.hold(level)

    @property
    def event_stream_open(self) -> bool:
        """A ``text/event-stream`` response is under way (its head read, its end not)."""
        queue = self._queue
        return bool(queue) and self._in_response and not self._upstream_in_head and queue[0].sse is not None

    def sse_keepalive(self) -> bytes | None:
        """Bytes that may go to the client now without changing the event
        stream under way (``httpsides.keepalive_insert``), or None."""
        if self.upgraded or not self.event_stream_open:
            return None
        return keepalive_insert(self._queue[0], self._in_chunk, self._stream_tail)

    def upstream_eof(self, now: float) -> list[HttpEvent]:
        """The upstream closed its side: a response whose body runs until the
        close (neither Content-Length nor chunked) is complete now."""
        queue = self._queue
        if self.upgraded or not self._in_response or self._upstream_in_head or not queue:
            return []
        current = queue[0]
        if not current.close_delimited or current.head_only:
            return []
        self._now = now
        out: list[HttpEvent] = []
        self._out = out
        self._in_response = False
        self._keep_alive = False
        if current.sse is not None:  # an event not ended by a blank line is dropped (the SSE rule)
            current.sse = None
        self._response_done(current)
        self._account()
        return out

    def abort(self, now: float) -> list[HttpEvent]:
        """The connection ended: the exchanges still under way (an event
        stream the client closed, a request never answered) end ``aborted``."""
        out: list[HttpEvent] = []
        for current in self._queue:
            exchange = current.exchange
            if current.answered_at is not None and exchange.status is not None:
                # A request-scoped event stream that carried every answer its
                # request awaited: complete, whatever happened to its last
                # chunk (the client may close as soon as it has the answer).
                exchange.ended = current.answered_at
            else:
                exchange.aborted = True
                exchange.ended = now
            out.append(ExchangeDone(exchange))
        self._queue.clear()
        return out

    def close(self) -> None:
        """Drop every buffer and give the budget back (the connection ended)."""
        self._queue.clear()
        self._last_request = self._answered = None
        # The parsers hold their callbacks, which hold this observer: cut the circle.
        self._requests = self._responses = None  # type: ignore[assignment]  # (never used after close)
        self._upstream_held = bytearray()
        self._client_held = None
        self._json_bytes = 0
        self.memory.release()
