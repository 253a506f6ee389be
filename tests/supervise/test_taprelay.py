"""A supervised worker's tap relay: the supervisor's recordings get each
message as its encoded line (the same bytes the recording would have made of
the record), its tap clients the records; nothing twice."""

from __future__ import annotations

import time

from mcp_sidecar.observe.jsonrpc import decode
from mcp_sidecar.observe.recording import message_line, numbered_line
from mcp_sidecar.observe.tap import TapFilter, tap_record
from mcp_sidecar.supervise.taprelay import TapRelay


def record(route: str, body: bytes) -> dict:
    (message,) = decode(body)
    return tap_record(
        route,
        "client",
        message,
        at_unix=time.time(),
        transport="http",
        session="abc",
        size=len(body),
        method=message.method,
        answered=None,
        max_bytes=65536,
        at_mono=time.monotonic(),
        client="127.0.0.1:5000",
    )


def relay(*filters: TapFilter) -> TapRelay:
    made = TapRelay.__new__(TapRelay)  # (its channel and hub are not used to batch)
    made.line_filters = tuple(f for f in filters if f.lines)
    made.record_filters = tuple(f for f in filters if not f.lines)
    return made


def test_a_recordings_messages_cross_as_their_lines_and_the_taps_as_records() -> None:
    call = record("mcp", b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"a":1}}}')
    ping = record("other", b'{"jsonrpc":"2.0","id":8,"method":"ping"}')
    batch = relay(TapFilter("mcp", max_bytes=65536, lines=True), TapFilter(method="ping"))._batch([call, ping], 3)
    assert batch.records == (ping,) and batch.dropped == 3
    ((route, mono, body),) = batch.lines
    assert (route, mono) == ("mcp", call["mono"])
    started = call["mono"] - 1.5
    assert numbered_line(body, 4, round(mono - started, 6)) == message_line(call, 4, started)  # the same bytes
    # A record both want goes both ways; without a recording, records only.
    both = relay(TapFilter("mcp", lines=True), TapFilter("mcp"))._batch([call], 0)
    assert both.records == (call,) and len(both.lines) == 1
    taps_only = relay(TapFilter())._batch([call, ping], 0)
    assert taps_only.records == (call, ping) and taps_only.lines == ()
