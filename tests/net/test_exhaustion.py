"""Local resource exhaustion state and the descriptor budget (sans-io)."""

from __future__ import annotations

from mcp_sidecar.net.exhaustion import READY_WINDOW_S, DescriptorBudget, LocalExhaustion


def test_exhaustion_is_reported_for_a_window_then_forgotten_by_readiness() -> None:
    state = LocalExhaustion()
    assert state.reasons(0.0) == []
    state.record("descriptors", "EMFILE", "upstream_connect", 100.0)
    state.record("descriptors", "EMFILE", "accept", 101.0)
    assert state.reasons(101.5) == ["worker out of descriptors (EMFILE, 0.5 s ago, 2 time(s) since start)"]
    assert state.reasons(101.0 + READY_WINDOW_S + 0.1) == []
    assert state.as_json(200.0)["counts"] == [
        {"resource": "descriptors", "where": "accept", "count": 1},
        {"resource": "descriptors", "where": "upstream_connect", "count": 1},
    ]


def test_descriptor_budget_keeps_a_reserve_and_counts_pipes() -> None:
    budget = DescriptorBudget(limit=256, base=20, reserve=32)
    # 256 - 20 - 32 = 204 descriptors: 102 connections of two sockets each.
    assert budget.allows(101, 0) and not budget.allows(102, 0)
    assert not budget.allows(90, 12)  # twelve splicing directions take 24 more
    assert budget.as_json()["max_connections"] == 102
    assert DescriptorBudget(limit=100_000, base=20).reserve == 5000  # 5 % of a large limit
