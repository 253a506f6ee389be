"""The access gate of an HTTP route (sans-io): no valid token, no byte upstream.

A browser opens the URL the sidecar printed, ``...?mcp_sidecar_token=T``;
the gate answers ``303`` to the same URL without the token and sets a cookie
(``HttpOnly; SameSite=Strict``, ``Secure`` under TLS), which later requests
carry.  Clients that are not browsers send ``Authorization: Bearer T`` (or
``X-MCP-Sidecar-Token: T`` when their ``Authorization`` belongs to the
upstream).  Anything else gets ``401`` with a one-line explanation.  This is
Jupyter's model: a one-time URL exchanged for a cookie.

Rules this module keeps:

* ``RequestGate.feed(bytes)`` returns what to do, in order: ``Forward``
  bytes to the upstream, ``Reply`` to the client (then close, or go on with
  the next request), ``Close``.  It never touches a socket.
* Every request head is checked before any of its bytes is forwarded; the
  head is held until it is complete (at most ``MAX_HEAD_BYTES``).  Bodies
  are framed (``Content-Length``, chunked) only to find where the next
  request starts; they are forwarded as they come, each chunk line checked
  before it goes.  Ambiguous framing (both ``Content-Length`` and
  ``Transfer-Encoding``, an unknown transfer coding, a repeated or bad
  length, whitespace around a chunk size, a bare LF) is refused with
  ``400``: a gate that frames differently from the upstream could be
  walked around (request smuggling).  The gate frames as llhttp does (the
  parser of the observers and of Node's HTTP server): a property test holds
  the two together on every framing the gate accepts
  (tests/net/test_gate_framing.py).
* A request refused on a keep-alive connection after others were forwarded
  closes the connection without a reply: a response to an earlier request
  may still be on its way, and a reply of ours could interleave with it.
  (Browsers then retry on a new connection, where the refusal is a ``401``.)
* A forwarded upgrade (WebSocket) or ``CONNECT`` ends the gating: the bytes
  after it belong to the protocol the client authenticated into.
* The gate's own credentials never reach the upstream: its cookie (the
  other cookies stay), an ``Authorization: Bearer`` carrying its token (an
  ``Authorization`` of the upstream's own stays), ``X-MCP-Sidecar-Token``
  and the token parameter are taken out of every forwarded head.  Nothing
  else in the head changes.
* The gate's replies keep responses in order: the URL-token exchange
  (``303``) on a connection that already forwarded a request closes it
  instead (a reply of ours must not overtake the upstream's answer); the
  browser retries on a new connection.
* A request line or header with a control character (a bare CR or LF, NUL)
  is refused (``400``), and the ``303`` leads only to a path of this origin
  (``//host`` and ``/\\host`` are other origins to a browser): no header
  injection, no open redirect.
* Tokens are compared in constant time; no token, cookie or header value is
  ever part of a reply, a log line or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from dataclasses import dataclass
from enum import Enum

#: The largest request head held while it is checked.
MAX_HEAD_BYTES = 64 * 1024
#: The query parameter that carries the token in the printed URL.
TOKEN_PARAM = "mcp_sidecar_token"
#: The header for clients whose ``Authorization`` is the upstream's.
TOKEN_HEADER = b"x-mcp-sidecar-token"
_HEAD_END = b"\r\n\r\n"
#: Control characters that may not appear in a request head (HTAB may, in
#: header values; CR and LF only as the line ends).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
#: A chunk-size line: hex digits, then extensions of tokens (or quoted strings), nothing else (RFC 9112 7.1.1).
_CHUNK_SIZE = re.compile(rb"^([0-9A-Fa-f]{1,16})(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb'|"[^"\\\r\n]*"))?)*$')


def cookie_name(token: str) -> str:
    """The gate's cookie for this token: routes sharing a token share it,
    routes with different tokens on one host do not overwrite each other's
    (cookies ignore ports)."""
    return "mcp_sidecar_" + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Forward:
    """Bytes to send upstream."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """A response of the gate's own to send the client; then close or not."""

    data: bytes
    close: bool
    #: Why (a bounded label): admitted_by_url, missing, invalid, malformed, too_large.
    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection, no reply (see the module's rules)."""

    reason: str


Action = Forward | Reply | Close


class _State(Enum):
    HEAD = "head"
    BODY = "body"  # Content-Length bytes left
    CHUNK_SIZE = "chunk_size"
    CHUNK_DATA = "chunk_data"
    CHUNK_END = "chunk_end"  # the CRLF after a chunk's data
    TRAILERS = "trailers"
    DISCARD = "discard"  # the body of a request the gate answered itself
    TUNNEL = "tunnel"  # after a forwarded upgrade or CONNECT: not HTTP any more
    CLOSED = "closed"


def _reply(status: str, body: str, *, close: bool, headers: tuple[str, ...] = (), reason: str) -> Reply:
    payload = body.encode()
    lines = [
        f"HTTP/1.1 {status}",
        "Content-Type: text/plain; charset=utf-8",
        "Cache-Control: no-store",
        f"Content-Length: {len(payload)}",
        *headers,
    ]
    if close:
        lines.append("Connection: close")
    return Reply(("\r\n".join(lines) + "\r\n\r\n").encode() + payload, close, reason)


UNAUTHORIZED = (
    "mcp-sidecar: this route needs its access token: open the URL printed at start "
    f"(with ?{TOKEN_PARAM}=...), or send Authorization: Bearer <token>\n"
)


class RequestGate:
    """The client side of one connection, request by request."""

    def __init__(self, token: str, *, secure: bool, counts: dict[str, int] | None = None) -> None:
        #: Requests by result (cookie, bearer, header, url, missing, invalid,
        #: malformed, too_large): the route's counters, shared by its connections.
        self.counts = counts if counts is not None else {}
        self._token = token.encode()
        self._cookie = cookie_name(token)
        self._cookie_bytes = self._cookie.encode()
        self._secure = secure
        self._state = _State.HEAD
        self._buffer = bytearray()
        self._left = 0  # body or chunk bytes still to pass (or discard)
        self._discarding_chunked = False
        #: Requests forwarded on this connection.
        self.forwarded = 0
        #: How the last forwarded request was admitted: cookie, bearer or header.
        self.admitted_by: str | None = None

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def at_boundary(self) -> bool:
        """Between requests, nothing held: every byte fed was forwarded or answered."""
        return self._state is _State.HEAD and not self._buffer

    @property
    def tunnel(self) -> bool:
        """Gating is over on this connection (an upgrade or CONNECT passed)."""
        return self._state is _State.TUNNEL

    def feed(self, data: bytes) -> list[Action]:
        if self._state is _State.TUNNEL:
            return [Forward(bytes(data))] if data else []
        if self._state is _State.CLOSED:
            return []
        self._buffer += data
        out: list[Action] = []
        while self._buffer and not self.closed:
            if self.tunnel:  # (a step may end the gating: mypy cannot see the state change)
                out.append(Forward(bytes(self._buffer)))
                self._buffer.clear()
                break
            if not self._step(out):
                break  # needs more bytes
        return _merged(out)

    # -- one step: True if it consumed something and may go on -------------------------------

    def _step(self, out: list[Action]) -> bool:
        state = self._state
        if state is _State.HEAD:
            return self._head(out)
        if state in (_State.BODY, _State.CHUNK_DATA, _State.DISCARD) and not self._discarding_chunked:
            take = min(self._left, len(self._buffer))
            if state is not _State.DISCARD:
                out.append(Forward(bytes(self._buffer[:take])))
            del self._buffer[:take]
            self._left -= take
            if self._left == 0:
                self._state = _State.CHUNK_END if state is _State.CHUNK_DATA else _State.HEAD
            return take > 0 or self._left == 0
        return self._chunked(out)

    def _chunked(self, out: list[Action]) -> bool:
        """Chunk-size lines, chunk data, their CRLF and the trailers (also
        when discarding a chunked body: then nothing is forwarded)."""
        forward = not self._discarding_chunked
        state = self._state
        if state in (_State.CHUNK_DATA, _State.DISCARD):
            take = min(self._left, len(self._buffer))
            if forward:
                out.append(Forward(bytes(self._buffer[:take])))
            del self._buffer[:take]
            self._left -= take
            if self._left == 0:
                self._state = _State.CHUNK_END
            return True
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                return self._refuse(out, "400 Bad Request", "mcp-sidecar: a chunk line is too long\n", "malformed")
            return False
        if end == 0 or self._buffer[end - 1] != 0x0D:  # a bare LF ends no line here (nor in llhttp)
            return self._refuse(out, "400 Bad Request", "mcp-sidecar: malformed chunked body\n", "malformed")
        end -= 1
        line = bytes(self._buffer[:end])
        consumed = bytes(self._buffer[: end + 2])
        del self._buffer[: end + 2]
        # Checked before a byte of it is forwarded: what the upstream gets always parses.
        if state is _State.CHUNK_END:
            if line:
                return self._refuse(out, "400 Bad Request", "mcp-sidecar: malformed chunked body\n", "malformed")
            self._state = _State.CHUNK_SIZE
        elif state is _State.CHUNK_SIZE:
            match = _CHUNK_SIZE.match(line)  # (as llhttp: no whitespace around the size)
            if match is None:
                return self._refuse(out, "400 Bad Request", "mcp-sidecar: malformed chunked body\n", "malformed")
            size = int(match.group(1), 16)
            if size == 0:
                self._state = _State.TRAILERS
            else:
                self._left = size
                self._state = _State.DISCARD if not forward else _State.CHUNK_DATA
        elif state is _State.TRAILERS:
            if not line:
                self._state = _State.HEAD
                self._discarding_chunked = False
            elif not _header_line_ok(line):
                return self._refuse(out, "400 Bad Request", "mcp-sidecar: malformed chunked body\n", "malformed")
        if forward:
            out.append(Forward(consumed))
        return True

    def _head(self, out: list[Action]) -> bool:
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                return self._refuse(
                    out,
                    "431 Request Header Fields Too Large",
                    "mcp-sidecar: the request head is too large\n",
                    "too_large",
                )
            return False
        head = bytes(self._buffer[: end + 4])
        del self._buffer[: end + 4]
        try:
            method, target, headers = _parse_head(head)
            framing = _framing(method, headers)
        except ValueError:
            return self._refuse(out, "400 Bad Request", "mcp-sidecar: malformed request\n", "malformed")
        verdict = self._check(target, headers)
        result = verdict if verdict is not None else self.admitted_by or "cookie"
        self.counts[result] = self.counts.get(result, 0) + 1
        if verdict == "url" and self.forwarded:
            # An earlier request's answer may still be on its way: our 303 must not overtake it.
            self._state = _State.CLOSED
            self._buffer.clear()
            out.append(Close("pipelined_token_url"))
            return False
        if verdict == "url":
            self._answer_body(framing)
            location = _without_token(target)
            cookie = f"{self._cookie}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"
            if self._secure:
                cookie += "; Secure"
            out.append(
                _reply(
                    "303 See Other",
                    "",
                    close=False,
                    reason="admitted_by_url",
                    headers=(f"Location: {location}", f"Set-Cookie: {cookie}"),
                )
            )
            return True
        if verdict is not None:
            return self._refuse(
                out,
                "401 Unauthorized",
                UNAUTHORIZED,
                verdict,
                headers=('WWW-Authenticate: Bearer realm="mcp-sidecar"',),
            )
        out.append(Forward(self._without_credentials(head)))
        self.forwarded += 1
        kind, length = framing
        if kind == "tunnel":
            self._state = _State.TUNNEL
        elif kind == "chunked":
            self._state = _State.CHUNK_SIZE
        elif length:
            self._state, self._left = _State.BODY, length
        return True

    def _check(self, target: bytes, headers: dict[bytes, list[bytes]]) -> str | None:
        """None: admitted (``admitted_by`` says how); "url": the token in the
        URL; else the refusal's reason."""
        presented = False
        for value in headers.get(b"cookie", ()):
            for part in value.split(b";"):
                name, _, cookie = part.strip().partition(b"=")
                if name == self._cookie.encode():
                    presented = True
                    if hmac.compare_digest(cookie, self._token):
                        self.admitted_by = "cookie"
                        return None
        for value in headers.get(b"authorization", ()):
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                presented = True
                if hmac.compare_digest(credentials.strip(), self._token):
                    self.admitted_by = "bearer"
                    return None
        for value in headers.get(TOKEN_HEADER, ()):
            presented = True
            if hmac.compare_digest(value.strip(), self._token):
                self.admitted_by = "header"
                return None
        query = target.partition(b"?")[2]
        if query:
            for offered in urllib.parse.parse_qs(query.decode("latin-1")).get(TOKEN_PARAM, ()):
                presented = True
                if hmac.compare_digest(offered.encode("latin-1"), self._token):
                    return "url"
        return "invalid" if presented else "missing"

    def _without_credentials(self, head: bytes) -> bytes:
        """The head as admitted, minus the gate's own credentials (see the
        rules); every other byte as it came."""
        lines = head[:-4].split(b"\r\n")
        out = [_without_token_param(lines[0])]
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            lowered = name.lower()
            if lowered == TOKEN_HEADER:
                continue
            if lowered == b"authorization":
                scheme, _, credentials = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token):
                    continue
            elif lowered == b"cookie" and self._cookie_bytes in value:
                pairs = value.split(b";")
                kept = [p.strip() for p in pairs if p.strip().partition(b"=")[0] != self._cookie_bytes]
                if len(kept) != len(pairs):
                    kept = [p for p in kept if p]
                    if not kept:
                        continue
                    line = name + b": " + b"; ".join(kept)
            out.append(line)
        return b"\r\n".join(out) + _HEAD_END

    def _answer_body(self, framing: tuple[str, int]) -> None:
        """The gate answered this request itself: its body is read, not forwarded."""
        kind, length = framing
        if kind == "chunked":
            self._state, self._discarding_chunked = _State.CHUNK_SIZE, True
        elif kind == "length" and length:
            self._state, self._left = _State.DISCARD, length

    def _refuse(self, out: list[Action], status: str, body: str, reason: str, headers: tuple[str, ...] = ()) -> bool:
        if reason in ("malformed", "too_large"):
            self.counts[reason] = self.counts.get(reason, 0) + 1
        self._state = _State.CLOSED
        self._buffer.clear()
        if self.forwarded:
            out.append(Close(reason))  # see the rules: a reply could interleave with a response
        else:
            out.append(_reply(status, body, close=True, headers=headers, reason=reason))
        return False


