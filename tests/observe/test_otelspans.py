"""A caller's trace context read as W3C Trace Context says, whatever it holds."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mcp_sidecar.observe.otelspans import parse_traceparent, split_trace

VALID = re.compile(r"00-([0-9a-fA-F]{32})-([0-9a-fA-F]{16})-([0-9a-fA-F]{2})")
pieces = st.sampled_from(
    ["00", "-", "0" * 16, "4bf92f3577b34da6", "a3ce929d0e0e4736", "00f067aa0ba902b7", "01", " ", "G"]
)


@given(st.lists(pieces, max_size=8).map("".join) | st.text(alphabet="0123456789abcdefABCDEF- +x", max_size=60))
def test_a_traceparent_is_taken_only_when_it_is_one(value) -> None:
    parsed = parse_traceparent(value)
    match = VALID.fullmatch(value)
    if match is None or not int(match[1], 16) or not int(match[2], 16):
        assert parsed is None or not value.startswith("00-") or len(value) != 55
        return
    assert parsed is not None
    assert (parsed.trace_id.hex(), parsed.span_id.hex(), parsed.sampled) == (
        match[1].lower(),
        match[2].lower(),
        bool(int(match[3], 16) & 1),
    )


def test_the_tracestate_follows_the_traceparent_after_one_space() -> None:
    parent, state = split_trace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 rojo=1,congo=t61")
    assert parent is not None and state == "rojo=1,congo=t61"
    assert split_trace("00-00000000000000000000000000000000-00f067aa0ba902b7-01 rojo=1") == (None, "")
    assert split_trace(None) == (None, "")
