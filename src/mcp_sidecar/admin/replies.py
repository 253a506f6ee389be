"""A request as the admin endpoint's handlers see it, and their replies.

Rules this module keeps: plain records, no I/O; JSON replies end with a
newline (curl-friendly) and are indented (read by people as often as by
scripts).
"""

from __future__ import annotations

import json
from typing import Any


class Ask:
    """A request as a handler sees it."""

    __slots__ = ("body", "headers", "parameter", "path", "query")

    def __init__(
        self, path: str, query: str, headers: dict[str, str], parameter: str | None, body: bytes = b""
    ) -> None:
        self.path = path
        self.query = query
        self.headers = headers
        self.parameter = parameter
        self.body = body


class Reply:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes, content_type: str, headers: list[tuple[str, str]] | None = None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(payload, indent=1, sort_keys=False).encode() + b"\n"
    return Reply(status, body, "application/json", headers)
