"""Structured logs: bounded streams (rate limit with a summary), the
per-connection line's policy."""

from __future__ import annotations

import io
import json
import logging

import pytest
import trio

from mcp_sidecar import logs
from mcp_sidecar.logs import RATE_LIMIT_LINES, RATE_LIMIT_WINDOW_S, RateLimiter

from .conftest import connect, echo_roundtrip, route_doc, start_proxy, wait_until


def test_rate_limiter_writes_a_burst_then_counts() -> None:
    limiter = RateLimiter()
    verdicts = [limiter.allow("connection.rejected", logging.WARNING, 0.0 + i * 0.01) for i in range(25)]
    assert [v for v, _ in verdicts] == [True] * RATE_LIMIT_LINES + [False] * 5
    assert limiter.suppressed_total == {"connection.rejected": 5}
    assert limiter.allow("other.event", logging.WARNING, 1.0) == (True, 0)  # per event name
    # The next window starts with a line, carrying the previous window's count.
    assert limiter.allow("connection.rejected", logging.WARNING, RATE_LIMIT_WINDOW_S) == (True, 5)
    assert limiter.expired(RATE_LIMIT_WINDOW_S + 0.5) == []  # nothing dropped in the ended windows
    for _ in range(RATE_LIMIT_LINES + 2):
        limiter.allow("x", logging.ERROR, 20.0)
    assert limiter.expired(20.0 + RATE_LIMIT_WINDOW_S) == [("x", 2, logging.ERROR)]


def _capture() -> io.StringIO:
    stream = io.StringIO()
    logs.configure("json", "info", stream=stream)
    return stream


def _events(stream: io.StringIO, name: str) -> list[dict]:
    return [e for e in map(json.loads, stream.getvalue().splitlines()) if e["event"] == name]


def test_a_storm_writes_a_bounded_number_of_lines_and_a_summary() -> None:
    stream = _capture()
    try:
        logger = logging.getLogger("mcp_sidecar.test")
        for i in range(2000):
            logs.log(logger, logging.WARNING, "connection.rejected", n=i)
        assert len(_events(stream, "connection.rejected")) == RATE_LIMIT_LINES
        logs.limiter.windows["connection.rejected"][0] -= RATE_LIMIT_WINDOW_S  # the window has ended
        logs.flush_suppressed()
        [summary] = _events(stream, "log.suppressed")
        assert (summary["suppressed_event"], summary["suppressed"], summary["level"]) == (
            "connection.rejected",
            2000 - RATE_LIMIT_LINES,
            "warning",
        )
        for i in range(50):  # unlimited lines (the access log in "all" mode) are never dropped
            logs.log(logger, logging.INFO, "connection.closed", unlimited=True, n=i)
        assert len(_events(stream, "connection.closed")) == 50
    finally:
        logs.configure("text", "warning")


@pytest.mark.parametrize("policy, every, expected", [("all", 1, 6), ("off", 1, 0), ("sampled", 2, 3 + 1)])
async def test_connection_log_policy(nursery, echo_port, policy, every, expected) -> None:
    stream = _capture()
    try:
        with trio.fail_after(10):
            proxy = await start_proxy(
                nursery, route_doc(f"127.0.0.1:{echo_port}", connection_log=policy, connection_log_every=every)
            )
            for _ in range(5):
                assert await echo_roundtrip(proxy.port()) == b"ping"
            # One that does not end cleanly: the client resets it.
            import socket
            import struct

            stream_ = await connect(proxy.port())
            await stream_.send_all(b"x")
            await wait_until(lambda: proxy.route().total == 6)
            stream_.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await stream_.aclose()
            await wait_until(lambda: proxy.route().active == 0)
        lines = _events(stream, "connection.closed")
        assert len(lines) == expected, lines
        if policy == "sampled":
            assert [item["end"] for item in lines].count("client_reset") == 1
        assert sum(proxy.route().ended.values()) == 6  # counted either way
    finally:
        logs.configure("text", "warning")
