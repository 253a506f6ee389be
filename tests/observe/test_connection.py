"""One connection's protocol machine, with bytes alone (observe/connection.py):
sniffing, the handover to WebSocket, and the byte-rewriting rules of the
keepalive, as the module states them."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from mcp_sidecar.observe.connection import (
    KEEPALIVE_PAYLOAD_LEN,
    ConnectionObserver,
    Mode,
    Sniff,
    sniff_request,
    transport_label,
)
from mcp_sidecar.observe.events import (
    ExchangeDone,
    FramesCounted,
    HttpDetected,
    JsonRpcSeen,
    KeepaliveAnswered,
    NotificationSeen,
    Opaque,
    PingAnswered,
    ResponseStarted,
    WebSocketOpened,
)
from mcp_sidecar.observe.websocket import FrameScanner

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, prev = [], 0
    for p in [*points, len(data)]:
        chunks.append(data[prev:p])
        prev = p
    return [c for c in chunks if c]


def test_the_one_request_line_sniffer() -> None:
    assert sniff_request(b"GET / HTTP/1.1\r\n") is Sniff.HTTP
    assert sniff_request(b"OPTIONS ") is Sniff.HTTP
    assert sniff_request(b"POS") is Sniff.MAYBE and sniff_request(b"") is Sniff.MAYBE
    assert sniff_request(b"\x16\x03\x01") is Sniff.NOT_HTTP  # a TLS ClientHello
    assert sniff_request(b"GETX / HTTP/1.1") is Sniff.NOT_HTTP
    assert sniff_request(b"SSH-2.0-OpenSSH") is Sniff.NOT_HTTP
    assert sniff_request(b"get / HTTP/1.1") is Sniff.NOT_HTTP  # methods are case-sensitive


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_sniffing_does_not_depend_on_how_the_first_bytes_are_split(cuts) -> None:
    request = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    observer = ConnectionObserver("auto")
    events = []
    for chunk in split(request, cuts):
        events += observer.client(chunk, 0.0)
    assert observer.mode is Mode.HTTP and isinstance(events[0], HttpDetected)
    opaque = ConnectionObserver("auto")
    got = []
    for chunk in split(b"\x00\x01binary protocol", cuts):
        got += opaque.client(chunk, 0.0)
    assert opaque.mode is Mode.TCP and got == [Opaque()] and not opaque.observing


def test_an_upstream_that_speaks_first_is_not_http() -> None:
    observer = ConnectionObserver("auto")
    assert list(observer.upstream(b"220 smtp.example ESMTP\r\n", 0.0)) == [Opaque()]
    assert observer.mode is Mode.TCP and list(observer.client(b"GET / HTTP/1.1\r\n\r\n", 0.0)) == []


def test_a_websocket_handover_counts_frames_and_classifies_mcp() -> None:
    observer = ConnectionObserver("http")
    observer.client(UPGRADE, 0.0)
    client = Connection(ConnectionType.CLIENT)
    first = client.send(TextMessage(data='{"jsonrpc":"2.0","id":1,"method":"ping"}'))
    events = list(observer.upstream(SWITCHED, 1.0))
    assert [type(e) for e in events] == [ResponseStarted, ExchangeDone, WebSocketOpened]
    assert observer.mode is Mode.WEBSOCKET
    events = list(observer.client(first + client.send(TextMessage(data='{"jsonrpc":"2.0","method":"n/x"}')), 2.0))
    rpc = [e for e in events if isinstance(e, JsonRpcSeen)]
    assert len(rpc) == 1 and rpc[0].message.method == "ping" and transport_label(rpc[0].transport) == "websocket"
    assert any(isinstance(e, NotificationSeen) and not e.progress for e in events)
    (counted,) = [e for e in events if isinstance(e, FramesCounted)]
    assert counted.side == "client" and counted.counts["text"][0] == 2


def test_a_peer_ping_meets_its_pong() -> None:
    observer = ConnectionObserver("http")
    observer.client(UPGRADE, 0.0)
    observer.upstream(SWITCHED, 0.0)
    client, server = Connection(ConnectionType.CLIENT), Connection(ConnectionType.SERVER)
    observer.client(client.send(Ping(payload=b"abc")), 1.0)
    events = list(observer.upstream(server.send(Pong(payload=b"abc")), 1.25))
    assert PingAnswered(0.25) in events


# --- the keepalive's byte rewriting, rule by rule -------------------------------------------


def _opened(keepalive: bool = True) -> ConnectionObserver:
    observer = ConnectionObserver("http", keepalive=keepalive)
    observer.client(UPGRADE, 0.0)
    observer.upstream(SWITCHED, 0.0)
    assert observer.mode is Mode.WEBSOCKET
    return observer


def _frames(data: bytes) -> list[tuple[str, bytes | None, bool]]:
    return [(f.opcode, f.payload, f.masked) for f in FrameScanner().feed(data)]


def test_our_pings_are_valid_frames_unmasked_to_the_client_masked_to_the_upstream() -> None:
    observer = _opened()
    to_client = observer.keepalive_ping("client", 1.0)
    to_upstream = observer.keepalive_ping("upstream", 1.0)
    assert to_client is not None and to_upstream is not None
    ((opcode, payload, masked),) = _frames(to_client)
    assert (opcode, masked, len(payload)) == ("ping", False, KEEPALIVE_PAYLOAD_LEN)
    assert payload.startswith(b"mcp-sidecar:")
    ((opcode, payload2, masked),) = _frames(to_upstream)
    assert (opcode, masked, len(payload2)) == ("ping", True, KEEPALIVE_PAYLOAD_LEN)
    # One outstanding per side; none without the keepalive, none after a close frame.
    assert observer.keepalive_ping("client", 2.0) is None
    assert _opened(keepalive=False).keepalive_ping("client", 1.0) is None
    closing = _opened()
    closing.client(Connection(ConnectionType.CLIENT).send(CloseConnection(1000)), 1.0)
    assert closing.closing and closing.keepalive_ping("upstream", 1.0) is None


def test_no_ping_in_the_middle_of_a_frame() -> None:
    observer = _opened()
    server = Connection(ConnectionType.SERVER)
    frame = server.send(BytesMessage(data=b"x" * 1000))
    observer.upstream(frame[:10], 1.0)  # a frame towards the client is half through
    assert observer.keepalive_ping("client", 1.0) is None
    observer.upstream(frame[10:], 1.0)
    assert observer.keepalive_ping("client", 1.0) is not None


client_messages = st.lists(
    st.one_of(
        st.builds(TextMessage, data=st.text(max_size=80), message_finished=st.just(True)),
        st.builds(BytesMessage, data=st.binary(max_size=300), message_finished=st.just(True)),
        st.builds(Ping, payload=st.binary(max_size=40)),
        st.builds(Pong, payload=st.binary(min_size=KEEPALIVE_PAYLOAD_LEN, max_size=KEEPALIVE_PAYLOAD_LEN)),
        st.builds(Pong, payload=st.binary(max_size=40)),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(client_messages, client_messages, st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_only_our_pong_is_removed_and_every_other_byte_passes_in_order(before, after, cuts) -> None:
    """Rules 1, 3, 4: whatever the chunking, the client's stream reaches the
    upstream unchanged but for the one pong that answers our ping."""
    observer = _opened()
    ping = observer.keepalive_ping("client", 1.0)
    assert ping is not None
    ours = _frames(ping)[0][1]
    client = Connection(ConnectionType.CLIENT)
    head = b"".join(client.send(m) for m in before)
    answer = client.send(Pong(payload=ours))
    tail = b"".join(client.send(m) for m in after)
    forwarded = bytearray()
    answered = []
    for chunk in split(head + answer + tail, cuts):
        if observer.rewriting:
            out, events = observer.rewrite("client", chunk, 2.0)
            forwarded += out
            answered += [e for e in events if isinstance(e, KeepaliveAnswered)]
        else:
            forwarded += chunk
            observer.client(chunk, 2.0)
    out, _ = observer.rewrite("client", b"", 3.0)  # EOF: nothing may stay held
    forwarded += out
    assert bytes(forwarded) == head + tail
    assert answered == [KeepaliveAnswered("client", 1.0)]
    assert not observer.rewriting


@settings(max_examples=100, deadline=None)
@given(client_messages, st.lists(st.integers(min_value=0, max_value=500), max_size=8), st.integers(0, 60))
def test_held_bytes_come_back_whole_when_observation_stops(messages, cuts, stop_at) -> None:
    """Rule 4: bytes held for a pong that may be ours go out, in order, when
    observation stops midway (``release``)."""
    observer = _opened()
    assert observer.keepalive_ping("client", 1.0) is not None
    client = Connection(ConnectionType.CLIENT)
    stream = b"".join(client.send(m) for m in messages) + client.send(Pong(payload=os.urandom(32)))
    chunks = split(stream, cuts)
    forwarded = bytearray()
    for i, chunk in enumerate(chunks):
        if i == stop_at % (len(chunks) + 1):
            observer.stop(Mode.FAILED)
        if observer.observing and observer.rewriting:
            out, _ = observer.rewrite("client", chunk, 2.0)
            forwarded += out
        elif observer.observing:
            forwarded += chunk
            observer.client(chunk, 2.0)
        else:
            forwarded += observer.release("client", chunk)
    forwarded += observer.release("client", b"")
    assert bytes(forwarded) == stream  # nobody's pong answered ours: nothing removed
