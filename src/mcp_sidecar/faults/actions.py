"""What the MCP fault sides ask their pump to do, and the JSON-RPC they
read and write (shared by the HTTP and the WebSocket sides).

Rules this module keeps: plain records and pure functions; a body that is
not one JSON-RPC request is ``None``, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ..config.faults import TARGET_METHODS
from .book import ActiveFault


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Reply:
    """Answer the client in the server's place: ``request`` was not forwarded."""

    data: bytes
    fault: ActiveFault
    request: bytes
    #: Also an event to write on another connection's stream: (legacy.LegacyStream, event bytes).
    inject: tuple[Any, bytes] | None = None


@dataclass(frozen=True)
class Wait:
    seconds: float
    fault: ActiveFault


@dataclass(frozen=True)
class Close:
    fault: ActiveFault


Action = Send | Reply | Wait | Close
#: (method, target, kinds it may be or None for any) -> the fault that takes the request (None: forward it)
Decide = Callable[[str, "str | None", "frozenset[Any] | None"], "ActiveFault | None"]


def message_of(body: bytes) -> dict[str, Any] | None:
    """The JSON-RPC request in a body (None: not one request)."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("method"), str) or "id" not in value:
        return None
    return value


def target_of(message: dict[str, Any]) -> str | None:
    params = message.get("params")
    if message["method"] not in TARGET_METHODS or not isinstance(params, dict):
        return None
    name = params.get("uri" if message["method"] == "resources/read" else "name")
    return name if isinstance(name, str) else None


def error_body(request_id: Any, code: int, message: str) -> bytes:
    return msgspec.json.encode({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}})


def message_of_any(body: bytes) -> dict[str, Any] | None:
    """A JSON object (any JSON-RPC message), or None."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def id_key(request_id: Any) -> str:
    """A request id as a key (ids are numbers or strings: 1 and "1" differ)."""
    return msgspec.json.encode(request_id).decode()
