"""Playing a recording's conversations against a server, and what came of it.

Rules this module keeps:

* Conversations play side by side (at most ``MAX_CONCURRENT``), each in its
  recorded order, a request's answer awaited before the next message (what
  a client does).  ``speed`` 1 keeps the recorded spacing (each message
  waits for its offset from the recording's first); ``max`` sends at once.
* Ids are the replay's own (1, 2, ... per conversation), mapped from the
  recorded ones, in ``notifications/cancelled`` too.  A streamable HTTP
  2025 conversation or a WebSocket one recorded without its ``initialize``
  gets one first (and ``notifications/initialized``): the server needs it.
* Each answer is compared with the recorded one (compare.py); an answer
  whose recorded body was cut is not compared (said).  A request answered
  then but not now (timeout, a stream that ended) is a difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult

import trio

from .compare import ABSENT, Difference, differences
from .peers import Answer, LegacySse, StreamableHttp, WebSocketPeer
from .plan import Conversation, Step

MAX_CONCURRENT = 16
DEFAULT_VERSION = "2025-11-25"


@dataclass
class Outcome:
    """One message played: what came back and how it compares."""

    conversation: Conversation
    step: Step
    answer: Answer | None = None
    differences: list[Difference] = field(default_factory=list)
    then_ms: float | None = None
    now_ms: float | None = None
    note: str = ""

    @property
    def method(self) -> str:
        return str(self.step.message.get("method") or "?")

    @property
    def target(self) -> str:
        return str(self.step.message.get("target") or "")


def _recorded_body(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded answer's result or error; None when the recording cut it."""
    if answer.get("truncated"):
        return None
    if "error" in answer:
        return {"error": answer["error"]}
    return {"result": answer.get("result")}


def _now_body(message: dict[str, Any]) -> dict[str, Any]:
    return {"error": message["error"]} if "error" in message else {"result": message.get("result")}


class ServerRequests:
    """The server's requests, answered as the recorded client answered them."""

    def __init__(self, conversation: Conversation) -> None:
        self.left = {method: list(answers) for method, answers in conversation.client_answers.items()}

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        recorded = self.left.get(request.get("method") or "") or []
        if recorded and not recorded[0].get("truncated"):
            kept = recorded.pop(0)
            body = {"error": kept["error"]} if "error" in kept else {"result": kept.get("result", {})}
            return {"jsonrpc": "2.0", "id": request["id"], **body}
        return {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32601, "message": "not in the recording the replay plays"},
        }


def _initialize(version: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "mcp-sidecar-replay", "version": "1"},
        },
    }


async def play(
    conversations: list[Conversation],
    urls: dict[str, SplitResult],
    *,
    speed: float,
    timeout_s: float,
    ignore: tuple[tuple[Any, ...], ...],
) -> list[Outcome]:
    """Play each conversation against ``urls[its transport]``."""
    outcomes: list[Outcome] = []
    if not conversations:
        return outcomes
    first = min(c.steps[0].message["t"] for c in conversations)
    started = trio.current_time()
    limiter = trio.CapacityLimiter(MAX_CONCURRENT)
    async with trio.open_nursery() as nursery:
        for conversation in conversations:
            nursery.start_soon(
                _play_one,
                conversation,
                urls[conversation.transport],
                speed,
                started,
                first,
                timeout_s,
                ignore,
                limiter,
                outcomes,
            )
    return sorted(outcomes, key=lambda o: o.step.message["seq"])


async def _play_one(
    conversation: Conversation,
    url: SplitResult,
    speed: float,
    started: float,
    first: float,
    timeout_s: float,
    ignore: tuple[tuple[Any, ...], ...],
    limiter: trio.CapacityLimiter,
    outcomes: list[Outcome],
) -> None:
    async with limiter, trio.open_nursery() as nursery:
        transport = conversation.transport
        peer: Any
        if transport == "websocket":
            peer = WebSocketPeer(url, nursery)
            await peer.open()
        elif transport == "legacy-sse":
            peer = LegacySse(url, nursery)
            await peer.open()
        else:
            stateless = conversation.era == "streamable-http-2026"
            peer = StreamableHttp(url, conversation.protocol_version if stateless else None, stateless)
        replies = ServerRequests(conversation)
        ids: dict[Any, int] = {}
        next_id = 1
        try:
            if not conversation.starts_with_initialize and conversation.era != "streamable-http-2026":
                opening = _initialize(conversation.protocol_version or DEFAULT_VERSION)
                opening["id"] = next_id
                next_id += 1
                with trio.fail_after(timeout_s):
                    await peer.request(opening, replies)
                    await peer.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})
            for step in conversation.steps:
                message = step.message
                if math.isfinite(speed):
                    await trio.sleep_until(started + (message["t"] - first) / speed)
                wire: dict[str, Any] = {"jsonrpc": "2.0", "method": message["method"]}
                if "params" in message:
                    wire["params"] = message["params"]
                if step.is_request:
                    ids[message.get("id")] = wire["id"] = next_id
                    next_id += 1
                elif message["method"] == "notifications/cancelled" and isinstance(wire.get("params"), dict):
                    recorded = wire["params"].get("requestId")
                    if recorded in ids:
                        wire["params"] = {**wire["params"], "requestId": ids[recorded]}
                outcome = Outcome(conversation, step)
                if step.answer is not None:
                    outcome.then_ms = step.answer.get("latency_ms")
                if not step.is_request:
                    with trio.move_on_after(timeout_s):
                        await peer.notify(wire)
                    outcomes.append(outcome)
                    continue
                sent = trio.current_time()
                answer = None
                with trio.move_on_after(timeout_s):
                    answer = await peer.request(wire, replies)
                outcome.now_ms = round((trio.current_time() - sent) * 1000, 3)
                _judge(outcome, answer, timeout_s, ignore)
                outcomes.append(outcome)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await peer.aclose()
            nursery.cancel_scope.cancel()


def _judge(outcome: Outcome, answer: Answer | None, timeout_s: float, ignore: tuple[tuple[Any, ...], ...]) -> None:
    """How the answer now compares with the one recorded."""
    outcome.answer = answer
    recorded = outcome.step.answer
    if answer is None or answer.message is None:
        why = f"no answer within {timeout_s:g} s" if answer is None else answer.note
        if recorded is not None:
            then = _recorded_body(recorded)
            outcome.differences = [Difference("$", then if then is not None else "(cut)", ABSENT)]
        outcome.note = why
        return
    if recorded is None:
        outcome.note = "not answered in the recording"
        return
    then = _recorded_body(recorded)
    if then is None:
        outcome.note = "the recorded answer was cut (--max-body-bytes): not compared"
        return
    outcome.differences = differences(then, _now_body(answer.message), ignore)
