"""What a recording's client said, as conversations to play again (sans-io).

Rules this module keeps:

* A conversation is what one client said in one session: a WebSocket
  connection, a streamable HTTP session (``Mcp-Session-Id``; its
  ``initialize`` has no session yet: it opens the next session its client
  is seen in), a 2024-11-05 session (``sessionId``), or for 2026-07-28 (no
  sessions) everything one client sent.  Conversations are independent:
  they are played side by side, each in its own order.
* A step is a request or a notification the client sent, with the answer
  recorded for it (observe/recording.AnswerIndex).  What cannot be played
  is skipped and said why: a body the recording cut, the Inspector v2 API,
  a ``subscriptions/listen`` stream (long-lived: not a request to compare).
* The client's own answers to the server's requests (sampling, roots,
  elicitation) are kept by method: played back when the server asks again.
* ``--era`` moves streamable HTTP conversations between the revisions:
  to 2026-07-28 drops ``initialize`` and ``notifications/initialized``
  (there are none); to 2025-11-25 drops ``server/discover`` (the server
  may not know it) and the session opens with ``initialize``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..observe.recording import AnswerIndex, Recording

ERAS = ("as-recorded", "2025-11-25", "2026-07-28")
STREAMABLE = ("streamable-http-2025", "streamable-http-2026")
#: What the transports need of ``--to``: ws(s):// for WebSocket, an http(s)://
#: URL ending in /sse for 2024-11-05, any other http(s):// for streamable HTTP.
TRANSPORT_OF_ERA = {
    "streamable-http-2025": "streamable-http",
    "streamable-http-2026": "streamable-http",
    "2024-11-05-sse": "legacy-sse",
    "websocket": "websocket",
}


@dataclass
class Step:
    """A message the client sent, and the answer the recording has for it."""

    message: dict[str, Any]
    answer: dict[str, Any] | None = None

    @property
    def is_request(self) -> bool:
        return bool(self.message["kind"] == "request")


@dataclass
class Conversation:
    """One client's session, to be played again in order."""

    key: str
    route: str
    era: str
    protocol_version: str | None
    steps: list[Step] = field(default_factory=list)
    #: The client's recorded answers to server requests, by method, in order.
    client_answers: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    @property
    def transport(self) -> str:
        return TRANSPORT_OF_ERA[self.era]

    @property
    def starts_with_initialize(self) -> bool:
        return bool(self.steps) and self.steps[0].message.get("method") == "initialize"


@dataclass
class Plan:
    conversations: list[Conversation]
    #: (the message, why it is not played)
    skipped: list[tuple[dict[str, Any], str]]


def _body_cut(message: dict[str, Any]) -> bool:
    return bool(message.get("truncated"))


def plan(recording: Recording, *, route: str | None = None, era: str = "as-recorded") -> Plan:
    """The conversations of a recording (of ``route`` only, if given)."""
    answers = AnswerIndex(recording.messages)
    by_key: dict[str, Conversation] = {}
    order: list[Conversation] = []
    pending_initialize: dict[tuple[str, Any], Conversation] = {}
    session_alias: dict[tuple[str, Any], Conversation] = {}
    skipped: list[tuple[dict[str, Any], str]] = []
    # The server's requests, to know what the client's answers answered.
    server_requests: dict[tuple[Any, ...], str] = {}
    for message in recording.messages:
        if route is not None and message["route"] != route:
            continue
        if message["direction"] == "upstream_to_client":
            if message["kind"] == "request":
                key = (message["route"], message.get("session") or message.get("client"), message.get("id"))
                server_requests[key] = message.get("method") or ""
            continue
        kind, msg_era = message["kind"], message.get("era") or "streamable-http-2025"
        if kind in ("response", "error"):  # the client answering a server request
            key = (message["route"], message.get("session") or message.get("client"), message.get("id"))
            method = server_requests.get(key)
            conversation = _find(message, by_key, session_alias)
            if method and conversation is not None:
                conversation.client_answers[method].append(message)
            continue
        if msg_era not in TRANSPORT_OF_ERA:
            skipped.append((message, f"{msg_era}: not replayed"))
            continue
        if _body_cut(message):
            skipped.append((message, "its body was cut in the recording (--max-body-bytes)"))
            continue
        if message.get("method") == "subscriptions/listen":
            skipped.append((message, "a subscriptions/listen stream (long-lived) is not replayed"))
            continue
        conversation = _conversation(message, msg_era, by_key, order, pending_initialize, session_alias)
        conversation.steps.append(Step(message, answers.take(message) if kind == "request" else None))
    conversations = [c for c in order if c.steps]
    if era != "as-recorded":
        for conversation in conversations:
            if conversation.era in STREAMABLE:
                _move(conversation, era, skipped)
    return Plan([c for c in conversations if c.steps], skipped)


def _find(
    message: dict[str, Any], by_key: dict[str, Conversation], session_alias: dict[tuple[str, Any], Conversation]
) -> Conversation | None:
    session = message.get("session")
    if session is not None:
        alias = session_alias.get((message["route"], session))
        if alias is not None:
            return alias
        return by_key.get(_session_key(message["route"], session))
    return by_key.get(_client_key(message["route"], message.get("client")))


def _session_key(route: str, session: Any) -> str:
    return f"{route}|{session}"


def _client_key(route: str, client: Any) -> str:
    return f"{route}|client:{client}"


def _conversation(
    message: dict[str, Any],
    era: str,
    by_key: dict[str, Conversation],
    order: list[Conversation],
    pending_initialize: dict[tuple[str, Any], Conversation],
    session_alias: dict[tuple[str, Any], Conversation],
) -> Conversation:
    route, session, client = message["route"], message.get("session"), message.get("client")
    version = message.get("protocol_version")

    def new(key: str) -> Conversation:
        conversation = by_key[key] = Conversation(key, route, era, version if version != "unknown" else None)
        order.append(conversation)
        return conversation

    if era == "streamable-http-2025" and session is None and message.get("method") == "initialize":
        conversation = new(f"{route}|init:{message['seq']}")
        pending_initialize[(route, client)] = conversation
        return conversation
    if session is not None:
        alias = session_alias.get((route, session))
        if alias is not None:
            return alias
        waiting = pending_initialize.pop((route, client), None)
        if waiting is not None and era == waiting.era:
            session_alias[(route, session)] = waiting
            return waiting
        key = _session_key(route, session)
        return by_key.get(key) or new(key)
    key = _client_key(route, client)
    return by_key.get(key) or new(key)


def _move(conversation: Conversation, era: str, skipped: list[tuple[dict[str, Any], str]]) -> None:
    """A streamable HTTP conversation, as the other revision would have it."""
    drop = {"initialize", "notifications/initialized"} if era == "2026-07-28" else {"server/discover"}
    kept = []
    for step in conversation.steps:
        if step.message.get("method") in drop:
            skipped.append((step.message, f"not part of {era}"))
        else:
            kept.append(step)
    conversation.steps = kept
    conversation.era = "streamable-http-2026" if era == "2026-07-28" else "streamable-http-2025"
    conversation.protocol_version = era
