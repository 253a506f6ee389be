"""What the tap shows of a message: kinds, bounds, redaction (sans-io)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mcp_sidecar.observe.events import McpOutcome
from mcp_sidecar.observe.jsonrpc import decode
from mcp_sidecar.observe.tap import TapFilter, tap_record
from mcp_sidecar.redact import REDACTED


def message(value: dict):
    (m,) = decode(json.dumps(value).encode())
    return m


def record(
    value: dict,
    origin: str = "client",
    max_bytes: int = 2048,
    answered: McpOutcome | None = None,
    method: str | None = "tools/call",
):
    return tap_record(
        "r",
        origin,
        message(value),
        at_unix=1_700_000_000.5,
        transport="http",
        session="0f6c6e3e-2d1a-4c1b-9a55-7d6a1e1f2b3c",
        size=99,
        method=method,
        answered=answered,
        max_bytes=max_bytes,
    )


def test_a_request_and_its_response() -> None:
    req = record({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo"}})
    assert req == {
        "t": 1_700_000_000.5,
        "mono": 0.0,
        "route": "r",
        "direction": "client_to_upstream",
        "kind": "request",
        "method": "tools/call",
        "id": 3,
        "transport": "http",
        "session": req["session"],
        "size": 99,
        "era": "streamable-http-2025",
        "params": '{"name": "echo"}',
        "truncated": False,
    }  # the peer's bytes, as sent
    assert req["session"].startswith("s-") and "0f6c6e3e" not in json.dumps(req)
    answered = McpOutcome("tools/call", "ok", 0.0042, "client", "http")
    resp = record({"jsonrpc": "2.0", "id": 3, "result": {"content": []}}, "upstream", answered=answered, method=None)
    assert (resp["kind"], resp["method"], resp["latency_ms"], resp["outcome"], resp["result"]) == (
        "response",
        "tools/call",
        4.2,
        "ok",
        '{"content": []}',
    )
    error = record({"jsonrpc": "2.0", "id": 4, "error": {"code": -32601, "message": "no"}}, "upstream", method=None)
    assert (error["kind"], error["method"], error["error"]) == (
        "error",
        None,
        '{"code":-32601,"message":"no"}',
    )  # decoded, re-encoded
    note = record({"jsonrpc": "2.0", "method": "notifications/progress"}, method="notifications/progress")
    assert (note["kind"], note["id"], "params" in note) == ("notification", None, False)


def test_params_are_cut_to_the_bound_and_secrets_removed() -> None:
    rec = record(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {
                "name": "login",
                "arguments": {
                    "user": "ann",
                    "password": "hunter2-very-secret",
                    "apiKey": "sk-123456789",
                    "note": "Authorization: Bearer abc.def.ghi",
                    "blob": "x" * 5000,
                },
            },
        },
        max_bytes=300,
    )
    shown = rec["params"]
    assert rec["truncated"] is True and len(shown) <= 300 + 40
    for secret in ("hunter2-very-secret", "sk-123456789", "abc.def.ghi"):
        assert secret not in shown
    assert f'"password":"{REDACTED}"' in shown and '"user":"ann"' in shown


def test_filters() -> None:
    rec = record({"jsonrpc": "2.0", "id": 1, "method": "tools/call"})
    assert TapFilter().wants(rec) and TapFilter("r").wants(rec) and TapFilter("r", "tools/call").wants(rec)
    assert not TapFilter("other").wants(rec) and not TapFilter(None, "ping").wants(rec)
    assert TapFilter("r").wants_route("r") and not TapFilter("x").wants_route("r")


_SECRET = "Zs3cr3tT0kenValue0123456789"


@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    ),
    st.sampled_from(["password", "token", "api_key", "client_secret", "authorization"]),
    st.integers(min_value=64, max_value=400),
)
def test_any_params_stay_bounded_and_a_named_secret_never_shows(extra, key: str, max_bytes: int) -> None:
    rec = record(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {key: _SECRET, "x": extra}}, max_bytes=max_bytes
    )
    assert _SECRET not in rec["params"]
    assert len(rec["params"].encode()) <= max_bytes + 3 * 40  # cut, then at most a few REDACTED markers longer
    json.dumps(rec)  # always serialisable


# --- redaction of secrets in every shape they come in (issue: 11 of 22 came through) ------------

_MARK = "Q7secretMARKERq7"


def _shapes(mark: str) -> list[tuple[str, object]]:
    """(name, params) pairs: the same secret planted in the shapes seen in the wild."""
    return [
        ("numeric password", {"password": _NUMBER}),
        ("object under credentials", {"credentials": {"user": "ann", "secret": mark}}),
        ("array under apiKeys", {"apiKeys": [mark, mark + "2"]}),
        ("nested deep", {"a": [{"b": {"client_secret": mark}}]}),
        ("JSON inside a string", {"config": json.dumps({"db": {"password": mark}})}),
        ("passphrase", {"passphrase": mark}),
        ("pwd", {"pwd": mark}),
        ("key", {"key": mark}),
        ("x-auth-token", {"X-Auth-Token": mark}),
        ("URL userinfo", {"url": f"https://deploy:{mark}@git.example/repo.git"}),
        ("token as URL user", {"url": f"https://{mark}@github.com/x/y"}),
        ("sk- key in free text", {"text": f"use sk-{mark}ABCDEF please"}),
        ("PEM block", {"text": f"-----BEGIN RSA PRIVATE KEY-----\nMIIE{mark}\n-----END RSA PRIVATE KEY-----"}),
        ("PEM block cut", {"text": f"here: -----BEGIN PRIVATE KEY-----\nMIIE{mark}"}),
        ("labelled in text", {"text": f"login with password: {mark} now"}),
        ("bearer in text", {"note": f"Authorization: Bearer {mark}"}),
        ("query parameter", {"link": f"https://x.example/cb?access_token={mark}&a=1"}),
        ("GitHub token", {"t": f"ghp_{mark}0123456789abc"}),
        ("JWT", {"t": f"eyJ{mark}.eyJzdWIiOiIxIn0.c2ln"}),
        ("AWS key id", {"t": "AKIA" + "Q7SECRETMARKER12"}),
        ("Slack token", {"t": f"xoxb-{mark}-123"}),
        ("cookie header as a member", {"headers": {"Cookie": f"sid={mark}"}}),
    ]


_NUMBER = 98765123454321


def _leaks(shown: str, mark: str) -> bool:
    return any(v in shown for v in (mark, mark[:10], "Q7SECRETMARKER", str(_NUMBER)))


def test_every_planted_secret_shape_is_redacted() -> None:
    for name, params in _shapes(_MARK):
        rec = record({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
        assert not _leaks(rec["params"], _MARK), (name, rec["params"])
        assert REDACTED in rec["params"], name
    # An escaped member name is the same name once decoded.
    (m,) = decode(
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"pass\\u0077ord":"' + _MARK.encode() + b'"}}'
    )
    rec = tap_record(
        "r", "client", m, at_unix=0.0, transport="http", session=None, size=1, method="tools/call", answered=None
    )
    assert not _leaks(rec["params"], _MARK) and "password" in rec["params"]


def test_what_is_not_a_secret_stays() -> None:
    params = {
        "_meta": {"progressToken": "pt-42"},
        "maxTokens": 1024,
        "name": "search",
        "arguments": {"query": "how do keys work", "url": "https://example.com/a?b=c", "usage": {"inputTokens": 12}},
    }
    rec = record({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
    assert json.loads(rec["params"]) == params  # the bytes as sent: nothing to remove


_names = st.sampled_from(
    [
        "password",
        "PASSWORD",
        "Passwd",
        "pass_phrase",
        "api_key",
        "apiKey",
        "API-KEY",
        "apiKeys",
        "client_secret",
        "clientSecret",
        "secretValue",
        "authToken",
        "access_token",
        "refreshToken",
        "authorization",
        "credentials",
        "privateKey",
        "private_key",
        "pwd",
        "key",
        "signature",
        "cookie",
        "sessionKey",
    ]
)
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12)),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=12,
)


@given(
    _names,
    _json_values,
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=16, max_value=600),
    st.sampled_from(["plain", "number", "object", "array", "in-json-string"]),
)
def test_a_secret_under_a_secret_name_never_shows_whatever_the_shape_and_the_cut(name, noise, depth, max_bytes, shape):
    secret_value: object = {
        "plain": _MARK,
        "number": _NUMBER,
        "object": {"v": _MARK},
        "array": [_MARK],
        "in-json-string": _MARK,
    }[shape]
    planted: object = {name: secret_value}
    for _ in range(depth):
        planted = {"wrap": [noise, planted]}
    if shape == "in-json-string":
        planted = {"blob": json.dumps(planted)}
    rec = record(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"x": noise, "y": planted}}, max_bytes=max_bytes
    )
    assert not _leaks(rec["params"], _MARK)
    assert len(rec["params"].encode()) <= max_bytes


def test_the_era_and_the_http_facts_a_recording_keeps() -> None:
    from mcp_sidecar.observe.events import Exchange
    from mcp_sidecar.observe.tap import era

    assert [
        era(t, v) for t, v in [("http", None), ("http", "2025-11-25"), ("http", "2026-07-28"), ("http", "2027-01-01")]
    ] == [
        "streamable-http-2025",
        "streamable-http-2025",
        "streamable-http-2026",
        "streamable-http-2026",
    ]
    assert [era(t, "2026-07-28") for t in ("legacy-sse", "websocket", "inspector-v2")] == [
        "2024-11-05-sse",
        "websocket",
        "inspector-v2",
    ]
    exchange = Exchange("POST", "/mcp", 200, session="secret-session", mcp_method="tools/call")
    exchange.protocol_version, exchange.mcp_name, exchange.last_event_id = "2026-07-28", "x?token=abc123def456", "7"
    value = {"jsonrpc": "2.0", "method": "notifications/progress"}
    (m,) = decode(json.dumps(value).encode())
    rec = tap_record(
        "r",
        "upstream",
        m,
        at_unix=1.0,
        at_mono=5.25,
        transport="http",
        session=None,
        size=1,
        method=None,
        answered=None,
        client="10.0.0.7:5555",
        exchange=exchange,
    )
    assert rec["era"] == "streamable-http-2026"  # a notification: the request's header says
    assert rec["mono"] == 5.25 and rec["client"].startswith("c-") and "10.0.0.7" not in json.dumps(rec)
    assert rec["http"] == {
        "method": "POST",
        "path": "/mcp",
        "status": 200,
        "headers": {
            "mcp-session-id": rec["http"]["headers"]["mcp-session-id"],
            "mcp-protocol-version": "2026-07-28",
            "mcp-method": "tools/call",
            "mcp-name": "x?token=REDACTED",
            "last-event-id": "7",
        },
    }
    assert rec["http"]["headers"]["mcp-session-id"].startswith("s-") and "secret-session" not in json.dumps(rec)


def test_a_filter_by_target_and_the_body_bound_it_asks() -> None:
    from mcp_sidecar.observe.tap import AnyOf

    wanted = TapFilter("r", "tools/call", "echo", 65536)
    assert wanted.wants({"route": "r", "method": "tools/call", "target": "echo"})
    assert not wanted.wants({"route": "r", "method": "tools/call", "target": "slow"})
    assert not wanted.wants({"route": "r", "method": "tools/call"})
    assert AnyOf((TapFilter(), wanted, TapFilter(max_bytes=100))).max_bytes == 65536
    assert AnyOf((TapFilter(),)).max_bytes is None
