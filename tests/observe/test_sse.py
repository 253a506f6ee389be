"""The SSE parser: CR, LF and CRLF line ends, comments, multi-line data,
and the same events however the bytes are split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.observe.sse import Comment, SseError, SseEvent, SseParser

STREAM = (
    b": keepalive\r\n\r\n"
    b"event: endpoint\ndata: /message?sessionId=abc\n\n"
    b'id: 7\rdata: {"a":\rdata: 1}\r\r'
    b"data:no-space\r\n\r\n"
    b"retry: 3000\nevent: only-fields\n\n"  # no data: not dispatched
    b"data: \xe2\x9c\x93 unicode\n\n"
)


def parse(chunks) -> list:
    parser = SseParser()
    return [e for c in chunks for e in parser.feed(c)]


EXPECTED = parse([STREAM])


def test_events() -> None:
    assert [
        Comment("keepalive"),
        SseEvent("endpoint", "/message?sessionId=abc"),
        SseEvent("message", '{"a":\n1}', "7"),
        SseEvent("message", "no-space", "7"),  # the last event id persists (WHATWG)
        SseEvent("message", "\u2713 unicode", "7"),
    ] == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_chunking_does_not_matter(cuts) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert parse(chunks) == EXPECTED


def test_every_boundary_at_once() -> None:
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_bounded_line() -> None:
    parser = SseParser(max_line=100)
    try:
        parser.feed(b"data: " + b"x" * 200)
    except SseError:
        return
    raise AssertionError("an over-long line must raise")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_fuzz(data: bytes) -> None:
    try:
        SseParser(max_line=1000).feed(data)
    except SseError:
        pass
