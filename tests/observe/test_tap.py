"""What the tap shows of a message: kinds, bounds, redaction (sans-io)."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from mcp_sidecar.observe.events import McpOutcome
from mcp_sidecar.observe.jsonrpc import decode
from mcp_sidecar.observe.tap import TapFilter, tap_record
from mcp_sidecar.redact import REDACTED


def message(value: dict):
    (m,) = decode(json.dumps(value).encode())
    return m


def record(value: dict, origin: str = "client", max_bytes: int = 2048, answered: McpOutcome | None = None,
           method: str | None = "tools/call"):
    return tap_record("r", origin, message(value), at_unix=1_700_000_000.5, transport="http",
                      session="0f6c6e3e-2d1a-4c1b-9a55-7d6a1e1f2b3c", size=99, method=method, answered=answered,
                      max_bytes=max_bytes)


def test_a_request_and_its_response() -> None:
    req = record({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo"}})
    assert req == {"t": 1_700_000_000.5, "route": "r", "direction": "client_to_upstream", "kind": "request",
                   "method": "tools/call", "id": 3, "transport": "http", "session": req["session"], "size": 99,
                   "params": '{"name": "echo"}', "truncated": False}  # the peer's bytes, as sent
    assert req["session"].startswith("s-") and "0f6c6e3e" not in json.dumps(req)
    answered = McpOutcome("tools/call", "ok", 0.0042, "client", "http")
    resp = record({"jsonrpc": "2.0", "id": 3, "result": {"content": []}}, "upstream", answered=answered, method=None)
    assert (resp["kind"], resp["method"], resp["latency_ms"], resp["outcome"], resp["result"]) == (
        "response", "tools/call", 4.2, "ok", '{"content": []}')
    error = record({"jsonrpc": "2.0", "id": 4, "error": {"code": -32601, "message": "no"}}, "upstream", method=None)
    assert (error["kind"], error["method"], error["error"]) == ("error", None, '{"code":-32601,"message":"no"}')  # decoded, re-encoded
    note = record({"jsonrpc": "2.0", "method": "notifications/progress"}, method="notifications/progress")
    assert (note["kind"], note["id"], "params" in note) == ("notification", None, False)


def test_params_are_cut_to_the_bound_and_secrets_removed() -> None:
    rec = record({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "login", "arguments": {"user": "ann", "password": "hunter2-very-secret", "apiKey": "sk-123456789",
                                       "note": "Authorization: Bearer abc.def.ghi", "blob": "x" * 5000}}}, max_bytes=300)
    shown = rec["params"]
    assert rec["truncated"] is True and len(shown) <= 300 + 40
    for secret in ("hunter2-very-secret", "sk-123456789", "abc.def.ghi"):
        assert secret not in shown
    assert f'"password": "{REDACTED}"' in shown and '"user": "ann"' in shown


def test_filters() -> None:
    rec = record({"jsonrpc": "2.0", "id": 1, "method": "tools/call"})
    assert TapFilter().wants(rec) and TapFilter("r").wants(rec) and TapFilter("r", "tools/call").wants(rec)
    assert not TapFilter("other").wants(rec) and not TapFilter(None, "ping").wants(rec)
    assert TapFilter("r").wants_route("r") and not TapFilter("x").wants_route("r")


_SECRET = "Zs3cr3tT0kenValue0123456789"


@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                                      max_size=4), max_leaves=20),
       st.sampled_from(["password", "token", "api_key", "client_secret", "authorization"]),
       st.integers(min_value=64, max_value=400))
def test_any_params_stay_bounded_and_a_named_secret_never_shows(extra, key: str, max_bytes: int) -> None:
    rec = record({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {key: _SECRET, "x": extra}},
                 max_bytes=max_bytes)
    assert _SECRET not in rec["params"]
    assert len(rec["params"].encode()) <= max_bytes + 3 * 40  # cut, then at most a few REDACTED markers longer
    json.dumps(rec)  # always serialisable
