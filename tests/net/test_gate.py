"""The access gate, sans-io: bytes in, forward / reply / close out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.net.gate import (
    MAX_HEAD_BYTES,
    TOKEN_PARAM,
    UNAUTHORIZED,
    Close,
    Forward,
    Reply,
    RequestGate,
    cookie_name,
)

TOKEN = "s3cret-token-0123456789abcdef"
COOKIE = f"{cookie_name(TOKEN)}={TOKEN}"


def request(path: str = "/", *headers: str, body: bytes = b"", method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: example", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def forwarded(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Forward))


def status(reply: Reply) -> bytes:
    return reply.data.split(b"\r\n", 1)[0]


def test_no_token_is_a_401_and_nothing_is_forwarded() -> None:
    counts: dict[str, int] = {}
    gate = RequestGate(TOKEN, secure=False, counts=counts)
    (action,) = gate.feed(request("/index.html"))
    assert isinstance(action, Reply) and action.close and action.reason == "missing"
    assert status(action) == b"HTTP/1.1 401 Unauthorized"
    assert action.data.endswith(UNAUTHORIZED.encode()) and b"\r\nConnection: close\r\n" in action.data
    assert TOKEN.encode() not in action.data
    assert gate.closed and gate.feed(request()) == []
    assert counts == {"missing": 1}


def test_a_wrong_token_anywhere_is_invalid() -> None:
    for headers in (
        [f"Cookie: {cookie_name(TOKEN)}=nope"],
        ["Authorization: Bearer nope"],
        ["X-MCP-Sidecar-Token: nope"],
    ):
        (action,) = RequestGate(TOKEN, secure=False).feed(request("/", *headers))
        assert isinstance(action, Reply) and action.reason == "invalid"
    (action,) = RequestGate(TOKEN, secure=False).feed(request(f"/?{TOKEN_PARAM}=nope"))
    assert isinstance(action, Reply) and action.reason == "invalid"


def test_the_url_token_is_exchanged_for_a_cookie() -> None:
    counts: dict[str, int] = {}
    gate = RequestGate(TOKEN, secure=False, counts=counts)
    (action,) = gate.feed(request(f"/?MCP_PROXY_PORT=6277&{TOKEN_PARAM}={TOKEN}&x=1"))
    assert isinstance(action, Reply) and not action.close and action.reason == "admitted_by_url"
    assert status(action) == b"HTTP/1.1 303 See Other"
    assert b"\r\nLocation: /?MCP_PROXY_PORT=6277&x=1\r\n" in action.data
    cookie = f"Set-Cookie: {COOKIE}; Path=/; HttpOnly; SameSite=Strict\r\n".encode()
    assert cookie in action.data and b"Secure" not in action.data
    # The same connection goes on: the next request carries the cookie.
    nxt = request("/?MCP_PROXY_PORT=6277&x=1", f"Cookie: other=1; {COOKIE}")
    assert gate.feed(nxt) == [Forward(request("/?MCP_PROXY_PORT=6277&x=1", "Cookie: other=1"))]
    assert gate.admitted_by == "cookie" and counts == {"url": 1, "cookie": 1}
    # Under TLS the cookie is Secure.
    (secure,) = RequestGate(TOKEN, secure=True).feed(request(f"/?{TOKEN_PARAM}={TOKEN}"))
    assert b"; SameSite=Strict; Secure\r\n" in secure.data


def test_bearer_and_header_admit_clients_that_are_not_browsers() -> None:
    for header, how in ((f"Authorization: Bearer {TOKEN}", "bearer"), (f"X-MCP-Sidecar-Token: {TOKEN}", "header")):
        gate = RequestGate(TOKEN, secure=False)
        raw = request("/mcp", header, "Content-Type: application/json", body=b'{"jsonrpc":"2.0"}', method="POST")
        upstream = request("/mcp", "Content-Type: application/json", body=b'{"jsonrpc":"2.0"}', method="POST")
        assert gate.feed(raw) == [Forward(upstream)] and gate.admitted_by == how


def test_every_request_of_a_keep_alive_connection_is_checked() -> None:
    gate = RequestGate(TOKEN, secure=False)
    good = request("/a", f"Cookie: {COOKIE}", body=b"12345", method="POST")
    bad = request("/b")
    actions = gate.feed(good + bad)
    # No reply once a request was forwarded (the gate's cookie never goes upstream).
    assert actions == [Forward(request("/a", body=b"12345", method="POST")), Close("missing")]


def test_bodies_pass_and_the_next_head_is_found() -> None:
    body = b"5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\n"
    chunked = b"POST /c HTTP/1.1\r\nHost: x\r\nCookie: " + COOKIE.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    plain = request("/d", f"Cookie: {COOKIE}", body=b"x" * 70_000, method="PUT")
    gate = RequestGate(TOKEN, secure=False)
    assert forwarded(gate.feed(chunked + body + plain + request("/e"))) == (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
        + request("/d", body=b"x" * 70_000, method="PUT")
    )
    assert gate.closed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=40))
def test_forwarded_bytes_do_not_depend_on_chunking(cuts) -> None:
    chunks = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
    stream = b"".join(
        [
            request("/1", f"Authorization: Bearer {TOKEN}"),
            b"POST /2 HTTP/1.1\r\nHost: x\r\nCookie: "
            + COOKIE.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunks,
            request("/3", f"X-MCP-Sidecar-Token: {TOKEN}", body=b"q" * 300, method="POST"),
        ]
    )
    upstream = b"".join(
        [
            request("/1"),
            b"POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
            request("/3", body=b"q" * 300, method="POST"),
        ]
    )
    gate = RequestGate(TOKEN, secure=False)
    out, pos, i = [], 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)]
        out += gate.feed(stream[pos : pos + size])
        pos, i = pos + size, i + 1
    assert forwarded(out) == upstream and not any(isinstance(a, (Reply, Close)) for a in out)
    assert gate.forwarded == 3


def test_ambiguous_framing_is_refused() -> None:
    for extra in (
        ["Content-Length: 3", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: gzip"],
        ["Content-Length: 3", "Content-Length: 4"],
        ["Content-Length: -1"],
    ):
        (action,) = RequestGate(TOKEN, secure=False).feed(request("/", f"Cookie: {COOKIE}", *extra))
        assert isinstance(action, Reply) and status(action) == b"HTTP/1.1 400 Bad Request"
    (action,) = RequestGate(TOKEN, secure=False).feed(b"GARBAGE\r\n\r\n")
    assert isinstance(action, Reply) and action.reason == "malformed"


def test_a_head_past_the_bound_is_refused() -> None:
    gate = RequestGate(TOKEN, secure=False)
    (action,) = gate.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES)
    assert isinstance(action, Reply) and status(action) == b"HTTP/1.1 431 Request Header Fields Too Large"


def test_an_admitted_upgrade_ends_the_gating() -> None:
    gate = RequestGate(TOKEN, secure=False)
    upgrade = request("/ws", f"Cookie: {COOKIE}", "Upgrade: websocket", "Connection: Upgrade")
    frames = b"\x81\x85\x00\x00\x00\x00hello GET / HTTP/1.1\r\n\r\n"
    assert (
        forwarded(gate.feed(upgrade + frames)) == request("/ws", "Upgrade: websocket", "Connection: Upgrade") + frames
    )
    assert gate.tunnel
    refused = RequestGate(TOKEN, secure=False).feed(request("/ws", "Upgrade: websocket", "Connection: Upgrade"))
    assert isinstance(refused[0], Reply) and refused[0].reason == "missing"


def test_the_body_of_a_request_the_gate_answers_is_not_forwarded() -> None:
    gate = RequestGate(TOKEN, secure=False)
    first = request(f"/?{TOKEN_PARAM}={TOKEN}", body=b"ignored body", method="POST")
    nxt = request("/next", f"Cookie: {COOKIE}")
    actions = gate.feed(first + nxt)
    assert isinstance(actions[0], Reply) and forwarded(actions) == request("/next")


# --- the gate's credentials stay with the gate; its replies stay in order and on this origin ----


def test_the_gates_credentials_never_reach_the_upstream_and_the_upstreams_stay() -> None:
    gate = RequestGate(TOKEN, secure=False)
    raw = request(
        f"/p?a=1&{TOKEN_PARAM}={TOKEN}&b=%2F",
        f"Cookie: a=1;{COOKIE}; b=2",
        f"Authorization: Bearer {TOKEN}",
        f"x-mcp-sidecar-token: {TOKEN}",
        "X-Other: kept",
    )
    assert forwarded(gate.feed(raw)) == request("/p?a=1&b=%2F", "Cookie: a=1; b=2", "X-Other: kept")
    # The upstream's own Authorization passes, the gate's header goes.
    raw = request("/mcp", "Authorization: Bearer upstream-key", f"X-MCP-Sidecar-Token: {TOKEN}", "Cookie: session=abc")
    assert forwarded(RequestGate(TOKEN, secure=False).feed(raw)) == request(
        "/mcp", "Authorization: Bearer upstream-key", "Cookie: session=abc"
    )
    # A cookie header holding only the gate's cookie goes as a whole.
    raw = request("/", f"Cookie: {COOKIE}")
    assert forwarded(RequestGate(TOKEN, secure=False).feed(raw)) == request("/")
    assert TOKEN.encode() not in forwarded(
        RequestGate(TOKEN, secure=False).feed(
            request(f"/?{TOKEN_PARAM}={TOKEN}", f"Cookie: {COOKIE}", f"Authorization: Bearer {TOKEN}")
        )
    )


def test_a_pipelined_token_url_after_a_forwarded_request_closes_instead_of_overtaking_its_answer() -> None:
    gate = RequestGate(TOKEN, secure=False)
    first = request("/a", f"Cookie: {COOKIE}")
    actions = gate.feed(first + request(f"/?{TOKEN_PARAM}={TOKEN}"))
    assert actions == [Forward(request("/a")), Close("pipelined_token_url")]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="/\\\\%.:@abcdefg?#=&", max_size=24))
def test_the_303_leads_only_to_a_path_of_this_origin(path: str) -> None:
    (reply,) = RequestGate(TOKEN, secure=False).feed(request(f"/{path}?{TOKEN_PARAM}={TOKEN}"))
    if not isinstance(reply, Reply) or reply.reason != "admitted_by_url":
        return
    location = reply.data.split(b"\r\nLocation: ", 1)[1].split(b"\r\n", 1)[0].decode()
    # A browser resolves it against this origin only if it is a path: "/x", never "//x" or "/\\x".
    assert location.startswith("/") and location[1:2] not in ("/", "\\")


def test_open_redirects_and_header_injection_are_refused() -> None:
    for evil, location in (
        ("//evil.example/", "/evil.example/"),
        ("/\\evil.example/", "/evil.example/"),
        ("/\\/evil.example", "/evil.example"),
    ):
        (reply,) = RequestGate(TOKEN, secure=False).feed(request(f"{evil}?{TOKEN_PARAM}={TOKEN}"))
        assert isinstance(reply, Reply) and status(reply) == b"HTTP/1.1 303 See Other"
        assert f"\r\nLocation: {location}\r\n".encode() in reply.data
    for raw in (
        f"GET /x\nSet-Cookie:evil=1?{TOKEN_PARAM}={TOKEN} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
        f"GET /?{TOKEN_PARAM}={TOKEN} HTTP/1.1\r\nHost: a\nX: b\r\n\r\n".encode(),
        f"GET /?{TOKEN_PARAM}={TOKEN} HTTP/1.1\r\nHost: a\x00\r\n\r\n".encode(),
        f"GET /?{TOKEN_PARAM}={TOKEN} HTTP/1.1\r\nHost: a\rX: b\r\n\r\n".encode(),
    ):
        (reply,) = RequestGate(TOKEN, secure=False).feed(raw)
        assert isinstance(reply, Reply) and status(reply) == b"HTTP/1.1 400 Bad Request", raw
        assert b"Set-Cookie: evil" not in reply.data
