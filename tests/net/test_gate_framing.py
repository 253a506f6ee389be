"""The gate frames requests as llhttp does (issue: a gate that frames
differently from what is behind it can be walked around: request smuggling).

The gate has its own small framer (net/gate.py: it must hold and rewrite
heads, which a callback parser cannot); this property test holds it to
llhttp, the parser the observers use and the one Node's HTTP server (the
Inspector's) is built on: for every stream the gate accepts, llhttp reads the
same requests, in the same order, at the same boundaries -- smuggling shapes
included.  Where llhttp would refuse, the gate refuses.
"""

from __future__ import annotations

import httptools
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcp_sidecar.net.gate import Close, Forward, Reply, RequestGate

TOKEN = "framing-token-0123456789abcdef"
AUTH = f"Authorization: Bearer {TOKEN}"


class _Reader:
    """llhttp's view of a request stream: each message's target and body."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []
        self._url = b""
        self._body = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.messages.append((self._url, self._body))
        self._url = self._body = b""


def llhttp_reads(stream: bytes) -> tuple[list[tuple[bytes, bytes]], bool]:
    """(requests, whether llhttp accepted the whole stream)."""
    reader = _Reader()
    parser = httptools.HttpRequestParser(reader)
    try:
        parser.feed_data(stream)
    except httptools.HttpParserUpgrade:
        return reader.messages, True
    except httptools.HttpParserError:
        return reader.messages, False
    return reader.messages, True


def gate_reads(stream: bytes, cut: int) -> tuple[bytes, bool]:
    """(what the gate forwards, whether it let the whole stream through: no
    refusal, nothing held back as incomplete)."""
    gate = RequestGate(TOKEN, secure=False)
    out = bytearray()
    accepted = True
    for chunk in (stream[:cut], stream[cut:]):
        for action in gate.feed(chunk):
            if isinstance(action, Forward):
                out += action.data
            elif isinstance(action, (Reply, Close)):
                accepted = False
    return bytes(out), accepted and (gate.at_boundary or gate.tunnel)


# --- requests, honest and otherwise -------------------------------------------------------

_bodies = st.binary(max_size=40)


@st.composite
def _chunked(draw) -> tuple[list[str], bytes, bytes]:
    body = draw(_bodies)
    pieces, pos = [], 0
    while pos < len(body):
        size = draw(st.integers(min_value=1, max_value=max(1, len(body) - pos)))
        ext = draw(st.sampled_from(["", ";ext=1", ";a"]))
        pieces.append(f"{size:x}{ext}\r\n".encode() + body[pos : pos + size] + b"\r\n")
        pos += size
    trailer = draw(st.sampled_from([b"", b"X-Trailer: t\r\n"]))
    te = draw(
        st.sampled_from(
            [
                "Transfer-Encoding: chunked",
                "transfer-encoding: chunked",
                "Transfer-Encoding: Chunked",
                "TRANSFER-ENCODING:chunked",
            ]
        )
    )
    return [te], b"".join(pieces) + b"0\r\n" + trailer + b"\r\n", body


@st.composite
def _length(draw) -> tuple[list[str], bytes, bytes]:
    body = draw(_bodies)
    header = draw(st.sampled_from(["Content-Length: {n}", "content-length:{n}", "Content-Length:  {n} "]))
    return [header.format(n=len(body))], body, body


_none = st.just(([], b"", b""))

#: Framings a smuggler tries; the gate must refuse any that llhttp would not read the same way.
_smuggling = st.sampled_from(
    [
        (["Content-Length: 3", "Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked", "Content-Length: 3"], b"abc"),
        (["Content-Length: 3", "Content-Length: 4"], b"abcd"),
        (["Content-Length: 3, 3"], b"abc"),
        (["Content-Length: +3"], b"abc"),
        (["Content-Length: 0x3"], b"abc"),
        (["Transfer-Encoding: gzip, chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked, chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding: xchunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding:\tchunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding : chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        ([" Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked", " x"], b"3\r\nabc\r\n0\r\n\r\n"),  # obs-fold
        (["Transfer-Encoding: chunked"], b"3 \r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked"], b"3\r\nabc0\r\n\r\n"),
        (["Transfer-Encoding: chunked"], b"-3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked"], b"3\nabc\n0\n\n"),
        (["Transfer-Encoding: chunked"], b"00000000000000000003\r\nabc\r\n0\r\n\r\n"),
        (["Content-Length: 99999999999999999999"], b""),
        (["X-Bad\x00: 1"], b""),
        (["Content-Length: 3", "Content-Length: 3"], b"abc"),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: identity"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\n\r\n"),
        (["X(bad): 1", "Content-Length: 3"], b"abc"),
        (["X-Len\x7f: 1"], b""),
        (["Transfer-Encoding: chunked"], b"3\r\nabc\r\n0\r\nBad Trailer\r\n\r\n"),
        (["Transfer-Encoding: chunked"], b"3;\x01\r\nabc\r\n0\r\n\r\n"),
        (["Content-Length: 3"], b"abcGET /hidden HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]
)


@st.composite
def _request(draw, index: int) -> tuple[bytes, bytes | None]:
    """One request and the body llhttp should read (None: it may be refused)."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    smuggle = draw(st.integers(min_value=0, max_value=9)) == 0
    if smuggle:
        headers, raw = draw(_smuggling)
        expected = None
    else:
        headers, raw, expected = draw(st.one_of(_none, _length(), _chunked()))
    lines = [f"{method} /r{index}?q=1 HTTP/1.1", "Host: x", AUTH, *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + raw, expected


@st.composite
def _stream(draw) -> list[tuple[bytes, bytes | None]]:
    return [draw(_request(i)) for i in range(draw(st.integers(min_value=1, max_value=4)))]


@settings(max_examples=1500, deadline=None)
@given(_stream(), st.integers(min_value=0, max_value=400))
@example(
    [
        (
            b"POST /r0 HTTP/1.1\r\nHost: x\r\n" + AUTH.encode() + b"\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            None,
        )
    ],
    7,
)
def test_the_gate_and_llhttp_agree_on_every_framing_the_gate_accepts(requests, cut) -> None:
    stream = b"".join(raw for raw, _ in requests)
    forwarded, accepted = gate_reads(stream, cut % (len(stream) + 1))
    read, ok = llhttp_reads(forwarded)
    # What the gate forwarded, llhttp reads whole: no request hidden in a body, no body taken for a request.
    assert ok, forwarded
    targets = [url for url, _ in read]
    assert targets == [f"/r{i}?q=1".encode() for i in range(len(read))]
    if accepted:
        # Every request passed: llhttp reads each one, with the body the gate framed.
        assert len(read) == len(requests)
        for (_, body), (_, expected) in zip(read, requests, strict=True):
            if expected is not None:
                assert body == expected
    honest = all(expected is not None for _, expected in requests)
    if honest:
        assert accepted  # honest framing is never refused
    # And where llhttp refuses the stream as sent, the gate refused it too.
    if not llhttp_reads(stream)[1]:
        assert not accepted
