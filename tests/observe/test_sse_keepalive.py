"""The SSE keepalive's byte rule (observe/http.py ``sse_keepalive``), with bytes
alone: comment lines inserted wherever the observer allows, into chunked and
close-delimited event streams cut anywhere, leave every event intact -- read
back by h11 (the HTTP framing) and a reference event-stream parser."""

from __future__ import annotations

import h11
from hypothesis import given, settings, target
from hypothesis import strategies as st

from mcp_sidecar.observe.http import HttpObserver

REQUEST = b"GET /mcp HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"


def reference_events(stream: bytes) -> tuple[list[tuple[str, str]], int]:
    """(event type, data) of each dispatched event, and the comment lines:
    the WHATWG event-stream rules, written plainly."""
    text = stream.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    events, comments, data, kind = [], 0, [], ""
    for line in text.split("\n")[:-1]:  # (an unterminated last line is not a line yet)
        if line == "":
            if data:
                events.append((kind or "message", "\n".join(data)))
            data, kind = [], ""
        elif line.startswith(":"):
            comments += 1
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                kind = value
    return events, comments


event_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20)
sse_event = st.tuples(st.sampled_from(["", "message", "update"]), st.lists(event_text, min_size=1, max_size=3))


def encode(events, eol: bytes, comments: list[bool]) -> bytes:
    out = b""
    for (kind, lines), comment in zip(events, comments, strict=False):
        if comment:
            out += b": server ping" + eol
        if kind:
            out += b"event: " + kind.encode() + eol
        for line in lines:
            out += b"data: " + line.encode() + eol
        out += eol
    return out


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(sse_event, min_size=1, max_size=6),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    comments=st.lists(st.booleans(), max_size=6),
    chunked=st.booleans(),
    chunk_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 30), min_size=1, max_size=40),
    asks=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_comments_inserted_where_allowed_leave_every_event_intact(
    events, eol, comments, chunked, chunk_sizes, cuts, asks
) -> None:
    body = encode(events, eol, comments)
    if chunked:
        framed = b""
        pos = i = 0
        while pos < len(body):
            piece = body[pos : pos + chunk_sizes[i % len(chunk_sizes)]]
            framed += b"%x\r\n%s\r\n" % (len(piece), piece)
            pos, i = pos + len(piece), i + 1
        framed += b"0\r\n\r\n"
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    else:
        framed = body
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    wire = head + framed
    observer = HttpObserver()
    observer.feed_client(REQUEST, 0.0)
    to_client = b""
    inserted = 0
    pos = i = 0
    while pos < len(wire):
        piece = wire[pos : pos + cuts[i % len(cuts)]]
        observer.feed_upstream(piece, 1.0)
        to_client += piece
        pos, i = pos + len(piece), i + 1
        if asks[i % len(asks)]:  # the upstream is silent here: may the proxy say something?
            extra = observer.sse_keepalive()
            if extra is not None:
                to_client += extra
                inserted += 1
    if not chunked:
        observer.upstream_eof(2.0)

    # Read back as a client would: h11 for the framing, the reference parser for the events.
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/mcp", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(to_client)
    if not chunked:
        client.receive_data(b"")
    received, status = b"", None
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            received += event.data
        elif isinstance(event, h11.EndOfMessage) or event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
            break
    assert status == 200
    got_events, got_comments = reference_events(received)
    want_events, want_comments = reference_events(body)
    assert got_events == want_events
    assert got_comments == want_comments + inserted
    target(inserted, label="comment lines inserted")  # (steer towards streams with many)
    assert observer.sse_keepalive() is None  # the stream is over: nothing more may go


def test_a_keepalive_goes_only_between_events_and_chunks() -> None:
    observer = HttpObserver()
    observer.feed_client(REQUEST, 0.0)
    observer.feed_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n", 0.0
    )
    assert observer.sse_keepalive() == b"c\r\n: keepalive\n\r\n"  # the stream's start is between events
    observer.feed_upstream(b"7\r\ndata: x", 0.0)
    assert observer.sse_keepalive() is None  # inside a chunk, inside an event
    observer.feed_upstream(b"\r\n", 0.0)
    assert observer.sse_keepalive() is None  # between chunks, inside an event (no blank line yet)
    observer.feed_upstream(b"4\r\n\r\n\r\n\r\n", 0.0)  # the line ends, a blank line: the event is out
    assert observer.sse_keepalive() == b"d\r\n: keepalive\r\n\r\n"  # CRLF seen: the same line endings
    observer.feed_upstream(b"1", 0.0)
    assert observer.sse_keepalive() is None  # inside the next chunk's size line
    length = HttpObserver()
    length.feed_client(REQUEST, 0.0)
    length.feed_upstream(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100\r\n\r\n", 0.0)
    assert length.sse_keepalive() is None  # its length is fixed: nothing may be added