#: The headers the gate reads (credentials and framing); others are only checked for form.
_READ = frozenset(
    {b"cookie", b"authorization", TOKEN_HEADER, b"content-length", b"transfer-encoding", b"connection", b"upgrade"}
)
_READ_LENGTHS = frozenset(len(name) for name in _READ)


_FIELD_NAME = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _header_line_ok(line: bytes) -> bool:
    """A ``name: value`` line as RFC 9110 (and llhttp) allow it: a token, a
    colon right after it, no control character but HTAB in the value."""
    name, sep, _ = line.partition(b":")
    return bool(sep) and _FIELD_NAME.match(name) is not None and _CONTROL.search(line) is None


def _parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, list[bytes]]]:
    if _CONTROL.search(head, 0, len(head) - 4) is not None:
        raise ValueError("control character")
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[0].isalpha():
        raise ValueError("request line")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _FIELD_NAME.match(name) is None:
            raise ValueError("header line")
        if len(name) in _READ_LENGTHS:
            name = name.lower()
            if name in _READ:
                headers.setdefault(name, []).append(value.strip())
    return parts[0], parts[1], headers


def _framing(method: bytes, headers: dict[bytes, list[bytes]]) -> tuple[str, int]:
    """How the request's body is delimited: ("length", n), ("chunked", 0) or
    ("tunnel", 0) for an upgrade or CONNECT; ValueError if ambiguous."""
    lengths = headers.get(b"content-length", [])
    codings = [c.strip().lower() for v in headers.get(b"transfer-encoding", []) for c in v.split(b",")]
    if lengths and codings:
        raise ValueError("both Content-Length and Transfer-Encoding")
    if method == b"CONNECT":
        return "tunnel", 0
    upgrade = b"upgrade" in (b",".join(headers.get(b"connection", [])).lower())
    if upgrade and headers.get(b"upgrade"):
        return "tunnel", 0
    if codings:
        if codings != [b"chunked"]:
            raise ValueError("transfer coding")
        return "chunked", 0
    if lengths:
        # One line, one decimal number: llhttp refuses a repeated Content-Length (even an equal one).
        if len(lengths) != 1:
            raise ValueError("Content-Length")
        value = lengths[0].strip()
        if not value.isdigit() or len(value) > 18:
            raise ValueError("Content-Length")
        return "length", int(value)
    return "length", 0


