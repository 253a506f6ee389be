"""MCP faults on the 2024-11-05 HTTP+SSE transport (sans-io): a request is
POSTed on one connection (``/messages/?session_id=S``, answered ``202``)
and its answer comes as an event on the session's stream, another
connection (``GET /sse``, whose first event names the session).

Rules this module keeps:

* A stream is known by the session its ``endpoint`` event names; the route
  keeps its streams (``LegacyStreams``, at most ``MAX_STREAMS``, a stream
  forgotten when it ends) so that a POST's fault can reach its answer.
* ``error``: the POST is answered ``202`` by the sidecar (not forwarded) and
  an ``event: message`` with the JSON-RPC error is written on the stream,
  between two events.  ``delay``, ``drop``, ``cut``: the POST is forwarded,
  its answer on the stream (matched by id) held, never delivered, or the
  stream closed before it.  ``http_status`` answers the POST itself (a 404:
  the session is gone, as a server says it).
* Only streams of this worker are known: under several workers a POST
  whose stream is in another worker gets no ``error``/``delay``/``drop``/
  ``cut`` (it passes; said in docs/faults.md).
"""

from __future__ import annotations

import urllib.parse
from collections import OrderedDict
from typing import Any

from .book import ActiveFault
from .http import read_event

#: Streams a route remembers (the oldest forgotten beyond).
MAX_STREAMS = 1024


def session_in_target(target: str) -> str | None:
    """The session a legacy POST names in its query (``session_id`` or ``sessionId``)."""
    query = urllib.parse.urlsplit(target).query
    for key, value in urllib.parse.parse_qsl(query):
        if key in ("session_id", "sessionId") and value:
            return value
    return None


def endpoint_session(event: bytes) -> str | None:
    """The session an ``event: endpoint`` names (its data is the POST URL)."""
    parsed, _ = read_event(event)
    if parsed is None or parsed.event != "endpoint":
        return None
    return session_in_target(parsed.data.strip())


def event_data(event: bytes) -> bytes | None:
    """A ``message`` event's data (None for other events)."""
    parsed, _ = read_event(event)
    return parsed.data.encode() if parsed is not None and parsed.event == "message" else None


def message_event(body: bytes) -> bytes:
    return b"event: message\r\ndata: " + body + b"\r\n\r\n"


class LegacyStream:
    """One stream's side of the faults: its session, the answers they act on (by id)."""

    def __init__(self) -> None:
        self.session: str | None = None
        self.plans: dict[str, ActiveFault] = {}
        #: The forwarding side's handle (the connection's writer), set by the pump.
        self.handle: Any = None


class LegacyStreams:
    """A route's known streams, by session."""

    def __init__(self) -> None:
        self._by_session: OrderedDict[str, LegacyStream] = OrderedDict()

    def register(self, stream: LegacyStream) -> None:
        if stream.session is None:
            return
        self._by_session[stream.session] = stream
        self._by_session.move_to_end(stream.session)
        while len(self._by_session) > MAX_STREAMS:
            self._by_session.popitem(last=False)

    def forget(self, stream: LegacyStream) -> None:
        if stream.session is not None and self._by_session.get(stream.session) is stream:
            del self._by_session[stream.session]

    def get(self, session: str | None) -> LegacyStream | None:
        return None if session is None else self._by_session.get(session)
