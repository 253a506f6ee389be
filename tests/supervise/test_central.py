"""The supervisor's correlation of messages that two workers forwarded: in the
order they were forwarded, whichever worker's report came first."""

from __future__ import annotations

import json
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.config.parse import build_config
from mcp_sidecar.forward.statsrelay import reduced
from mcp_sidecar.observe.jsonrpc import decode
from mcp_sidecar.observe.mcp import McpTracker
from mcp_sidecar.observe.requestlog import outcome_kind
from mcp_sidecar.supervise.central import EARLY_ANSWER_S, CentralMcp
from mcp_sidecar.supervise.messages import McpDelta

from ..conftest import MESSAGE_MEMBERS


def remote(origin: str, message: dict, at: float) -> tuple:
    return (origin, message, at, "s1", "legacy-sse", 10, None, "2024-11-05", "")


def test_an_answer_waits_for_the_report_of_a_worker_that_has_just_started_serving() -> None:
    config = build_config({"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]})
    central = CentralMcp(config)
    books = central.routes["r"]
    central.apply(1, (McpDelta("r"),), 100.0)  # the old worker, serving
    central.joined(2, 100.0)  # a new one is told to serve; it has not reported yet
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    answer = {"jsonrpc": "2.0", "id": 1, "result": {}}
    # The old worker relays the answer (its stream) before the new one reports the request it forwarded.
    central.apply(1, (McpDelta("r", remote=(remote("upstream", answer, 100.5),)),), 101.0)
    assert books.stats.methods.get("initialize") is None  # held: worker 2 has not reported past 100.5
    central.apply(2, (McpDelta("r", remote=(remote("client", request, 100.2),)),), 101.0)
    assert books.stats.methods["initialize"].outcomes == {"ok": 1}


def test_an_answer_relayed_before_its_request_by_the_clocks_still_completes_it() -> None:
    """Worker 2 read its clock after the answer was relayed (preempted between its
    send and the clock): the answer is held until the request's report comes."""
    config = build_config({"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]})
    central = CentralMcp(config)
    books = central.routes["r"]
    central.joined(1, 100.0)
    central.joined(2, 100.0)
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    answer = {"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2024-11-05"}}
    central.apply(1, (McpDelta("r", remote=(remote("upstream", answer, 100.5),)),), 101.0)
    central.apply(2, (McpDelta("r", remote=(remote("client", request, 100.501),)),), 101.0)
    assert books.stats.methods["initialize"].outcomes == {"ok": 1}
    assert books.pending() == {}


def test_what_a_worker_relays_of_a_message_is_bounded_whatever_the_peer_sent() -> None:
    """Regression: the relayed message kept the peer's id, method, error code,
    a cancellation's target and an initialize answer's version as they came
    (each up to an observed body, 1 MiB): a second's report of a legacy SSE
    route could pass the channel's frame bound, and the supervisor dropped
    the worker.  Now each is bounded, and the supervisor still matches."""
    big = "z" * (512 * 1024)
    sent = [
        {"jsonrpc": "2.0", "id": big, "method": "initialize", "params": {}},
        {"jsonrpc": "2.0", "id": big, "result": {"protocolVersion": big, "isError": [big]}},
        {"jsonrpc": "2.0", "id": big + "1", "method": big},
        {"jsonrpc": "2.0", "id": big + "1", "error": {"code": [big], "message": "x"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "t"}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"x": big}}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2}},
    ]
    relayed = [reduced(decode(json.dumps(m).encode())[0]) for m in sent]
    assert all(len(pickle.dumps(m)) < 1024 for m in relayed)
    config = build_config({"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]})
    central = CentralMcp(config)
    books = central.routes["r"]
    central.joined(1, 100.0)
    origins = ["client", "upstream", "client", "upstream", "client", "client", "client"]
    report = tuple(remote(o, m, 100.0 + n / 10) for n, (o, m) in enumerate(zip(origins, relayed, strict=True)))
    central.apply(1, (McpDelta("r", remote=report),), 101.0)
    methods = books.stats.methods
    assert methods["initialize"].outcomes == {"ok": 1}
    assert methods["other"].outcomes == {"error": 1}
    assert methods["tools/call"].outcomes == {"cancelled": 1}
    assert books.pending() == {}


def test_an_answer_with_an_odd_error_code_is_counted_and_the_supervisor_carries_on() -> None:
    """(An older worker relayed the code as the peer sent it: the supervisor's
    tracker takes any JSON value.)"""
    config = build_config({"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]})
    central = CentralMcp(config)
    central.joined(1, 100.0)
    request = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    answer = {"jsonrpc": "2.0", "id": 3, "error": {"code": [1, 2], "message": "x"}}
    report = (remote("upstream", answer, 100.1), remote("client", request, 100.0))
    central.apply(1, (McpDelta("r", remote=report),), 101.0)
    assert central.routes["r"].stats.methods["ping"].outcomes == {"error": 1}


def test_a_defect_in_the_supervisors_correlation_loses_the_message_not_the_supervisor(monkeypatch) -> None:
    """Fail open, as a worker's observer: counted in mcp_sidecar_observer_errors_total{protocol="mcp"},
    the next messages correlated (under the test suite, STRICT, a defect raises)."""
    config = build_config({"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]})
    central = CentralMcp(config)
    books = central.routes["r"]
    central.joined(1, 100.0)
    real = books.tracker.message

    def defective(origin, message, *args):
        if message.get("id") == 1:
            raise KeyError("a defect")
        return real(origin, message, *args)

    monkeypatch.setattr(books.tracker, "message", defective)
    monkeypatch.setattr("mcp_sidecar.supervise.central.STRICT", False)
    report = (
        remote("client", {"jsonrpc": "2.0", "id": 1, "method": "ping"}, 100.0),
        remote("client", {"jsonrpc": "2.0", "id": 2, "method": "ping"}, 100.1),
        remote("upstream", {"jsonrpc": "2.0", "id": 2, "result": {}}, 100.2),
    )
    central.apply(1, (McpDelta("r", remote=report),), 101.0)
    assert books.stats.methods["ping"].outcomes == {"ok": 1}
    assert books.metrics.observer_errors.labels("r", "mcp").value == 1


FIELDS = st.fixed_dictionaries({}, optional=MESSAGE_MEMBERS)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["client", "upstream"]), FIELDS), min_size=2, max_size=8))
def test_any_json_in_any_member_is_correlated_by_a_worker_and_by_the_supervisor(messages) -> None:
    """Whatever JSON a peer puts in a message's members, neither a worker's
    tracker nor the supervisor's (fed what the worker relays) raises, and the
    supervisor completes the requests the worker completes."""
    config = build_config({"route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]})
    central = CentralMcp(config)
    central.joined(1, 100.0)
    worker = McpTracker(early_answer_s=EARLY_ANSWER_S)  # (the supervisor's rule for answers seen first)
    completed = []
    report = []
    for n, (origin, fields) in enumerate(messages):
        for message in decode(json.dumps({"jsonrpc": "2.0", **fields}).encode()):
            completed += [(o.method, o.status) for o in worker.message(origin, message, 100.0 + n, "s1")]
            report.append(remote(origin, reduced(message), 100.0 + n))
    central.apply(1, (McpDelta("r", remote=tuple(report)),), 200.0)
    books = central.routes["r"]
    counted = sorted(
        (m, s) for m, stats in books.stats.methods.items() for s, k in stats.outcomes.items() for _ in range(k)
    )
    assert counted == sorted((m, outcome_kind(s)) for m, s in completed)
