"""The JSON-RPC envelope of MCP messages, decoded at C speed (msgspec).

Rules this module keeps:

* Only the envelope is decoded into Python values: ``jsonrpc``, ``id``,
  ``method`` and ``error``; ``params`` and ``result`` stay raw JSON slices
  (``msgspec.Raw``: zero-copy views of the body), validated but never built
  into objects, whatever their size.  The few things correlation needs from
  ``params`` (the request a cancellation names) are decoded from that slice
  when asked.
* A body that is not JSON, or not JSON-RPC 2.0, yields no message; nothing
  here raises on a peer's bytes.
* A single message and a batch (a JSON array) are both accepted.
* What the observers need from ``params`` and ``result`` (a target's name,
  the protocol version in ``_meta``, a tool's ``isError``) is decoded by
  ``params_facts``/``result_facts`` into small records, the rest of the
  slice skipped by msgspec without building it.
* The MCP Inspector v2 wraps messages in its own API envelope
  (``decode_v2``): the wrapper is decoded the same way, its inner message
  through the same envelope decoder.
* What a peer names things by (a string id, a session id) is held bounded:
  past ``MAX_ID_KEY_CHARS``, as its digest (``bounded_text``), the same for
  the same text, so whatever it correlates still matches.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

UNSET = msgspec.UNSET


#: Characters of a string id held as they are; a longer one is held as its digest.
MAX_ID_KEY_CHARS = 128


def bounded_text(value: str) -> str:
    """A peer's id or session id as held, matched and relayed: itself up to
    ``MAX_ID_KEY_CHARS``, else its digest (the same for the same text, so what
    it correlates still matches).  Idempotent; a peer could choose a short id
    equal to a long one's digest, and mislabel only its own messages."""
    if len(value) > MAX_ID_KEY_CHARS:
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return value


def bounded_id(value: Any) -> Any:
    """A JSON-RPC id as held: a string as ``bounded_text``, anything else as it is."""
    return bounded_text(value) if isinstance(value, str) else value


class Envelope(msgspec.Struct, frozen=True):
    """One JSON-RPC message: a request (``method`` and ``id``), a
    notification (``method``, no ``id``) or a response (``id`` with
    ``result`` or ``error``).  Absent fields are ``UNSET``."""

    jsonrpc: Any = None
    id: Any = UNSET
    method: Any = UNSET
    params: msgspec.Raw | msgspec.UnsetType = UNSET
    result: msgspec.Raw | msgspec.UnsetType = UNSET
    error: Any = UNSET

    @property
    def is_request(self) -> bool:
        return self.method is not UNSET and self.id is not UNSET

    @property
    def error_code(self) -> Any:
        return self.error.get("code") if isinstance(self.error, dict) else None

    def param(self, name: str) -> Any:
        """One top-level member of ``params`` (decoded now), or None."""
        if self.params is UNSET:
            return None
        try:
            value = _PARAMS.decode(self.params)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return value.get(name) if isinstance(value, dict) else None


class MetaFacts(msgspec.Struct):
    """What the observers read of ``params._meta``."""

    protocol_version: Any = msgspec.field(default=None, name="io.modelcontextprotocol/protocolVersion")
    traceparent: Any = None
    tracestate: Any = None
    #: The token the request's progress notifications will name.
    progressToken: Any = None


class ParamFacts(msgspec.Struct):
    """What the observers read of a request's ``params``: the tool or prompt
    (``name``) or resource (``uri``) it is about, the version an
    ``initialize`` asks for, the request a cancellation names, a progress
    notification's figures, and ``_meta`` (the 2026-07-28 protocol version,
    the trace context, a progress token)."""

    name: Any = None
    uri: Any = None
    protocolVersion: Any = None
    requestId: Any = None
    #: A ``notifications/progress``: the request it is about (its token), how far, of how much.
    progressToken: Any = None
    progress: Any = None
    total: Any = None
    #: (A ``_meta`` that is not an object makes the whole record empty: not MCP.)
    meta: MetaFacts | None = msgspec.field(default=None, name="_meta")


