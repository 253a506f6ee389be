"""A configured recording keeps up with a burst: its buffer is bounded in
bytes (tens of thousands of ordinary lines), not in messages counted at the
largest body (a few hundred), and each write takes all that waits."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from mcp_sidecar.demo.servers import serve_http
from mcp_sidecar.forward.recorder import run_recorders
from mcp_sidecar.forward.tap import TapHub
from mcp_sidecar.net.http import request
from mcp_sidecar.observe.tap import TapFilter

from ..conftest import start_proxy, wait_until

BURST = 2000


def _messages(directory: Path) -> list[dict]:
    """The whole lines so far (the recorder may be writing the last one)."""
    lines = [
        json.loads(raw) for path in sorted(directory.glob("*.jsonl")) for raw in path.read_bytes().split(b"\n")[:-1]
    ]
    return [line for line in lines if line["type"] != "header"]


async def test_a_burst_of_messages_observed_at_once_is_recorded_whole(nursery, tmp_path) -> None:
    with trio.fail_after(60):
        http_up = await nursery.start(serve_http, "127.0.0.1", 0)
        directory = tmp_path / "rec"
        proxy = await start_proxy(
            nursery,
            {
                "observe": {"record": {"dir": str(directory)}},
                "route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}"}],
            },
        )
        nursery.start_soon(run_recorders, proxy.config, proxy.proxy.taps)
        await wait_until(lambda: proxy.route("r").observation.recorders != ())
        # One body, BURST notifications: observed in one pass, offered to the recording at once.
        burst = [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": i}} for i in range(BURST)]
        reply = await request(
            "127.0.0.1",
            proxy.port("r"),
            "/mcp",
            method="POST",
            body=json.dumps(burst).encode(),
            headers=[("content-type", "application/json"), ("accept", "application/json, text/event-stream")],
        )
        assert reply.status < 500
        await wait_until(lambda: sum(m.get("count", 1) for m in _messages(directory)) >= BURST)
        got = _messages(directory)
        assert [m["type"] for m in got] == ["message"] * BURST  # no "dropped" line
        assert [m["params"]["n"] for m in got] == list(range(BURST))
        assert [m["seq"] for m in got] == list(range(1, BURST + 1))


def test_a_recordings_buffer_is_bounded_in_bytes_and_counts_what_it_dropped() -> None:
    hub = TapHub([])
    recorder = hub.subscribe_lines(TapFilter(lines=True), 10)
    hub.offer_lines(tuple(("r", float(i), "ping", None, "", b"{}" + b" " * i) for i in range(5)))
    # 2 + 3 + 4 bytes fit in 10; the 5- and 6-byte lines do not.
    assert [line[1] for line in recorder.lines] == [0.0, 1.0, 2.0] and recorder.held == 9
    assert recorder.dropped == 2 and hub.dropped == 2
    assert [line[1] for line in recorder.take(4)] == [0.0]  # (up to 4 bytes: one line; at least one)
    assert [line[1] for line in recorder.take(100)] == [1.0, 2.0] and recorder.held == 0
    hub.unsubscribe(recorder)
    assert hub.dropped == 2  # (a total: the gone recording's drops stay counted)
