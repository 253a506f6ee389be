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

from ..conftest import feed_json_exchange, start_proxy, wait_until

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


def _observed(recording_bytes: int = 1 << 24, method: str | None = None):
    """An HTTP connection's observation with a recording of its route (of one method's messages)."""
    from mcp_sidecar.forward.metrics import Metrics
    from mcp_sidecar.forward.observation import Observation, RouteObservation
    from mcp_sidecar.observe.mcp import McpTracker
    from mcp_sidecar.observe.quality import Quality

    route = RouteObservation("r", Metrics(), McpTracker())
    recording = TapHub([route]).subscribe_lines(TapFilter("r", method=method, lines=True), recording_bytes)
    return route, Observation(route, 1, Quality(), "http", clock=lambda: 0.0), recording


def _post(observation, messages: list[dict], reply: bytes, reply_headers: bytes = b"") -> None:
    feed_json_exchange(observation, json.dumps(messages).encode(), reply, reply_headers)


def test_a_line_built_later_shows_the_exchange_as_it_was_when_its_message_was_seen() -> None:
    """A message's line is built when the recording takes its batch, after the
    exchange moved on: the ``initialize`` request's line must not show the
    session its answer named (the request did not send one); the answer's does."""
    _, observation, recording = _observed()
    _post(
        observation,
        [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}],
        b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25"}}',
        b"Mcp-Session-Id: abc123\r\n",
    )
    assert len(recording.waiting) == 2 and recording.lines == []  # (nothing built on the forwarding's path)
    request_line, answer_line = (json.loads(line[5]) for line in recording.take(1 << 20))
    assert request_line["kind"] == "request" and "mcp-session-id" not in request_line["http"]["headers"]
    assert answer_line["kind"] == "response" and answer_line["http"]["headers"]["mcp-session-id"].startswith("s-")


def test_messages_waiting_for_their_lines_hold_a_bounded_number_of_bytes(monkeypatch) -> None:
    """A message waiting for its line keeps its carrier alive (a batch's
    messages share one body and are each counted with it): past
    WAITING_LIMIT_BYTES the lines are built there and then, and nothing is lost."""
    from mcp_sidecar.forward import tap

    monkeypatch.setattr(tap, "WAITING_LIMIT_BYTES", 64 * 1024)
    _, observation, recording = _observed()
    batch = [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}} for n in range(300)]
    _post(observation, batch, b"")
    assert recording.waiting_bytes <= 64 * 1024 and len(recording.lines) > 0  # (built in passing)
    assert [json.loads(line[5])["params"]["n"] for line in recording.take(1 << 24)] == list(range(300))
    assert recording.dropped == 0 and recording.held == 0


def test_a_line_that_cannot_be_built_is_counted_and_the_others_recorded(monkeypatch) -> None:
    """A defect of ours while building a line loses that message only:
    counted as the observer's MCP errors, logged once; under the test suite
    (STRICT) it would raise."""
    from mcp_sidecar.forward import tap

    real = tap.line_body

    def broken(route, origin, message, *args, **kwargs):
        if message.id == 2:
            raise RuntimeError("a defect")
        return real(route, origin, message, *args, **kwargs)

    monkeypatch.setattr(tap, "line_body", broken)
    monkeypatch.setattr(tap, "STRICT", False)
    route, observation, recording = _observed()
    _post(observation, [{"jsonrpc": "2.0", "id": n, "method": "ping"} for n in (1, 2, 3)], b"[]")
    assert [json.loads(line[5])["id"] for line in recording.take(1 << 20)] == [1, 3]
    errors = route.metrics.registry.get_sample_value(
        "mcp_sidecar_observer_errors_total", {"route": "r", "protocol": "mcp"}
    )
    assert errors == 1 and recording.delivered == 2


async def test_a_batch_is_built_in_steps_with_the_forwarding_served_between() -> None:
    """The relay or the recorder builds what waits BUILD_STEP lines at a
    time: another task runs between two steps (a batch of a few hundred
    lines is milliseconds of work the event loop must not be held for)."""
    from mcp_sidecar.forward.tap import BUILD_STEP

    _, observation, recording = _observed()
    _post(observation, [{"jsonrpc": "2.0", "method": "notifications/message"}] * (3 * BUILD_STEP), b"")
    seen: list[int] = []
    building = True

    async def forwarding() -> None:
        while building:
            seen.append(len(recording.lines))
            await trio.lowlevel.checkpoint()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forwarding)
            await trio.lowlevel.checkpoint()
            await recording.build_waiting()
            building = False
    assert len(recording.lines) == 3 * BUILD_STEP and recording.waiting == []
    assert any(0 < n < 3 * BUILD_STEP for n in seen)  # (served while the batch was half built)


def test_a_pretty_printed_message_is_recorded_on_one_line() -> None:
    """Regression: a body's JSON text went into the line as the peer wrote it,
    line breaks included, so a pretty-printed request or answer split its line
    and the file no longer read back (``proxyctl replay``: "not a JSON line")."""
    from mcp_sidecar.observe.recording import header, header_line, numbered_line, read_recording

    _, observation, recording = _observed()
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"t": "a\nb"}}}
    reply = b'{\r\n "jsonrpc": "2.0",\r\n "id": 7,\r\n "result": {"content": []}\r\n}'
    feed_json_exchange(observation, json.dumps(call, indent=2).encode(), reply)
    head = header(sidecar="t", wanted={}, routes={}, max_body_bytes=1 << 16, started_unix=0.0, started_mono=0.0)
    lines = [header_line(head)] + [
        numbered_line(line[5], seq, 0.0) for seq, line in enumerate(recording.take(1 << 20), start=1)
    ]
    read = read_recording("rec.jsonl", b"".join(lines).splitlines(keepends=True))
    assert [m["kind"] for m in read.messages] == ["request", "response"]
    assert read.messages[0]["params"] == call["params"] and read.messages[1]["result"] == {"content": []}


def test_a_recording_of_one_method_gets_its_requests_and_their_answers_only() -> None:
    route, observation, recording = _observed(method="ping")
    assert not route.record_all  # (the names are worked out as the message is seen, to filter)
    asked = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    _post(observation, asked, b'[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}]')
    lines = [json.loads(line[5]) for line in recording.take(1 << 20)]
    assert [(m["kind"], m["id"], m["method"]) for m in lines] == [("request", 1, "ping"), ("response", 1, "ping")]
