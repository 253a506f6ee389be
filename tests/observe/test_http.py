"""The HTTP observer on recorded byte streams, split at every boundary."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from mcp_sidecar.observe.http import (
    MAX_BUFFERED_BYTES,
    MAX_JSON_BYTES,
    MAX_PIPELINE,
    ExchangeDone,
    HttpObserver,
    HttpObserverError,
    JsonRpcSeen,
    SessionEndpoint,
    SseSeen,
    Tunneled,
    Upgraded,
)
from mcp_sidecar.observe.jsonrpc import MAX_ID_KEY_CHARS, bounded_text, to_mapping
from mcp_sidecar.observe.mcp import McpTracker, method_label

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
INIT_BODY = json.dumps(INIT).encode()
INIT_REPLY = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}}).encode()
PING_REPLY = b'{"jsonrpc":"2.0","id":2,"result":{}}'

# A keep-alive conversation: a JSON POST, a POST answered with SSE (CRLF, a
# comment keep-alive, CR-only line ends), a HEAD, then a WebSocket upgrade.
SCRIPT: list[tuple[str, bytes]] = [
    (
        "client",
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(INIT_BODY)).encode()
        + b"\r\n\r\n"
        + INIT_BODY,
    ),
    (
        "upstream",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: S1\r\nContent-Length: "
        + str(len(INIT_REPLY)).encode()
        + b"\r\n\r\n"
        + INIT_REPLY,
    ),
    (
        "client",
        b"POST /mcp?x=1 HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: S1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n24\r\n" + b'{"jsonrpc":"2.0","id":2,"method":"pi' + b"\r\n"
        b'5\r\nng"}\n\r\n0\r\n\r\n',
    ),
    (
        "upstream",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"f\r\n: keepalive\r\n\r\n\r\n"
        + hex(len(b"event: message\rdata: " + PING_REPLY + b"\r\r"))[2:].encode()
        + b"\r\nevent: message\rdata: "
        + PING_REPLY
        + b"\r\r\r\n0\r\n\r\n",
    ),
    ("client", b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("upstream", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
    (
        "client",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ),
    (
        "upstream",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        + Connection(ConnectionType.SERVER).send(TextMessage(data="hi")),
    ),
]


def describe(events) -> list:
    out = []
    for e in events:
        if isinstance(e, ExchangeDone):
            x = e.exchange
            out.append(
                (
                    "exchange",
                    x.method,
                    x.path,
                    x.status,
                    x.request_bytes,
                    x.response_bytes,
                    x.content_type,
                    x.session,
                    x.sse_events,
                )
            )
        elif isinstance(e, JsonRpcSeen):
            out.append(("jsonrpc", e.origin, json.dumps(to_mapping(e.message), sort_keys=True), e.session, e.transport))
        elif isinstance(e, SseSeen):
            out.append(("sse", e.event, e.keepalive))
        elif isinstance(e, Upgraded):
            out.append(["upgraded", e.client_trailing, e.upstream_trailing])
        elif isinstance(e, Tunneled):  # bytes after the 101 belong to the upgrade, however they arrive
            upgraded = next(x for x in out if x[0] == "upgraded")
            upgraded[1 if e.side == "client" else 2] += e.data
        elif isinstance(e, SessionEndpoint):
            out.append(("endpoint", e.session))
    return out


def run(script, cuts_by_step) -> list:
    observer = HttpObserver()
    events = []
    for (side, data), cuts in zip(script, cuts_by_step, strict=False):
        points = sorted({c % (len(data) + 1) for c in cuts})
        prev = 0
        for p in [*points, len(data)]:
            chunk = data[prev:p]
            prev = p
            feed = observer.feed_client if side == "client" else observer.feed_upstream
            events += feed(chunk, 0.0)
    return describe(events)


EXPECTED = run(SCRIPT, [[] for _ in SCRIPT])


def test_recorded_conversation() -> None:
    assert [e[:4] for e in EXPECTED if e[0] == "exchange"] == [
        ("exchange", "POST", "/mcp", 200),
        ("exchange", "POST", "/mcp", 200),
        ("exchange", "HEAD", "/health", 200),
        ("exchange", "GET", "other", 101),
    ]
    jsonrpc = [e for e in EXPECTED if e[0] == "jsonrpc"]
    # A response correlates under the session its request named (initialize has none yet).
    assert [(e[1], e[3], e[4]) for e in jsonrpc] == [
        ("client", None, "http"),
        ("upstream", None, "http"),
        ("client", "S1", "http"),
        ("upstream", "S1", "sse"),
    ]
    assert ("sse", "comment", True) in EXPECTED and ("sse", "message", False) in EXPECTED
    upgraded = next(e for e in EXPECTED if e[0] == "upgraded")
    assert upgraded[2] == Connection(ConnectionType.SERVER).send(TextMessage(data="hi"))
    head = next(e for e in EXPECTED if e[0] == "exchange" and e[1] == "HEAD")
    assert head[5] == 0  # a HEAD response has no body, whatever Content-Length says


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0), max_size=6), min_size=len(SCRIPT), max_size=len(SCRIPT)))
def test_events_do_not_depend_on_chunking(cuts) -> None:
    assert run(SCRIPT, cuts) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert run(SCRIPT, [list(range(len(d))) for _, d in SCRIPT]) == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_fuzz_raises_only_observer_error(client: bytes, upstream: bytes) -> None:
    observer = HttpObserver()
    try:
        observer.feed_client(b"POST /mcp HTTP/1.1\r\nHost: x\r\n" + client, 0.0)
        observer.feed_upstream(upstream, 0.0)
    except HttpObserverError:
        pass


def test_mcp_tracker_outcomes_and_bounded_labels() -> None:
    t = McpTracker(timeout_s=10)
    assert t.message("client", {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}, 0.0, "S") == []
    out = t.message("upstream", {"jsonrpc": "2.0", "id": 1, "result": {}}, 0.5, "S")
    assert [(o.method, o.status, o.duration_s) for o in out] == [("tools/call", "ok", 0.5)]
    t.message("client", {"jsonrpc": "2.0", "id": "a", "method": "x/unknown"}, 1.0, "S")
    out = t.message("upstream", {"jsonrpc": "2.0", "id": "a", "error": {"code": -32601}}, 1.2, "S")
    assert [(o.method, o.status) for o in out] == [("other", "-32601")]
    t.message("client", {"jsonrpc": "2.0", "id": 7, "method": "tools/call"}, 2.0, "S")
    out = t.message(
        "client",
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "timed out"}},
        3.0,
        "S",
    )
    assert [(o.method, o.status) for o in out] == [("tools/call", "cancelled")]
    t.message("client", {"jsonrpc": "2.0", "id": 8, "method": "ping"}, 4.0, "S")
    assert [(o.method, o.status) for o in t.sweep(14.5)] == [("ping", "timeout")]
    # a response with an odd error code, from a server-initiated request
    t.message("upstream", {"jsonrpc": "2.0", "id": 9, "method": "roots/list"}, 5.0, "S")
    out = t.message("client", {"jsonrpc": "2.0", "id": 9, "error": {"code": 12345}}, 5.1, "S")
    assert [(o.method, o.status, o.origin) for o in out] == [("roots/list", "other_error", "upstream")]
    assert {method_label(f"m{i}") for i in range(10_000)} == {"other"}
    assert t.pending == 0


def exchanges(events) -> list[tuple]:
    return [
        (e.exchange.method, e.exchange.path, e.exchange.status, e.exchange.response_bytes)
        for e in events
        if isinstance(e, ExchangeDone)
    ]


def test_pipelined_requests_are_answered_in_order() -> None:
    observer = HttpObserver()
    get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    assert observer.feed_client(get + b"HEAD /mcp HTTP/1.1\r\nHost: x\r\n\r\n" + get, 0.0) == []
    answers = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"  # HEAD: no body, whatever it says
        b"HTTP/1.1 204 No Content\r\n\r\n"
    )
    assert exchanges(observer.feed_upstream(answers, 1.0)) == [
        ("GET", "/health", 200, 2),
        ("HEAD", "/mcp", 200, 0),
        ("GET", "/health", 204, 0),
    ]


def test_a_declined_upgrade_leaves_the_connection_http() -> None:
    observer = HttpObserver()
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    # The client pipelines a plain request behind the proposal; only the answer says which it is.
    observer.feed_client(upgrade + b"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    events = observer.feed_upstream(
        b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1.0
    )
    assert exchanges(events) == [("GET", "other", 426, 0), ("GET", "/mcp", 200, 0)]
    assert not observer.upgraded


def test_informational_responses_and_connect_tunnels() -> None:
    observer = HttpObserver()
    observer.feed_client(b"POST /mcp HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", 0.0)
    events = observer.feed_upstream(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n", 1.0
    )
    assert exchanges(events) == [("POST", "/mcp", 202, 0)]
    observer.feed_client(b"CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\n\r\n\x16\x03", 2.0)
    events = observer.feed_upstream(b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03", 3.0)
    upgraded = [e for e in events if isinstance(e, Upgraded)]
    assert exchanges(events) == [("OTHER", "other", 200, 0)]
    assert [(u.websocket, u.client_trailing, u.upstream_trailing) for u in upgraded] == [
        (False, b"\x16\x03", b"\x16\x03\x03")
    ]


def test_bytes_after_connection_close_and_unbounded_pipelines_are_refused() -> None:
    observer = HttpObserver()
    observer.feed_client(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0.0)
    with pytest.raises(HttpObserverError):
        observer.feed_client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    observer = HttpObserver()
    observer.feed_client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0.0)
    observer.feed_upstream(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 0.0)
    with pytest.raises(HttpObserverError):
        observer.feed_upstream(b"HTTP/1.1 200 OK\r\n\r\n", 0.0)
    observer = HttpObserver()
    with pytest.raises(HttpObserverError, match="unanswered"):
        observer.feed_client(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * (MAX_PIPELINE + 1), 0.0)
    observer = HttpObserver()  # a proposal left unanswered does not buffer without bound
    observer.feed_client(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 0.0)
    with pytest.raises(HttpObserverError, match="upgrade"):
        observer.feed_client(b"x" * (MAX_BUFFERED_BYTES + 1), 0.0)


PIPELINE: list[tuple[str, bytes]] = [
    # Three requests at once (one with a chunked body), then their answers at once:
    # a JSON reply, an SSE stream that ends, a HEAD with a Content-Length and no body.
    ("client", SCRIPT[0][1] + SCRIPT[2][1] + b"HEAD /mcp HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("upstream", SCRIPT[1][1] + SCRIPT[3][1] + b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 20\r\n\r\n"),
]
PIPELINE_EXPECTED = run(PIPELINE, [[], []])


def test_pipelined_conversation() -> None:
    assert [e[:4] for e in PIPELINE_EXPECTED if e[0] == "exchange"] == [
        ("exchange", "POST", "/mcp", 200),
        ("exchange", "POST", "/mcp", 200),
        ("exchange", "HEAD", "/mcp", 405),
    ]
    assert [(e[1], e[4]) for e in PIPELINE_EXPECTED if e[0] == "jsonrpc"] == [
        ("client", "http"),
        ("client", "http"),
        ("upstream", "http"),
        ("upstream", "sse"),
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0), max_size=12), min_size=2, max_size=2))
def test_pipelined_events_do_not_depend_on_chunking(cuts) -> None:
    assert run(PIPELINE, cuts) == PIPELINE_EXPECTED


def test_a_json_body_over_the_bound_is_counted_not_parsed() -> None:
    observer = HttpObserver()
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"blob":"' + b"x" * MAX_JSON_BYTES + b'"}}'
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    events = []
    data = head + body
    for i in range(0, len(data), 65536):  # as the pump would hand it over
        events += observer.feed_client(data[i : i + 65536], 0.0)
    assert [type(e).__name__ for e in events] == ["BodyTooLarge"]
    assert events[0].origin == "client"
    assert observer.memory.held == 0  # what was collected was given back
    reply = b'{"jsonrpc":"2.0","id":1,"result":{}}'
    events = observer.feed_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(reply) + reply, 1.0
    )
    assert [type(e).__name__ for e in events] == ["ResponseStarted", "JsonRpcSeen", "ExchangeDone"]
    assert events[2].exchange.request_bytes == len(body) and events[2].exchange.jsonrpc_requests == 0


def test_a_long_session_id_is_held_as_its_digest_on_every_transport() -> None:
    """Regression: a session id is the peer's text, as long as a head (64 KiB)
    or a body: held as it came, it keyed the route's sessions (10,000 of them:
    640 MiB) and went into every second's report to the supervisor, which a
    client sending distinct long ids made larger than the channel's frame (the
    worker was lost).  Past MAX_ID_KEY_CHARS it is held as its digest; the
    request and its answer still share it."""
    long = "S" * (60 * 1024)
    held = bounded_text(long)
    assert held.startswith("sha256:") and len(held) <= MAX_ID_KEY_CHARS
    call = b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}'
    reply = b'{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}'
    # Streamable HTTP: the request's Mcp-Session-Id, the answer's.
    streamable = [
        (
            "client",
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nMcp-Session-Id: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (long.encode(), len(call), call),
        ),
        (
            "upstream",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (long.encode(), len(reply), reply),
        ),
    ]
    events = run(streamable, [[] for _ in streamable])
    assert [e[3] for e in events if e[0] == "jsonrpc"] == [held, held]
    assert [e[7] for e in events if e[0] == "exchange"] == [held]
    # The 2024-11-05 transport: the endpoint event's ?sessionId= and the POST's.
    endpoint = b"event: endpoint\ndata: /message?sessionId=%s\n\n" % long.encode()
    legacy = [
        ("client", b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"),
        ("upstream", b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + endpoint),
    ]
    assert [e for e in run(legacy, [[] for _ in legacy]) if e[0] == "endpoint"] == [("endpoint", held)]
    post = [
        (
            "client",
            b"POST /message?sessionId=%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (long.encode(), len(call), call),
        ),
    ]
    assert [e[3] for e in run(post, [[]]) if e[0] == "jsonrpc"] == [held]
    # The Inspector v2 API's envelope.
    envelope = json.dumps({"sessionId": long, "message": json.loads(call)}).encode()
    v2 = [
        (
            "client",
            b"POST /api/mcp/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(envelope), envelope),
        ),
    ]
    assert [e[3] for e in run(v2, [[]]) if e[0] == "jsonrpc"] == [held]


def test_the_path_label_cache_holds_short_targets_only(monkeypatch) -> None:
    """Regression: the cache kept any target a peer sent, up to 1024 of them
    as long as a head (64 MiB held for good); now only short ones."""
    from mcp_sidecar.observe import mcphttp

    monkeypatch.setattr(mcphttp, "_PATH_LABELS", {})
    long = b"/mcp?" + b"q" * (60 * 1024)
    assert mcphttp.path_label(long) == "/mcp"
    assert mcphttp.path_label(b"/message?sessionId=1") == "/message"
    assert mcphttp.path_label(long + b"x") == "/mcp"
    assert list(mcphttp._PATH_LABELS) == [b"/message?sessionId=1"]
    assert sum(len(k) for k in mcphttp._PATH_LABELS) <= mcphttp._CACHE_BOUND * mcphttp._CACHED_TARGET_BYTES


def test_a_response_media_type_is_kept_to_its_longest_legal_length() -> None:
    """The upstream's Content-Type may be as long as a head: what the
    connection's facts keep (and /api/connections lists, up to 1000 a page)
    is at most a legal media type's 255 characters."""
    ctype = b"application/" + b"x" * (60 * 1024)
    script = [
        ("client", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("upstream", b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype + b"; charset=utf-8\r\nContent-Length: 0\r\n\r\n"),
    ]
    (done,) = [e for e in run(script, [[], []]) if e[0] == "exchange"]
    assert done[6] == ctype[:255].decode()
