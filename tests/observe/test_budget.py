"""The observation budgets, sans-io: the CPU token bucket (times passed in)
and the worker-wide inspection memory, with the observers charging it."""

from __future__ import annotations

import pytest

from mcp_sidecar.observe.budget import InspectionMemoryExhausted, MemoryBudget, ObservationBudget
from mcp_sidecar.observe.http import HttpObserver
from mcp_sidecar.observe.websocket import FrameScanner


def test_nothing_is_shed_while_the_worker_has_spare_cpu() -> None:
    budget = ObservationBudget(0.25, now=0.0)
    budget.load(cpu_s=10.0, wall_s=0.0)
    budget.load(cpu_s=10.5, wall_s=1.0)  # 50 % busy: headroom
    assert budget.utilization == 0.5 and not budget.pressure
    assert budget.spend(0.9, 1.0) and budget.admit(1.0)  # far over the share, and yet
    assert budget.level_s == 0.0  # no debt accrues: observation used idle time
    budget.load(cpu_s=11.45, wall_s=2.0)  # 95 % busy: saturated
    assert budget.pressure
    assert not budget.spend(0.3, 2.0)  # 250 ms refilled, 300 ms spent: shed


def test_under_pressure_the_bucket_refills_at_its_share_up_to_a_burst() -> None:
    budget = ObservationBudget(0.25, now=100.0, burst_window_s=1.0)  # 250 ms of observation per second
    budget.pressure = True
    assert budget.capacity_s == 0.25 and budget.admit(100.0)
    assert budget.spend(0.2, 100.0)  # within the burst
    assert not budget.spend(0.1, 100.0)  # 50 ms in debt
    assert not budget.admit(100.1)  # refilled 25 ms: still in debt
    assert budget.admit(100.3)  # refilled 75 ms: 25 ms available
    assert budget.spend(0.01, 100.3) and budget.spent_s == pytest.approx(0.31)
    # A long idle spell refills to the burst, never beyond it.
    budget.spend(0.0, 1000.0)
    assert budget.level_s == pytest.approx(0.25)
    facts = budget.as_json(1000.0)
    assert facts["cpu_share"] == 0.25 and facts["pressure"] is True and facts["available_s"] == 0.25


def test_a_whole_core_never_sheds() -> None:
    budget = ObservationBudget(1.0, now=0.0)
    budget.pressure = True
    assert budget.spend(50.0, 0.0) and budget.admit(0.0)
    assert budget.spent_s == 50.0
    with pytest.raises(ValueError):
        ObservationBudget(0.0, now=0.0)


def test_memory_budget_refuses_growth_past_its_limit_and_takes_back_releases() -> None:
    budget = MemoryBudget(1000)
    a, b = budget.allowance(), budget.allowance()
    a.hold(600)
    b.hold(400)
    assert (budget.used, budget.peak) == (1000, 1000)
    with pytest.raises(InspectionMemoryExhausted):
        b.hold(401)
    assert (b.held, budget.used, budget.exhausted) == (400, 1000, 1)
    a.hold(100)  # shrinking always succeeds
    b.hold(900)
    assert budget.used == 1000
    a.release()
    b.release()
    assert (budget.used, budget.peak, budget.exhausted) == (0, 1000, 1)


def test_http_observer_charges_json_bodies_and_gives_everything_back() -> None:
    budget = MemoryBudget(64 * 1024)
    observer = HttpObserver(budget.allowance())
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    observer.feed_client(head + b"{" + b" " * 30_000, 0.0)
    assert budget.used == 30_001
    with pytest.raises(InspectionMemoryExhausted):
        observer.feed_client(b" " * 40_000, 0.1)
    observer.close()
    assert budget.used == 0
    # A body that completes is parsed and given back at once.
    other = HttpObserver(budget.allowance())
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    events = other.feed_client(
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body,
        0.0,
    )
    assert [type(e).__name__ for e in events] == ["JsonRpcSeen"]
    assert budget.used == 0


def test_frame_scanner_charges_a_text_message_being_reassembled() -> None:
    budget = MemoryBudget(1 << 20)
    scanner = FrameScanner(memory=budget.allowance())
    first = bytes([0x01, 126]) + (1000).to_bytes(2, "big") + b"a" * 1000  # text, not fin
    scanner.feed(first)
    assert budget.used == 1000
    scanner.feed(bytes([0x80, 3]) + b"end")  # continuation, fin
    assert budget.used == 0
    scanner.feed(first)
    scanner.close()
    assert budget.used == 0
