"""The Inspector v2 API envelope, read from a recorded conversation split at every boundary.

The conversation follows the wire format of the real Inspector 2.12.0 (as
observed through the sidecar; the demo in mcp_sidecar/demo/inspector_v2.py
speaks the same): the page and /api/config
on one keep-alive connection, the event stream on a second one, then
connect, a tools/call with a progress notification, and disconnect.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.observe.events import ExchangeDone, JsonRpcSeen, SseSeen
from mcp_sidecar.observe.http import HttpObserver
from mcp_sidecar.observe.jsonrpc import to_mapping
from mcp_sidecar.observe.mcp import McpTracker


def http_request(method: str, target: str, body: dict | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {target} HTTP/1.1\r\nHost: 192.0.2.7:6274\r\nOrigin: http://192.0.2.7:6274\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return head.encode() + b"\r\n" + payload


def http_response(status: int, body: bytes, ctype: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


CALL = {
    "jsonrpc": "2.0",
    "id": 4,
    "method": "tools/call",
    "params": {"name": "slow", "arguments": {}, "_meta": {"progressToken": "p4"}},
}
PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "p4", "progress": 1}}
RESULT = {"jsonrpc": "2.0", "id": 4, "result": {"content": [{"type": "text", "text": "done"}]}}


def event(message: dict, kind: str = "message") -> bytes:
    """One chunk of v2's event stream, as the real 2.12 sends it (event name and type agree)."""
    line = b"event: " + kind.encode() + b"\ndata: " + json.dumps({"type": kind, "data": message}).encode() + b"\n\n"
    return b"%x\r\n" % len(line) + line + b"\r\n"


#: The API connection (keep-alive): page, config, connect, send, disconnect.
API = [
    ("client", http_request("GET", "/")),
    ("upstream", http_response(200, b'<script>window.__INSPECTOR_API_TOKEN__ = "t";</script>', "text/html")),
    ("client", http_request("GET", "/api/config")),
    ("upstream", http_response(200, b'{"sandboxUrl":"http://192.0.2.7:6275/sandbox"}')),
    ("client", http_request("POST", "/api/mcp/connect", {"config": {"command": "server"}})),
    ("upstream", http_response(200, b'{"sessionId":"S9"}')),
    ("client", http_request("POST", "/api/mcp/send", {"sessionId": "S9", "message": CALL})),
    ("upstream", http_response(200, b'{"ok":true}')),
    ("client", http_request("POST", "/api/mcp/disconnect", {"sessionId": "S9"})),
    ("upstream", http_response(200, b'{"ok":true}')),
]
#: The event stream's connection: the progress notification and the result, never ended by the server.
EVENTS = [
    ("client", http_request("GET", "/api/mcp/events?sessionId=S9")),
    (
        "upstream",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\n:\n\n\r\n" + event({"message": "Starting server"}, "stdio_log") + event(PROGRESS) + event(RESULT),
    ),
]


def feed(observer: HttpObserver, script, cuts_by_step, now: float) -> list:
    events = []
    for (side, data), cuts in zip(script, cuts_by_step, strict=False):
        points = sorted({c % (len(data) + 1) for c in cuts})
        prev = 0
        for p in [*points, len(data)]:
            events += (observer.feed_client if side == "client" else observer.feed_upstream)(data[prev:p], now)
            prev = p
    return events


def conversation(api_cuts, events_cuts) -> tuple[list, list, McpTracker]:
    api, stream = HttpObserver(), HttpObserver()
    # Interleaved as a browser does: the stream opens after connect, the answer arrives after the send.
    seen = feed(api, API[:6], api_cuts[:6], 1.0)
    seen += feed(stream, EVENTS[:1], events_cuts[:1], 2.0)
    seen += feed(api, API[6:8], api_cuts[6:8], 3.0)
    seen += feed(stream, EVENTS[1:], events_cuts[1:], 4.0)
    seen += feed(api, API[8:], api_cuts[8:], 5.0)
    seen += stream.abort(6.0)  # the browser closes the stream (v2's streams never end on their own)
    tracker = McpTracker()
    outcomes = []
    for e in seen:
        if isinstance(e, JsonRpcSeen):
            outcomes += tracker.message(e.origin, e.message, e.at, e.session, e.transport)
    return seen, outcomes, tracker


def summary(seen, outcomes) -> list:
    out = []
    for e in seen:
        if isinstance(e, ExchangeDone):
            x = e.exchange
            out.append(("exchange", x.method, x.path, x.status, x.aborted, x.session))
        elif isinstance(e, JsonRpcSeen):
            out.append(("jsonrpc", e.origin, json.dumps(to_mapping(e.message), sort_keys=True), e.session, e.transport))
        elif isinstance(e, SseSeen):
            out.append(("sse", e.event, e.keepalive))
    return out + [("outcome", o.method, o.status, o.duration_s, o.transport) for o in outcomes]


EXPECTED = summary(*conversation([[]] * len(API), [[]] * len(EVENTS))[:2])


def test_the_v2_envelope_is_read_and_correlated_across_connections() -> None:
    _seen, _outcomes, tracker = conversation([[]] * len(API), [[]] * len(EVENTS))
    exchanges = [e for e in EXPECTED if e[0] == "exchange"]
    assert [(m, p, s, a) for _, m, p, s, a, _ in exchanges] == [
        ("GET", "/", 200, False),
        ("GET", "/api/config", 200, False),
        ("POST", "/api/mcp/connect", 200, False),
        ("POST", "/api/mcp/send", 200, False),
        ("POST", "/api/mcp/disconnect", 200, False),
        ("GET", "/api/mcp/events", 200, True),
    ]  # the stream: aborted by the client, counted as such
    jsonrpc = [(e[1], json.loads(e[2]).get("method"), e[3], e[4]) for e in EXPECTED if e[0] == "jsonrpc"]
    assert jsonrpc == [
        ("client", "tools/call", "S9", "inspector-v2"),
        ("upstream", "notifications/progress", "S9", "inspector-v2"),
        ("upstream", None, "S9", "inspector-v2"),
    ]
    assert [e for e in EXPECTED if e[0] == "outcome"] == [("outcome", "tools/call", "ok", 1.0, "inspector-v2")]
    assert tracker.progress == 1 and tracker.pending == 0
    assert ("sse", "comment", True) in EXPECTED


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.integers(min_value=0), max_size=5), min_size=len(API), max_size=len(API)),
    st.lists(st.lists(st.integers(min_value=0), max_size=8), min_size=len(EVENTS), max_size=len(EVENTS)),
)
def test_the_events_do_not_depend_on_chunking(api_cuts, events_cuts) -> None:
    assert summary(*conversation(api_cuts, events_cuts)[:2]) == EXPECTED
