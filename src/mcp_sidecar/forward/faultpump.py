"""Forwarding with faults: the pump a connection uses instead of pump.py's
when TCP faults apply to it (chosen at its start), or MCP faults on a gated
route; MCP faults alone ride pump.py's own loop (faulthooks.py).

Rules this module keeps:

* Never on the hot path of a connection without faults: a route's
  connections take this path only while its fault book says so (decided
  once, at the connection's start; ``faults`` off: never).  Faults added
  later apply to connections opened later (Toxiproxy applies a new toxic to
  open connections too: docs/faults.md says why not here).
* The decisions are sans-io (faults/tcp.py shapes, faults/mcp.py frames
  and answers); this module only waits and sends.  With TCP faults each
  direction is a reader (this task) and a writer (a child task) joined by a
  channel of at most ``QUEUED_CHUNKS`` chunks of at most ``legs.READ_BYTES``:
  latency delays each chunk from its arrival without holding the reader
  back, and a direction holds at most ``QUEUED_CHUNKS * legs.READ_BYTES``
  bytes (1 MiB).  With MCP faults on a gated route, one task reads, decides
  and sends (a held answer holds its direction, as the server's slowness would).
* What is sent is what is observed (the observer sees the client's view):
  a reply the fault gives in the server's place is observed as the server's
  answer, a dropped response is never seen.
* A fault that ends the connection raises ``FaultEnded`` (reset: both legs
  get an RST; else a FIN each way).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import RemoteError
from ..faults.actions import Close, Reply, Send, Wait
from ..faults.book import ActiveFault, FaultBook
from ..faults.legacy import LegacyStreams
from ..faults.mcp import ResponseSide
from ..faults.requests import RequestSide
from ..faults.tcp import ConnectionShaping, Ending, Shaper
from ..logs import log
from ..net.gate import Close as GateClose
from ..net.gate import Forward, RequestGate
from ..net.gate import Reply as GateReply
from ..observe.tap import shown_method
from .faulthooks import StreamWriter
from .pump import ChunkObserver, Flow, GateClosed, Leg, LegFailed
from .state import Connection

logger = logging.getLogger(__name__)

#: Chunks (each at most legs.READ_BYTES) queued between a direction's reader and writer.
QUEUED_CHUNKS = 16


class FaultEnded(RemoteError):
    """An injected fault ended the connection (``reset``: with RST)."""

    def __init__(self, kind: str, *, reset: bool) -> None:
        self.kind = kind
        self.reset = reset
        super().__init__(f"fault {kind}")


@dataclass
class ConnectionFaults:
    """What faults one connection gets, decided at its start."""

    shaping: ConnectionShaping | None
    requests: RequestSide | None
    responses: ResponseSide | None


def plan_connection(
    book: FaultBook,
    conn: Connection,
    http: bool,
    now: float,
    taps: Callable[[], tuple[Any, ...]] = tuple,
    legacy: LegacyStreams | None = None,
) -> ConnectionFaults | None:
    """The faults of a new connection (None: none; it takes the plain pump).
    ``taps``: the route's tap subscribers now (each injection is shown to them, marked)."""
    client = conn.client
    chosen = book.connection_faults(now)
    mcp = http and book.has_mcp(now)
    if not chosen and not mcp:
        return None

    def injected(fault: ActiveFault, method: str | None = None, target: str | None = None) -> None:
        spec = fault.spec
        conn.note_fault(f"{spec.name}: {spec.describe()}")
        mcp_fields: dict[str, Any] = {} if method is None else {"method": method, "target": target}
        log(
            logger,
            logging.INFO,
            "fault.injected",
            route=book.route,
            conn=conn.id,
            fault=spec.name,
            kind=str(spec.kind),
            client=client,
            **mcp_fields,
        )
        subscribers = taps()
        if subscribers:
            record = {
                "t": time.time(),
                "route": book.route,
                "direction": "upstream_to_client" if method is not None else str(spec.direction),
                "kind": "fault",
                "fault": spec.name,
                "fault_kind": str(spec.kind),
                "description": spec.describe(),
                "method": shown_method(method) if method is not None else None,
                "target": target,
                "size": 0,
                "transport": "http" if method is not None else "tcp",
            }
            for subscriber in subscribers:
                subscriber.offer(record)

    for fault in chosen:
        injected(fault)
    shaping = ConnectionShaping.of([f.spec for f in chosen], book.rng) if chosen else None
    requests = responses = None
    if mcp:
        responses = ResponseSide(legacy)

        def decide(method: str, target: str | None, kinds: frozenset[Any] | None) -> ActiveFault | None:
            fault = book.mcp_fault(trio.current_time(), method, target, client, kinds)
            if fault is not None:
                injected(fault, method, target)
            return fault

        requests = RequestSide(decide, responses, lambda body: book.may_match(trio.current_time(), body), legacy)
    return ConnectionFaults(shaping, requests, responses)


