"""State directory pieces and alert bookkeeping, without processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mcp_sidecar.supervise.alerts import AlertState, payload
from mcp_sidecar.errors import LocalError
from mcp_sidecar.supervise.statedir import COUNTERS_FILE, MAX_EVENTS, Counters, PidLock, inspect_pid_file


def test_counters_survive_and_are_written_atomically(tmp_path: Path) -> None:
    counters = Counters.load(tmp_path)
    counters.bump("worker_restarts", "crash")
    counters.bump("upstream_connect_failures", "ui", 3)
    for i in range(MAX_EVENTS + 5):
        counters.event("tick", i=i)
    counters.save()
    again = Counters.load(tmp_path)
    assert again.data["worker_restarts"] == {"crash": 1}
    assert again.data["upstream_connect_failures"] == {"ui": 3}
    assert len(again.data["events"]) == MAX_EVENTS and again.data["events"][-1]["i"] == MAX_EVENTS + 4
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_counters_file_is_kept_aside(tmp_path: Path) -> None:
    (tmp_path / COUNTERS_FILE).write_text("{not json")
    counters = Counters.load(tmp_path)
    assert counters.data["worker_restarts"] == {}
    assert (tmp_path / "counters.json.corrupt").read_text() == "{not json"


def test_pid_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock = PidLock(tmp_path)
    lock.acquire()
    state = inspect_pid_file(tmp_path)
    assert (state.running, state.pid) == (True, os.getpid())
    with pytest.raises(LocalError, match=rf"already running \(pid {os.getpid()}"):
        PidLock(tmp_path).acquire()
    lock.release()
    assert inspect_pid_file(tmp_path).describe() == "not running"


def test_alert_threshold_window_interval_and_recovery() -> None:
    state = AlertState(threshold=3, window_s=60, min_interval_s=300)
    assert [state.failure("worker", t) for t in (0, 10, 20)] == [False, False, True]
    assert state.firing() == ["worker"]
    assert state.failure("worker", 30) is False  # already alerted: rate-limited
    assert state.recovered("worker") is True and state.recovered("worker") is False
    assert [state.failure("worker", t) for t in (100, 200, 300)] == [False, False, False]  # not within 60 s
    assert [state.failure("worker", t) for t in (400, 401, 402)] == [False, False, True]  # 5 min later
    assert state.recovered("other") is False


def test_payload_suits_slack_and_discord() -> None:
    body = payload("worker", "critical", "worker crash", {"pid": 1})
    assert body["text"] == body["content"] and body["text"].endswith("worker crash")
    assert json.loads(json.dumps(body))["details"] == {"pid": 1}
