"""Who was slow, sans-io: the latency split's arithmetic and the burst detector."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_sidecar.observe.slowness import (
    BURST_GAP_S,
    BURST_SILENCE_S,
    MAX_DRAIN_S,
    BurstDetector,
    split_latency,
)

seconds = st.floats(min_value=0, max_value=100, allow_nan=False)


def test_each_part_is_the_time_its_owner_spent() -> None:
    split = split_latency(
        0.5, 0.3, blocked_s=0.05, rtt_client_s=0.01, rtt_upstream_s=0.02, queued_bytes=100_000, delivery_rate=1e6
    )
    assert split.network == pytest.approx(0.03)  # both legs' RTT
    assert split.server == pytest.approx(0.28)  # to the first byte, less the upstream's RTT
    assert split.transfer == pytest.approx(0.15)  # first to last byte, less the wait for the client
    assert split.client == pytest.approx(0.05 + 0.1)  # the wait, and 100 kB at 1 MB/s still to take
    assert split.total == pytest.approx(0.5 + 0.01 + 0.1)


def test_unknowns_and_impossible_figures_stay_within_the_interval() -> None:
    assert split_latency(0.2, None).as_tuple() == (0.0, 0.2, 0.0, 0.0)  # no first byte: all server
    assert split_latency(0.2, 0.5).as_tuple() == (0.0, 0.2, 0.0, 0.0)  # a first byte after the last: clamped
    assert split_latency(0.2, 0.1, rtt_upstream_s=5.0).as_tuple() == pytest.approx((0.1, 0.0, 0.1, 0.0))
    assert split_latency(0.2, 0.1, blocked_s=9.0).as_tuple() == pytest.approx((0.0, 0.1, 0.0, 0.1))
    assert split_latency(0.1, 0.1, queued_bytes=10**12, delivery_rate=1.0).client == MAX_DRAIN_S
    assert split_latency(0.1, 0.1, queued_bytes=1000, delivery_rate=0.0).client == 0.0  # rate unknown


@given(seconds, seconds, seconds, seconds, seconds, st.integers(0, 10**9), st.floats(0, 1e10))
def test_the_parts_add_up_to_what_the_client_saw(duration, first, blocked, rtt_c, rtt_u, queued, rate) -> None:
    split = split_latency(
        duration,
        first,
        blocked_s=blocked,
        rtt_client_s=rtt_c,
        rtt_upstream_s=rtt_u,
        queued_bytes=queued,
        delivery_rate=rate,
    )
    assert min(split.as_tuple()) >= 0
    drain = min(queued / rate, MAX_DRAIN_S) if queued and rate else 0.0
    assert split.total == pytest.approx(duration + rtt_c + drain, abs=1e-9)


def events(detector: BurstDetector, times: list[float]) -> list[bool]:
    return [detector.event(t) for t in times]


def test_events_held_back_and_let_through_together_are_a_burst() -> None:
    held = BurstDetector()
    held.start(0.0)
    assert events(held, [0.2, 0.2, 0.2001, 0.2002]) == [False, False, True, False]  # counted once
    assert held.bursts == 1
    assert events(held, [0.5, 0.5, 0.5]) == [False, False, True] and held.bursts == 2


def test_a_stream_that_streams_is_not_bursty() -> None:
    streaming = BurstDetector()
    streaming.start(0.0)
    assert not any(events(streaming, [0.001 + 0.05 * i for i in range(20)]))
    # A last progress notification and the result together: two, not a burst.
    assert not any(events(streaming, [2.0, 2.0]))
    # Three together without a silence before them (a fast server): not held back.
    fast = BurstDetector()
    fast.start(0.0)
    assert not any(events(fast, [0.001, 0.001 + BURST_GAP_S / 2, 0.001 + BURST_GAP_S]))
    assert streaming.bursts == fast.bursts == 0


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=50))
def test_bursts_need_a_silence_and_three_close_events(times) -> None:
    detector = BurstDetector()
    detector.start(0.0)
    arrivals = sorted(times)
    flagged = events(detector, arrivals)
    for index, burst in enumerate(flagged):
        if burst:
            group = arrivals[index - 2 : index + 1]
            assert len(group) == 3 and group[-1] - group[0] <= 2 * BURST_GAP_S
            before = arrivals[index - 3] if index >= 3 else 0.0
            assert group[0] - before >= BURST_SILENCE_S