async def _sleep_until(at: float) -> None:
    if at > trio.current_time():
        await trio.sleep_until(at)


async def fault_pump(
    src: Leg,
    dst: Leg,
    flow: Flow,
    *,
    shaper: Shaper | None,
    transform: RequestSide | ResponseSide | None,
    observe: ChunkObserver | None,
    answer_observer: Callable[[Reply], None] | None = None,
    gate: RequestGate | None = None,
) -> None:
    """Forward ``src`` -> ``dst`` through the faults until EOF on ``src``,
    then (after ``slow_close``) half-close ``dst``.  ``flow`` is the
    direction's ``Flow``.  A ``Reply`` (the request side answering in the
    server's place) goes back to ``src`` and to ``answer_observer``."""
    if shaper is None:  # MCP faults only: one task, nothing queued
        await _in_order(src, dst, flow, transform, observe, answer_observer, gate)
        return
    try:
        await _shaped(src, dst, flow, shaper, transform, observe, answer_observer, gate)
    except BaseExceptionGroup as group:
        raise _one(group) from None


def _one(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a direction (its writer's or its reader's), out of trio's group."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending += item.exceptions
        elif not isinstance(item, trio.Cancelled):
            leaves.append(item)
    if len(leaves) == 1 and isinstance(leaves[0], (FaultEnded, LegFailed, GateClosed)):
        return leaves[0]
    return group


class _Source:
    """A direction's source: its bytes as they come (counted in its ``Flow``),
    through the access gate while it stands (its replies sent, its refusals
    raised)."""

    def __init__(self, leg: Leg, flow: Flow, gate: RequestGate | None) -> None:
        self.leg = leg
        self.flow = flow
        self.gate = gate

    async def read(self) -> bytes | None:
        """The next bytes to act on (b"": the gate kept them all); None at EOF."""
        data = await _receive(self.leg)
        self.flow.bytes += len(data)
        if not data:
            return None
        gate = self.gate
        if gate is None:
            return data
        passed = bytearray()
        for gated in gate.feed(data):
            if isinstance(gated, Forward):
                passed += gated.data
            elif isinstance(gated, GateReply):
                await _reply(self.leg, gated.data)
                if gated.close:
                    raise GateClosed(gated.reason, replied=True)
            elif isinstance(gated, GateClose):
                raise GateClosed(gated.reason, replied=False)
        if gate.tunnel:
            self.gate = None
        return bytes(passed)


async def deliver_reply(client: Leg, reply: Reply, answer_observer: Callable[[Reply], None] | None) -> None:
    """A reply in the server's place: to the client (the source of the
    request: ``LegFailed("src")``), then observed, then (2024-11-05) its
    error event written on the session's stream."""
    await _reply(client, reply.data)
    if answer_observer is not None:
        answer_observer(reply)
    if reply.inject is not None:
        stream, event = reply.inject
        if stream.handle is not None:
            await stream.handle.inject(event)


async def _in_order(
    src: Leg,
    dst: Leg,
    flow: Flow,
    transform: RequestSide | ResponseSide | None,
    observe: ChunkObserver | None,
    answer_observer: Callable[[Reply], None] | None,
    gate: RequestGate | None,
) -> None:
    """The MCP faults' path on a gated route: read, decide, send, in one task
    (a held answer holds its direction)."""
    source = _Source(src, flow, gate)
    try:
        while (data := await source.read()) is not None:
            actions = transform.feed(data) if transform is not None else [Send(data)]
            if isinstance(transform, ResponseSide) and transform.stream is not None and transform.stream.handle is None:
                transform.stream.handle = StreamWriter(dst, flow, transform.stream_chunked, _observer_of(observe))
            for action in actions:
                if isinstance(action, Send):
                    flow.tail = True  # (another connection's event waits for the whole chunk)
                    try:
                        await dst.send_all(action.data)
                    finally:
                        flow.tail = False
                    if observe is not None and observe.feed(memoryview(action.data)) is False:
                        observe = None
                elif isinstance(action, Reply):
                    # (HTTP/1.1 clients wait for an answer before the next request:
                    # nothing of ours can overtake an answer of the server's)
                    await deliver_reply(src, action, answer_observer)
                elif isinstance(action, Wait):
                    await trio.sleep(action.seconds)
                else:
                    raise FaultEnded(str(action.fault.spec.kind), reset=False)
    finally:
        if isinstance(transform, ResponseSide):
            transform.close()
    if observe is not None:
        observe.feed(memoryview(b""))
    flow.eof = True
    await dst.send_eof()


async def _shaped(
    src: Leg,
    dst: Leg,
    flow: Flow,
    shaper: Shaper,
    transform: RequestSide | ResponseSide | None,
    observe: ChunkObserver | None,
    answer_observer: Callable[[Reply], None] | None,
    gate: RequestGate | None,
) -> None:
    """TCP faults: a reader (this task) and a writer joined by a bounded channel."""
    send, receive = trio.open_memory_channel[tuple[float, object]](QUEUED_CHUNKS)
    source = _Source(src, flow, gate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_writer, receive, dst, flow, shaper, observe)
        async with send:
            while (data := await source.read()) is not None:
                now = trio.current_time()
                if not data:
                    continue
                actions = transform.feed(data) if transform is not None else [Send(data)]
                for action in actions:
                    if isinstance(action, Send):
                        await send.send((now, action.data))
                    elif isinstance(action, Reply):
                        await deliver_reply(src, action, answer_observer)
                    else:
                        await send.send((now, action))
        # (the writer ends at the channel's end and half-closes dst)


def _observer_of(observe: ChunkObserver | None) -> Callable[[bytes], None]:
    def observed(data: bytes) -> None:
        if observe is not None:
            observe.feed(memoryview(data))

    return observed


async def _receive(src: Leg) -> bytes:
    try:
        return await src.receive()
    except LegFailed as exc:
        raise LegFailed("src", exc.error) from None


async def _reply(src: Leg, data: bytes) -> None:
    try:
        await src.send_all(data)
    except LegFailed as exc:
        raise LegFailed("src", exc.error) from None


async def _writer(
    receive: trio.MemoryReceiveChannel[tuple[float, object]],
    dst: Leg,
    flow: Flow,
    shaper: Shaper,
    observe: ChunkObserver | None,
) -> None:
    async with receive:
        async for arrived, item in receive:
            if isinstance(item, Wait):
                await trio.sleep(item.seconds)
                continue
            if isinstance(item, Close):
                raise FaultEnded(str(item.fault.spec.kind), reset=False)
            assert isinstance(item, bytes)
            pieces, ending = shaper.chunk(item, arrived)
            for piece in pieces:
                await _sleep_until(piece.at)
                await dst.send_all(piece.data)
                if observe is not None and observe.feed(memoryview(piece.data)) is False:
                    observe = None
            if ending is Ending.RESET:
                raise FaultEnded("reset_peer", reset=True)
            if ending is Ending.CLOSE:
                raise FaultEnded("limit_data", reset=False)
    if shaper.holds_everything:
        await trio.sleep(math.inf)  # timeout: the end is held too (closed by its timer, if any)
    if shaper.close_delay_s():
        await trio.sleep(shaper.close_delay_s())
    if observe is not None:
        observe.feed(memoryview(b""))
    flow.eof = True
    await dst.send_eof()
