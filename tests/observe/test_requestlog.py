"""The request log's sampling, rate cap and line (sans-io)."""

from __future__ import annotations

from mcp_sidecar.observe.events import McpOutcome
from mcp_sidecar.observe.requestlog import MAX_ID_CHARS, RequestLogPolicy, request_line


def test_sampling_is_exact_and_counted() -> None:
    policy = RequestLogPolicy(0.25, 1000)
    admitted = [policy.admit(i * 0.001) for i in range(100)]
    assert sum(admitted) == 25
    assert admitted[:8] == [False, False, False, True, False, False, False, True]
    assert (policy.written, policy.sampled_out, policy.over_rate) == (25, 75, 0)


def test_the_rate_cap_allows_a_burst_then_the_rate() -> None:
    policy = RequestLogPolicy(1.0, 10)
    assert sum(policy.admit(0.0) for _ in range(50)) == 10  # a burst of one second's worth
    assert policy.over_rate == 40
    assert sum(policy.admit(0.0 + 0.01 * i) for i in range(1, 201)) == 20  # 2 s more at 10 lines/s
    assert policy.as_json() == {"sample": 1.0, "rate_per_s": 10, "written": 30, "sampled_out": 0, "over_rate": 220}


def test_the_line_names_what_happened_without_secrets() -> None:
    secret_session = "a3f1c0de-5eaf-4c6d-b2a1-000000000000"
    line = request_line(
        "r",
        McpOutcome(
            "tools/call",
            "-32602",
            0.0123456,
            "client",
            "websocket",
            "x" * 500,
            secret_session,
            -32602,
            120,
            80,
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "2025-11-25",
            "search",
        ),
    )
    assert line == {
        "route": "r",
        "session": line["session"],
        "transport": "websocket",
        "protocol_version": "2025-11-25",
        "method": "tools/call",
        "target": "search",
        "id": "x" * MAX_ID_CHARS,
        "from": "client",
        "outcome": "error",
        "error_code": -32602,
        "latency_ms": 12.346,
        "request_bytes": 120,
        "response_bytes": 80,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "split_ms": None,  # (who was slow: set by the worker when the answer came where its request went)
    }
    assert secret_session not in repr(line) and line["session"].startswith("s-")
    timeout = request_line("r", McpOutcome("ping", "timeout", None, "upstream", "http", 7, "conn:3"))
    assert (timeout["outcome"], timeout["latency_ms"], timeout["error_code"], timeout["session"]) == (
        "timeout",
        None,
        None,
        "conn:3",
    )
    other = request_line("r", McpOutcome("ping", "other_error", 0.001, "client", "http", True))
    assert (other["error_code"], other["id"]) == ("other_error", None)  # a boolean is not an id


def test_a_string_id_is_redacted_as_the_tap_redacts() -> None:
    line = request_line("r", McpOutcome("ping", "ok", 0.001, "client", "http", "req-sk-0123456789abcdefghij-1"))
    assert line["id"] == "req-REDACTED"  # (the shape ran to the end of the key-like run)


def test_the_line_says_who_was_slow() -> None:
    outcome = McpOutcome("tools/call", "ok", 0.25, "client", parts=(0.001, 0.2, 0.04, 0.0095))
    assert request_line("r", outcome)["split_ms"] == {"network": 1.0, "server": 200.0, "transfer": 40.0, "client": 9.5}
