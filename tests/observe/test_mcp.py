"""MCP correlation (sans-io): ids, outcomes, cancellation, bounds."""

from __future__ import annotations

import json
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from mcp_sidecar.observe.jsonrpc import MAX_ID_KEY_CHARS, bounded_id, decode
from mcp_sidecar.observe.mcp import McpTracker


def msg(text: str):
    (message,) = decode(text.encode())
    return message


def outcomes(tracker: McpTracker, origin: str, text: str, now: float, session: str = "c1"):
    return [(o.method, o.status, o.duration_s, o.origin) for o in tracker.message(origin, msg(text), now, session)]


def test_ids_of_different_types_are_different_requests():
    t = McpTracker()
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":0,"method":"ping"}', 1.0) == []
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":"0","method":"tools/list"}', 2.0) == []
    assert t.pending == 2
    assert outcomes(t, "upstream", '{"jsonrpc":"2.0","id":"0","result":{}}', 2.5) == [
        ("tools/list", "ok", 0.5, "client")
    ]
    assert outcomes(t, "upstream", '{"jsonrpc":"2.0","id":0,"error":{"code":-32601,"message":"x"}}', 3.0) == [
        ("ping", "-32601", 2.0, "client")
    ]
    assert t.pending == 0


def test_cancelling_request_zero():
    t = McpTracker()
    outcomes(t, "client", '{"jsonrpc":"2.0","id":0,"method":"tools/call"}', 1.0)
    got = outcomes(t, "client", '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":0}}', 4.0)
    assert got == [("tools/call", "cancelled", 3.0, "client")]
    assert t.pending == 0


def test_an_answer_before_its_request_is_no_answer_by_default():
    t = McpTracker()
    assert outcomes(t, "upstream", '{"jsonrpc":"2.0","id":1,"result":{}}', 1.0) == []
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":1,"method":"ping"}', 1.1) == []
    assert t.pending == 1


def test_a_held_early_answer_completes_its_request_timed_zero_then_is_gone():
    t = McpTracker(early_answer_s=5.0)
    answer = '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"x"}}'
    assert outcomes(t, "upstream", answer, 10.0) == []
    # the request, stamped 1 ms after its answer (another process's clock), is answered at once
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":1,"method":"ping"}', 10.001) == [
        ("ping", "-32601", 0.0, "client")
    ]
    assert t.pending == 0
    # consumed: the same id again waits for its own answer
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":1,"method":"ping"}', 11.0) == []
    assert t.pending == 1


def test_held_early_answers_are_swept_after_their_time_and_bounded(monkeypatch):
    import mcp_sidecar.observe.mcp as mcp

    t = McpTracker(early_answer_s=5.0)
    outcomes(t, "upstream", '{"jsonrpc":"2.0","id":1,"result":{}}', 10.0)
    t.sweep(14.9)
    t.sweep(15.0)  # held 5 s: dropped
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":1,"method":"ping"}', 15.1) == []
    assert t.pending == 1
    monkeypatch.setattr(mcp, "MAX_EARLY", 3)
    for i in range(10, 15):
        outcomes(t, "upstream", f'{{"jsonrpc":"2.0","id":{i},"result":{{}}}}', 20.0)
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":11,"method":"ping"}', 20.1) == []  # the oldest went
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":12,"method":"ping"}', 20.1) == [("ping", "ok", 0.0, "client")]


def test_a_boolean_or_float_id_is_not_a_request_id():
    t = McpTracker()
    for bad in ("true", "1.5", "null", "{}"):
        assert outcomes(t, "client", f'{{"jsonrpc":"2.0","id":{bad},"method":"ping"}}', 1.0) == []
    assert t.pending == 0


def test_sessions_and_origins_keep_requests_apart():
    t = McpTracker()
    outcomes(t, "client", '{"jsonrpc":"2.0","id":1,"method":"ping"}', 1.0, session="a")
    outcomes(t, "upstream", '{"jsonrpc":"2.0","id":1,"method":"roots/list"}', 1.0, session="a")
    assert outcomes(t, "upstream", '{"jsonrpc":"2.0","id":1,"result":{}}', 2.0, session="b") == []
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":1,"result":{}}', 2.0, session="a") == [
        ("roots/list", "ok", 1.0, "upstream")
    ]
    assert outcomes(t, "upstream", '{"jsonrpc":"2.0","id":1,"error":{"code":7}}', 3.0, session="a") == [
        ("ping", "other_error", 2.0, "client")
    ]