class ResultFacts(msgspec.Struct):
    """What the observers read of a ``result``: the version an ``initialize``
    answer chose, whether a ``tools/call`` result is a tool error."""

    protocolVersion: Any = None
    isError: Any = None


_NO_PARAMS = ParamFacts()
_NO_RESULT = ResultFacts()


def params_facts(message: Envelope) -> ParamFacts:
    """``params`` as the observers read it (empty when absent or not an object)."""
    if message.params is UNSET:
        return _NO_PARAMS
    try:
        return _PARAM_FACTS.decode(message.params)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _NO_PARAMS


def result_facts(message: Envelope) -> ResultFacts:
    """``result`` as the observers read it (empty when absent or not an object)."""
    if message.result is UNSET:
        return _NO_RESULT
    try:
        return _RESULT_FACTS.decode(message.result)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _NO_RESULT


class _V2Wrapper(msgspec.Struct):
    """The Inspector v2 API's envelope around JSON-RPC: ``{"sessionId", "message"}``
    (POST /api/mcp/send) or ``{"type": "message", "data"}`` (its event streams)."""

    sessionId: Any = None
    message: msgspec.Raw | msgspec.UnsetType = UNSET
    type: Any = None
    data: msgspec.Raw | msgspec.UnsetType = UNSET


_ONE = msgspec.json.Decoder(Envelope)
_V2 = msgspec.json.Decoder(_V2Wrapper)
_MANY = msgspec.json.Decoder(Envelope | list[Envelope])
_PARAMS = msgspec.json.Decoder()
_PARAM_FACTS = msgspec.json.Decoder(ParamFacts)
_RESULT_FACTS = msgspec.json.Decoder(ResultFacts)


def decode(body: bytes | bytearray | memoryview) -> list[Envelope]:
    """The JSON-RPC 2.0 messages in ``body`` (a message or a batch)."""
    try:
        if body[:1] != b"[":
            message = _ONE.decode(body)
            return [message] if message.jsonrpc == "2.0" else []
        value = _MANY.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    items = value if isinstance(value, list) else [value]
    return [m for m in items if m.jsonrpc == "2.0"]


def answering(message: Envelope, request_id: Any) -> Envelope:
    """``message``, or, if it is an error whose id is null, that error
    answering ``request_id`` (the caller knows it is the only request it can
    answer)."""
    if message.id is None and message.error is not UNSET and message.method is UNSET:
        return msgspec.structs.replace(message, id=request_id)
    return message


def from_mapping(message: dict[str, Any]) -> Envelope:
    """An envelope from an already-decoded message (tests, tools)."""
    raw = {k: msgspec.Raw(msgspec.json.encode(message[k])) for k in ("params", "result") if k in message}
    plain = {k: message[k] for k in ("jsonrpc", "id", "method", "error") if k in message}
    return Envelope(**plain, **raw)


def to_mapping(message: Envelope) -> dict[str, Any]:
    """The message as plain values (for display and tests)."""
    out: dict[str, Any] = {}
    for field in Envelope.__struct_fields__:
        value = getattr(message, field)
        if value is UNSET:
            continue
        out[field] = msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value
    return out


def decode_v2(body: bytes | bytearray | memoryview) -> tuple[str | None, list[Envelope]]:
    """The session and the JSON-RPC messages inside an Inspector v2 envelope
    (nothing if the body is not one)."""
    try:
        wrapper = _V2.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, []
    session = bounded_text(wrapper.sessionId) if isinstance(wrapper.sessionId, str) else None
    inner = (
        wrapper.message
        if wrapper.message is not UNSET
        else (wrapper.data if wrapper.type == "message" and wrapper.data is not UNSET else None)
    )
    return session, (decode(memoryview(inner)) if inner is not None else [])
