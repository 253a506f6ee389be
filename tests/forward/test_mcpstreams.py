"""The stream gauges are exact (forward/mcpstreams.py): streams of every
kind opened and ended in any interleaving, by any of the ways a stream or its
connection can end -- the server's end, the client's close, a reset, a
drain, an observer that gave up on the bytes -- leave the gauge at what is
open, and at 0 once every connection has closed."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.forward.metrics import Metrics
from mcp_sidecar.forward.observation import Observation, RouteObservation
from mcp_sidecar.forward.observequeue import ObservationQueue
from mcp_sidecar.observe.mcp import McpTracker
from mcp_sidecar.observe.quality import Quality

LISTEN = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": "listen-1",
        "method": "subscriptions/listen",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}},
    }
).encode()
REQUESTS = {
    "get": b"GET /mcp HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    "legacy-sse": b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    "listen": b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(LISTEN), LISTEN),
}
#: How a stream ends: the server ends its response, the client closes, a
#: reset, the proxy's drain, the observer gives up on garbage first.
ENDS = ("server", "client", "reset", "drained", "garbage")
#: The connection's end, as forward/state.End says it, for each way.
CONNECTION_END = {
    "server": ("closed", "upstream"),
    "client": ("closed", "client"),
    "reset": ("client_reset", None),
    "drained": ("drain_timeout", None),
    "garbage": ("closed", "upstream"),
}
EXPECTED_END = {
    "server": "server_closed",
    "client": "client_closed",
    "reset": "reset",
    "drained": "drained",
    "garbage": "server_closed",
}


def head(chunked: bool) -> bytes:
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + framing + b"\r\n"


def event(chunked: bool) -> bytes:
    data = b'data: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n\n'
    return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data


connection_plan = st.tuples(
    st.sampled_from(sorted(REQUESTS)), st.booleans(), st.sampled_from(ENDS), st.integers(0, 2), st.booleans()
)


@settings(max_examples=80, deadline=None)
@given(plans=st.lists(connection_plan, min_size=1, max_size=6), order=st.randoms(use_true_random=False))
def test_streams_opened_and_ended_in_any_interleaving_leave_the_gauge_exact(plans, order) -> None:
    queue = ObservationQueue(clock=lambda: 0.0)
    route = RouteObservation("r", Metrics(), McpTracker(), queue=queue)
    now = [0.0]
    connections = [
        Observation(route, i, Quality(), "http", clock=lambda: now[0], client=f"127.0.0.1:{4000 + i}")
        for i in range(len(plans))
    ]
    # Each connection's steps, in its own order; the connections interleaved at random.
    steps = {i: ["request", "response", *(["event"] * plan[3]), "end", "close"] for i, plan in enumerate(plans)}
    is_open: dict[int, bool] = {}
    while steps:
        i = order.choice(sorted(steps))
        step = steps[i].pop(0)
        if not steps[i]:
            del steps[i]
        kind, chunked, end, _, batched = plans[i]
        conn = connections[i]
        now[0] += 1.0
        if step == "request":
            conn.client_direction.feed(memoryview(REQUESTS[kind]))
        elif step == "response":
            conn.upstream_direction.feed(memoryview(head(chunked)))
        elif step == "event":
            conn.upstream_direction.feed(memoryview(event(chunked)))
        elif step == "end" and end == "server":
            conn.upstream_direction.feed(memoryview(b"0\r\n\r\n" if chunked else b""))  # (b"": the upstream's EOF)
        elif step == "end" and end == "garbage":
            conn.upstream_direction.feed(memoryview(b"zz not a chunk\r\n" if chunked else b"HTTP/1.1 200 OK\r\n"))
        elif step == "close":
            conn.close(*CONNECTION_END[end])
        # Open from its response's head until the server ends it or its connection closes
        # (an observer that gave up on garbage leaves it open until then).
        if step == "response":
            is_open[i] = True
        elif step == "close" or (step == "end" and end == "server"):
            is_open[i] = False
        if not batched or step == "close":
            queue.drain()
            assert route.streams.total_open == sum(is_open.values()), (plans, i, step)

    assert route.streams.total_open == 0
    assert sum(route.streams.ended.values()) == len(plans)  # every stream opened once, ended once
    for kind, chunked, end, _, _ in plans:
        assert route.streams.ended.get((kind, EXPECTED_END[end]), 0) >= 1, (kind, chunked, end, route.streams.ended)
    assert route.tracker.pending == 0  # the listen requests were answered by their streams