def _without_token(target: bytes) -> str:
    """The request target minus the token parameter (where the 303 sends
    the browser): always a path of this origin.  A browser reads ``//host``
    and ``/\\host`` (backslashes count as slashes) as another origin, so
    leading slashes and backslashes become one slash."""
    path, _, query = target.decode("latin-1").partition("?")
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k != TOKEN_PARAM]
    if not path.startswith("/"):
        path = "/"
    path = "/" + path.lstrip("/\\")
    return path + ("?" + urllib.parse.urlencode(kept) if kept else "")


def _without_token_param(request_line: bytes) -> bytes:
    """The request line minus the token parameter (other parameters kept
    byte for byte)."""
    if TOKEN_PARAM.encode() not in request_line:
        return request_line
    method, target, version = request_line.split(b" ")
    path, _, query = target.partition(b"?")
    kept = [p for p in query.split(b"&") if p.partition(b"=")[0] != TOKEN_PARAM.encode()]
    target = path + (b"?" + b"&".join(kept) if kept else b"")
    return b" ".join((method, target, version))


def _merged(actions: list[Action]) -> list[Action]:
    """Consecutive Forwards joined: one send for what one chunk allowed."""
    out: list[Action] = []
    for action in actions:
        if isinstance(action, Forward) and out and isinstance(out[-1], Forward):
            out[-1] = Forward(out[-1].data + action.data)
        else:
            out.append(action)
    return out
