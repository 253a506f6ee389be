"""Per-method and per-transport MCP figures, sessions (sans-io, explicit times)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcp_sidecar.observe.events import McpOutcome
from mcp_sidecar.observe.mcpstats import (
    MAX_SAMPLES,
    MAX_SESSIONS,
    SESSION_IDLE_S,
    WINDOW_S,
    McpStats,
    quantile,
    session_ref,
)


def outcome(
    method: str = "tools/call", status: str = "ok", duration: float | None = 0.010, transport: str = "http"
) -> McpOutcome:
    return McpOutcome(method, status, duration, "client", transport)


def test_rates_errors_and_quantiles_over_the_window() -> None:
    stats = McpStats()
    for i in range(100):  # one per second for 100 s: 1..100 ms
        stats.outcome(outcome(duration=(i + 1) / 1000), float(i))
    stats.outcome(outcome(status="-32601", duration=0.5), 100.0)
    stats.outcome(outcome(status="timeout", duration=None), 100.0)
    stats.outcome(outcome(status="cancelled", duration=3.0), 100.0)
    view = stats.as_json(100.0, {"tools/call": 2})["methods"]["tools/call"]
    assert view["requests"] == 103
    assert view["outcomes"] == {"ok": 100, "error": 1, "timeout": 1, "cancelled": 1}
    assert view["errors"] == {"-32601": 1}
    assert view["in_flight"] == 2
    # the window holds t >= 40: 60 ok (41..100 ms), the error (500 ms), the timeout and the cancellation
    assert view["rate_per_s"] == round(63 / WINDOW_S, 3)
    assert view["errors_per_s"] == round(3 / WINDOW_S, 3)
    # latencies: 41..100 ms and 500 ms (a timeout has none; a cancellation's is not a response time)
    ordered = sorted([(i + 1) / 1000 for i in range(40, 100)] + [0.5])
    assert view["p50_ms"] == round(quantile(ordered, 0.5) * 1000, 3) == 71.0
    assert view["p99_ms"] == round(quantile(ordered, 0.99) * 1000, 3)
    empty = stats.as_json(1000.0, {})["methods"]["tools/call"]
    assert (empty["rate_per_s"], empty["p95_ms"], empty["requests"]) == (0.0, None, 103)


def test_each_transport_era_is_counted_apart() -> None:
    stats = McpStats()
    for transport in ("legacy-sse", "http", "http", "websocket", "inspector-v2"):
        stats.outcome(outcome(transport=transport), 1.0)
    stats.message("sess-1", "10.0.0.1:5000", "websocket", 1.0, "initialize")
    view = stats.as_json(2.0, {})
    assert list(view["transports"]) == ["legacy-sse", "http", "websocket", "inspector-v2"]
    assert {t: v["requests"] for t, v in view["transports"].items()} == {
        "legacy-sse": 1,
        "http": 2,
        "websocket": 1,
        "inspector-v2": 1,
    }
    assert view["transports"]["websocket"]["sessions_open"] == 1
    assert view["methods"]["tools/call"]["transports"] == {
        "legacy-sse": 1,
        "http": 2,
        "websocket": 1,
        "inspector-v2": 1,
    }


def test_the_window_is_bounded_and_the_rate_uses_the_span_it_covers() -> None:
    stats = McpStats()
    for i in range(MAX_SAMPLES + 500):  # 1000 per second: more than the bound holds within the window
        stats.outcome(outcome(), i / 1000)
    method = stats.methods["tools/call"]
    assert len(method.recent) == MAX_SAMPLES
    now = (MAX_SAMPLES + 499) / 1000
    rate = method.as_json(now)["rate_per_s"]
    assert 990 <= rate <= 1010  # not MAX_SAMPLES / 60


def test_sessions_are_hashed_end_expire_and_are_bounded() -> None:
    stats = McpStats()
    secret = "0f6c6e3e-2d1a-4c1b-9a55-7d6a1e1f2b3c"
    stats.message(secret, "127.0.0.1:4000", "http", 1.0, "initialize")
    stats.message(secret, "127.0.0.1:4000", "http", 2.0, None)  # a notification: not a request
    stats.message(secret, "127.0.0.1:4000", "http", 3.0, "tools/call")
    stats.message("conn:7", "127.0.0.1:4001", "websocket", 3.0, "ping")
    view = stats.as_json(4.0, {})
    assert secret not in repr(view)
    assert view["sessions"] == [
        {
            "session": session_ref(secret),
            "client": "127.0.0.1:4000",
            "transport": "http",
            "protocol_version": "unknown",
            "age_s": 3.0,
            "idle_s": 1.0,
            "requests": 2,
            "last_method": "tools/call",
        },
        {
            "session": "conn:7",
            "client": "127.0.0.1:4001",
            "transport": "websocket",
            "protocol_version": "unknown",
            "age_s": 1.0,
            "idle_s": 1.0,
            "requests": 1,
            "last_method": "ping",
        },
    ]
    assert session_ref(secret).startswith("s-") and len(session_ref(secret)) == 14
    stats.end_session("conn:7")
    assert stats.as_json(4.0, {})["sessions_open"] == 1
    assert stats.as_json(3.0 + SESSION_IDLE_S, {})["sessions_open"] == 0  # idle too long
    for i in range(MAX_SESSIONS + 5):
        stats.message(f"s{i}", "c", "http", 10.0 + i, "ping")
    assert len(stats.sessions) == MAX_SESSIONS and stats.sessions_evicted == 5
    assert "s0" not in stats.sessions and f"s{MAX_SESSIONS + 4}" in stats.sessions


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=50))
def test_quantiles_lie_within_the_samples_and_are_ordered(values: list[float]) -> None:
    ordered = sorted(values)
    q50, q95, q99 = (quantile(ordered, q) for q in (0.5, 0.95, 0.99))
    assert ordered[0] <= q50 <= q95 <= q99 <= ordered[-1]
