"""The supervisor's correlation of messages that two workers forwarded: in the
order they were forwarded, whichever worker's report came first."""

from __future__ import annotations

from mcp_sidecar.config.parse import build_config
from mcp_sidecar.supervise.central import CentralMcp
from mcp_sidecar.supervise.messages import McpDelta


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