def test_pending_is_bounded_and_the_oldest_times_out():
    t = McpTracker(max_pending=3)
    for i in range(3):
        assert outcomes(t, "client", f'{{"jsonrpc":"2.0","id":{i},"method":"ping"}}', float(i)) == []
    assert outcomes(t, "client", '{"jsonrpc":"2.0","id":9,"method":"unknown/x"}', 5.0) == [
        ("ping", "timeout", None, "client")
    ]
    assert t.pending == 3
    swept = [(o.method, o.status) for o in t.sweep(5.0 + t.timeout_s)]
    assert swept == [("ping", "timeout"), ("ping", "timeout"), ("other", "timeout")]


@given(
    st.lists(
        st.one_of(st.integers(-(2**40), 2**40), st.text(max_size=8)), unique_by=lambda v: (type(v), v), max_size=20
    )
)
def test_every_request_is_answered_by_its_own_id(ids):
    import json

    t = McpTracker()
    for i, rid in enumerate(ids):
        outcomes(t, "client", json.dumps({"jsonrpc": "2.0", "id": rid, "method": "ping"}), float(i))
    for i, rid in reversed(list(enumerate(ids))):
        got = outcomes(t, "upstream", json.dumps({"jsonrpc": "2.0", "id": rid, "result": {}}), 100.0)
        assert got == [("ping", "ok", 100.0 - i, "client")]
    assert t.pending == 0


def test_a_long_string_id_is_held_by_its_digest_and_still_matches():
    """Regression: an id is the peer's string, as long as an observed body
    (1 MiB): each pending request held it twice (its key and the outcome's
    id), so MAX_PENDING requests never answered could hold 20 GiB.  Past
    MAX_ID_KEY_CHARS an id is held as its digest: matched as before, bounded."""
    t = McpTracker()
    ids = ["x" * (256 * 1024) + str(n) for n in range(40)]  # (the same long prefix: the digests differ)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, long_id in enumerate(ids):
            t.message("client", msg(json.dumps({"jsonrpc": "2.0", "id": long_id, "method": "tools/call"})), n, "c1")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert t.pending == len(ids)
    assert held < 200 * 1024  # (the old code: 20 MiB)
    answer = json.dumps({"jsonrpc": "2.0", "id": ids[7], "result": {}})
    (outcome,) = t.message("upstream", msg(answer), 50.0, "c1")
    assert (outcome.method, outcome.status, outcome.duration_s) == ("tools/call", "ok", 43.0)
    assert outcome.request_id == bounded_id(ids[7]) and len(outcome.request_id) <= MAX_ID_KEY_CHARS
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": ids[8]}}
    assert outcomes(t, "client", json.dumps(cancel), 51.0) == [("tools/call", "cancelled", 43.0, "client")]
    assert t.pending == len(ids) - 2


@given(st.text(max_size=3 * MAX_ID_KEY_CHARS))
def test_a_bounded_id_is_short_stable_and_itself_when_short(text):
    bounded = bounded_id(text)
    assert len(bounded) <= MAX_ID_KEY_CHARS
    assert bounded_id(bounded) == bounded
    assert (bounded == text) == (len(text) <= MAX_ID_KEY_CHARS)


def test_an_error_code_of_any_json_type_is_an_error_not_a_crash():
    """Regression: a list or object code raised TypeError (unhashable) in the
    lookup of the known codes: a worker's observer gave up on the connection,
    and the supervisor's correlation of a legacy SSE session failed with it."""
    for code in ("[1]", '{"a":1}', '"-32601"', "1.5", "true", "null"):
        t = McpTracker()
        outcomes(t, "client", '{"jsonrpc":"2.0","id":1,"method":"ping"}', 1.0)
        answer = '{"jsonrpc":"2.0","id":1,"error":{"code":%s,"message":"x"}}' % code  # noqa: UP031
        (outcome,) = t.message("upstream", msg(answer), 2.0, "c1")
        assert (outcome.method, outcome.status, outcome.duration_s) == ("ping", "other_error", 1.0)
        assert outcome.error_code is None
