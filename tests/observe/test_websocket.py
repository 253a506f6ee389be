"""The frame scanner against frames made by wsproto (a real implementation)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from mcp_sidecar.observe.websocket import FrameScanner, WebSocketError


def encode(events, client: bool) -> bytes:
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    return b"".join(conn.send(e) for e in events)


messages = st.lists(
    st.one_of(
        st.builds(TextMessage, data=st.text(max_size=300), message_finished=st.just(True)),
        st.builds(BytesMessage, data=st.binary(max_size=70000), message_finished=st.just(True)),
        st.builds(Ping, payload=st.binary(max_size=125)),
        st.builds(Pong, payload=st.binary(max_size=125)),
    ),
    max_size=12,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[prev:p])
        prev = p
    return chunks


def scan(chunks: list[bytes]) -> list[tuple]:
    scanner = FrameScanner()
    frames = [f for c in chunks for f in scanner.feed(c)]
    # Frames tile the stream: each starts where the previous ended.
    assert [f.start for f in frames] == ([0] + [f.end for f in frames[:-1]])[: len(frames)]
    assert scanner.at_boundary and scanner.position == sum(len(c) for c in chunks)
    return [(f.opcode, f.fin, f.length, f.masked, f.payload, f.close_code, f.close_reason) for f in frames]


@settings(max_examples=150, deadline=None)
@given(events=messages, client=st.booleans(), cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_events_do_not_depend_on_chunking(events, client: bool, cuts) -> None:
    data = encode(events, client)
    whole = scan([data])
    assert scan(split(data, cuts)) == whole
    if len(data) <= 3000:  # every possible boundary at once: one byte at a time
        assert scan([data[i : i + 1] for i in range(len(data))]) == whole
    # What was sent is what is seen: opcodes, masking, text and control payloads.
    assert len(whole) == len(events)
    for frame, event in zip(whole, events, strict=True):
        opcode, fin, length, masked, payload, _, _ = frame
        assert masked is client and fin
        if isinstance(event, TextMessage):
            assert opcode == "text" and payload == event.data.encode()
        elif isinstance(event, BytesMessage):
            assert opcode == "binary" and length == len(event.data) and payload is None
        elif isinstance(event, Ping):
            assert opcode == "ping" and payload == event.payload
        else:
            assert opcode == "pong" and payload == event.payload


def test_fragmented_text_is_reassembled_and_close_decoded() -> None:
    data = encode(
        [
            TextMessage(data="hel", message_finished=False),
            TextMessage(data="lo", message_finished=True),
            CloseConnection(code=CloseReason.GOING_AWAY, reason="bye"),
        ],
        client=True,
    )
    frames = FrameScanner().feed(data)
    assert [(f.opcode, f.fin) for f in frames] == [("text", False), ("continuation", True), ("close", True)]
    assert frames[1].payload == b"hello"
    assert (frames[2].close_code, frames[2].close_reason) == (1001, "bye")


def test_large_text_is_counted_not_copied() -> None:
    data = encode([TextMessage(data="x" * 1000)], client=False)
    frames = FrameScanner(max_text=100).feed(data)
    assert frames[0].length == 1000 and frames[0].payload is None


@pytest.mark.parametrize("bad", [b"\x83\x00", b"\x89\x7e\x00\x80" + b"x" * 128, b"\x09\x00"])
def test_protocol_violations_raise(bad: bytes) -> None:
    with pytest.raises(WebSocketError):
        FrameScanner().feed(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_raises_only_websocket_error(data: bytes) -> None:
    try:
        FrameScanner().feed(data)
    except WebSocketError:
        pass
