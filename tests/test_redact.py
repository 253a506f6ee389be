from __future__ import annotations

import io
import json
import logging

from hypothesis import example, given
from hypothesis import strategies as st

from mcp_sidecar import logs
from mcp_sidecar.redact import REDACTED, redact_headers, redact_target, scrub

SECRET = "s3cr3t-Tok3n_value"


def test_headers() -> None:
    headers = [
        (b"X-MCP-Proxy-Auth", f"Bearer {SECRET}".encode()),
        (b"Authorization", b"Basic dXNlcjpwYXNz"),
        (b"Cookie", b"a=b"),
        (b"Origin", b"http://localhost:6274"),
        (b"mcp-session-id", b"abc"),
    ]
    assert redact_headers(headers) == [
        ("X-MCP-Proxy-Auth", REDACTED),
        ("Authorization", REDACTED),
        ("Cookie", REDACTED),
        ("Origin", "http://localhost:6274"),
        ("mcp-session-id", "abc"),
    ]


def test_query_parameters() -> None:
    assert redact_target(f"/sse?transportType=stdio&MCP_PROXY_AUTH_TOKEN={SECRET}&x=1") == (
        f"/sse?transportType=stdio&MCP_PROXY_AUTH_TOKEN={REDACTED}&x=1"
    )
    assert redact_target(f"/?access_token={SECRET}") == f"/?access_token={REDACTED}"
    assert redact_target("/message?sessionId=42") == "/message?sessionId=42"
    assert redact_target("/plain") == "/plain"


def test_scrub_free_text() -> None:
    text = (
        f"GET /?MCP_PROXY_AUTH_TOKEN={SECRET} Authorization: Bearer {SECRET} "
        f'{{"x-mcp-proxy-auth": "{SECRET}"}} token={SECRET}'
    )
    cleaned = scrub(text)
    assert SECRET not in cleaned
    assert cleaned.count(REDACTED) == 4


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60))
@example("BEARER")  # found by hypothesis: "BEARER Bearer <token>" once left the token in
def test_scrub_removes_any_token_value(prefix: str) -> None:
    token = "Zq9" + "x" * 20
    for template in ("?MCP_PROXY_AUTH_TOKEN={t}", " Bearer {t}", "&token={t}"):
        assert token not in scrub(prefix + template.format(t=token))


def test_log_formatters_scrub_fields() -> None:
    for fmt in ("json", "text"):
        stream = io.StringIO()
        logs.configure(fmt, "info", stream=stream)
        logs.log(
            logging.getLogger("mcp_sidecar.test"),
            logging.INFO,
            "http.request",
            target=f"/sse?MCP_PROXY_AUTH_TOKEN={SECRET}",
            header=f"Bearer {SECRET}",
        )
        out = stream.getvalue()
        assert SECRET not in out and REDACTED in out
        if fmt == "json":
            assert json.loads(out)["event"] == "http.request"
    logs.configure("text", "warning")


@given(
    st.text(alphabet=st.sampled_from(list('abcdefghijklmnopqrstuvwxyzABZ0189 ":={}[],-_.İ/@')), max_size=80),
    st.sampled_from(
        [
            "",
            "Bearer abc.def",
            "token=x1",
            "Cookie: a=b",
            "x-api-key: v",
            "passwd: p",
            "pwd=q",
            "Basic Zm9vOmJhcg==",
            "mcp_sidecar_0123456789ab=v",
            "BASİC Zm9vOmJhcg==",
            "COOKİE: a",
            "X-APİ-KEY: v",
            "https://u:p@h/",
            "sk-0123456789abcdefXYZ",
            "ghp_" + "a1" * 12,
            "-----BEGIN PRIVATE KEY-----\nMII\n",
            "AKIA0123456789ABCDEF",
            "eyJhbGciOi.eyJzdWIiOi.sig",
            "xoxb-0123456789-abc",
            "PASSWORD: x",
            "pasSword=y",
        ]
    ),
)
def test_redact_string_shortcut_changes_nothing(text: str, secret: str) -> None:
    """The fast paths (no hint of a secret: text returned as is) give what the
    full patterns give, also where re's IGNORECASE matches "İ" to "i"."""
    from mcp_sidecar.redact import _LABELLED, _SHAPES, _scrub_patterns, redact_string, scrub

    def full(value: str) -> str:
        value = _scrub_patterns(value)
        value = _SHAPES.sub(lambda m: REDACTED + ("@" if m.group(0).endswith("@") else ""), value)
        return _LABELLED.sub(lambda m: m.group(1) + REDACTED, value)

    for sample in (text, text + secret, secret + text):
        if sample.lstrip()[:1] in ("{", "["):
            continue  # (JSON inside a string is walked as JSON: tests/observe/test_tap.py)
        assert redact_string(sample) == full(sample)
        assert scrub(sample) == _scrub_patterns(sample)


_NAMES = st.sampled_from(
    ["name", "text", "arguments", "apiKey", "api_key", "p-i-n", "PIN", "token", "progressToken", "x", "Sig", "data"]
)
_STRINGS = st.one_of(
    st.sampled_from(["hi", "echo", "Bearer abcdefgh", "a=b", "sk-0123456789abcdefghij", "pass: x", "é", '{"key":1}']),
    st.text(max_size=12),
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _STRINGS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_NAMES | st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@given(_JSON)
@example({"a": "x\ny", "p\nin": 1})
def test_the_json_shortcut_skips_only_what_has_nothing_to_remove(value) -> None:
    """redact_json's shortcut (no decode when the text cannot hold a secret) is exact:
    whenever it skips, walking the decoded value would have changed nothing."""
    from mcp_sidecar.redact import _json_may_hold, redact_json, redact_value

    for raw in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        if not _json_may_hold(raw):
            assert redact_value(value) == (value, False)
            assert redact_json(raw) == raw


def test_every_hint_is_looked_for_in_a_json_text() -> None:
    """The shortcut looks for the string hints made of letters and digits in
    the squeezed text and the others as written: no hint is left out, in a
    value or a member name, in any case, with text around it."""
    from mcp_sidecar.redact import _NAME_HINTS, _STRING_HINTS, _json_may_hold

    for hint in (*_STRING_HINTS, *_NAME_HINTS):
        for text in (hint, hint.upper(), f"x{hint}y", f"a b {hint}."):
            assert _json_may_hold(json.dumps({"v": text}).encode()), text
            assert _json_may_hold(json.dumps({text: 1}).encode()), text
