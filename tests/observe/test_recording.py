"""A recording's message line built straight from the message (``line_body``)
is the line the tap record would have made (``message_body(tap_record(...))``),
byte for byte, whatever the message, its context and the body bound."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.observe.events import Exchange, McpOutcome
from mcp_sidecar.observe.jsonrpc import decode
from mcp_sidecar.observe.recording import line_body, message_body
from mcp_sidecar.observe.tap import shown_names, tap_record

_json = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=16)
    ),
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "token", "apiKey", "név", "url", "text"]) | st.text(max_size=6), c, max_size=3
        )
    ),
    max_leaves=10,
)
_names = st.sampled_from(["tools/call", "ping", "initialize", "x/custom", "bad\x07name", "é" * 200])
_ids = st.one_of(st.integers(-5, 10**12), st.text(max_size=20), st.just("Bearer sk-abcdefabcdefabcdefabcd"))


@st.composite
def _messages(draw) -> dict:
    kind = draw(st.sampled_from(["request", "notification", "response", "error"]))
    value: dict = {"jsonrpc": "2.0"}
    if kind in ("request", "response", "error"):
        value["id"] = draw(_ids)
    if kind in ("request", "notification"):
        value["method"] = draw(_names)
        if draw(st.booleans()):
            value["params"] = draw(_json)
    elif kind == "response":
        value["result"] = draw(_json)
    else:
        value["error"] = {"code": draw(st.integers(-33000, 0)), "message": draw(st.text(max_size=20))}
    return value


_exchanges = st.one_of(
    st.none(),
    st.builds(
        Exchange,
        st.sampled_from(["POST", "GET"]),
        st.sampled_from(["/mcp", "/message"]),
        st.one_of(st.none(), st.sampled_from([200, 202, 400])),
        session=st.one_of(st.none(), st.text(min_size=1, max_size=12)),
        protocol_version=st.one_of(st.none(), st.sampled_from(["2025-11-25", "2026-07-28", "9999-bogus"])),
        mcp_method=st.one_of(st.none(), _names),
        mcp_name=st.one_of(st.none(), st.text(max_size=10)),
        last_event_id=st.one_of(st.none(), st.text(max_size=10)),
    ),
)
_answers = st.one_of(
    st.none(),
    st.builds(
        McpOutcome,
        st.sampled_from(["tools/call", "other", "initialize"]),
        st.sampled_from(["ok", "-32601", "tool_error", "timeout"]),
        st.one_of(st.none(), st.floats(0, 100)),
        st.just("client"),
        protocol_version=st.sampled_from(["2025-11-25", "unknown"]),
        target=st.sampled_from(["", "echo"]),
        name=st.one_of(st.none(), st.just("x/custom")),
    ),
)


@settings(max_examples=300)
@given(
    _messages(),
    st.sampled_from(["client", "upstream"]),
    st.sampled_from(["http", "legacy-sse", "websocket", "inspector-v2"]),
    st.one_of(st.none(), st.text(max_size=12)),
    _answers,
    st.integers(16, 4096),
    st.one_of(st.none(), st.sampled_from(["2025-11-25", "2026-07-28"])),
    st.sampled_from(["", "echo", "tool\x00"]),
    st.sampled_from(["", "127.0.0.1:5000", "[::1]:7"]),
    _exchanges,
    st.floats(1e9, 2e9),
    st.booleans(),
    st.sampled_from([None, 2, "\r\n"]),
)
def test_a_line_built_from_the_message_is_the_line_its_tap_record_makes(
    value, origin, transport, session, answered, max_bytes, version, target, client, exchange, at, ascii_only, indent
) -> None:
    """... and one line of JSON whatever line breaks the peer's text had
    (pretty-printed: ``indent``)."""
    (message,) = decode(json.dumps(value, ensure_ascii=ascii_only, indent=indent).encode())
    method = (
        value.get("method")
        if isinstance(value.get("method"), str) and value["method"] in ("tools/call", "ping")
        else None
    )
    if "method" in value and method is None:
        method = "other"
    if "method" in value:
        answered = None  # (only an answer completes a request)
    shown = {
        "at_unix": at,
        "transport": transport,
        "session": session,
        "size": 123,
        "method": method,
        "answered": answered,
        "protocol_version": version,
        "target": target,
        "client": client,
        "exchange": exchange,
    }
    expected = message_body(tap_record("r", origin, message, max_bytes=max_bytes, **shown))
    if exchange is not None:
        exchange.recorded_headers = None  # (worked out again, as on a new exchange)
    assert line_body("r", origin, message, shown, max_bytes=max_bytes) == expected
    assert b"\n" not in expected and b"\r" not in expected and json.loads(expected)["route"] == "r"
    names = shown_names(message, method, answered)  # (what the caller passes when it has them)
    assert line_body("r", origin, message, shown, max_bytes=max_bytes, names=names) == expected
