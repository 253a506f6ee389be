"""State directory pieces and alert bookkeeping, without processes."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import trio

from mcp_sidecar.errors import LocalError
from mcp_sidecar.supervise.alerts import AlertState, payload
from mcp_sidecar.supervise.ledger import Ledger, RestartCause
from mcp_sidecar.supervise.statedir import (
    COUNTERS_FILE,
    MAX_EVENTS,
    PID_FILE,
    Counters,
    PidLock,
    ensure_state_dir,
    inspect_pid_file,
)

from ..conftest import needs_root, run_proxyctl


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
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


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


# --- whose directory it is (another local user must not plant files or links) ---------------


def test_a_new_state_dir_is_private(tmp_path: Path) -> None:
    path = ensure_state_dir(tmp_path / "a" / "state")
    assert path.stat().st_mode & 0o777 == 0o700


def test_a_state_dir_others_may_write_into_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir()
    path.chmod(0o777)
    with pytest.raises(LocalError, match=r"is writable by other users \(mode 0777\): refusing it; chmod 700"):
        ensure_state_dir(path)


@needs_root
def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    with pytest.raises(LocalError, match=r"belongs to uid 65534, not to this user \(uid 0\): refusing it"):
        ensure_state_dir(path)


@needs_root
def test_a_link_planted_by_another_user_is_refused_and_ones_own_accepted(tmp_path: Path) -> None:
    mine = ensure_state_dir(tmp_path / "mine")
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert ensure_state_dir(link) == link  # the operator's own link to their own directory
    os.lchown(link, 65534, 65534)
    with pytest.raises(LocalError, match=r"is a symbolic link made by uid 65534, not by this user"):
        ensure_state_dir(link)


def test_run_refuses_such_a_state_dir_in_one_line_before_binding(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir()
    path.chmod(0o757)
    result = run_proxyctl("run", "--forward", "127.0.0.1:0:127.0.0.1:9", "--state-dir", str(path), "--admin", "off")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"proxyctl: error: state directory {path} is writable by other users (mode 0757): refusing it; "
        f"chmod 700 {path} or choose another --state-dir"
    ]
    assert list(path.iterdir()) == []


def test_links_planted_in_the_state_dir_are_never_followed(tmp_path: Path) -> None:
    state = ensure_state_dir(tmp_path / "state")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # The names the old code wrote through, and the files it read.
    (state / "counters.json.tmp").symlink_to(victim)
    (state / COUNTERS_FILE).symlink_to(victim)
    counters = Counters.load(state)
    assert counters.data["worker_restarts"] == {}  # the link was not read as our counters
    counters.bump("worker_restarts", "crash")
    counters.save()
    assert victim.read_text() == "precious"
    assert not (state / COUNTERS_FILE).is_symlink()
    assert json.loads((state / COUNTERS_FILE).read_text())["worker_restarts"] == {"crash": 1}
    pid_state = tmp_path / "pidstate"
    ensure_state_dir(pid_state)
    (pid_state / PID_FILE).symlink_to(victim)
    with pytest.raises(LocalError, match="cannot open the PID file"):
        PidLock(pid_state).acquire()
    assert victim.read_text() == "precious"


# --- writes that fail once running (the Ledger keeps the supervisor going) -------------------


class _FailingCounters(Counters):
    """Counters whose file writes fail with ``error`` while ``failing``."""

    failing: int | None = None

    def save(self) -> None:
        if self.failing is not None:
            raise OSError(self.failing, os.strerror(self.failing))
        super().save()


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO, errno.EROFS])
def test_the_ledger_survives_failing_writes_says_so_once_and_writes_again(tmp_path: Path, caplog, error: int) -> None:
    counters = _FailingCounters.load(tmp_path)
    changes = []
    ledger = Ledger(counters, None, 3, on_state_change=lambda: changes.append(ledger.writes.error))
    counters.failing = error
    with caplog.at_level(logging.WARNING, logger="mcp_sidecar"):
        for _ in range(3):
            ledger.worker_failed(RestartCause.CRASH, 123, "active", "signal 9", 1, 0.1)
        ledger.record("reload", routes=["a"])
        facts = ledger.facts(3).as_json()["state_dir"]
        assert facts["writable"] is False and facts["write_failures"] == 7
        assert facts["error"] == f"{os.strerror(error)} ({errno.errorcode[error]})"
        assert ledger.problems("/run/x")[0].startswith(
            f"state directory /run/x does not take writes ({facts['error']})"
        )
        counters.failing = None
        ledger.retry_save()
    assert [r.getMessage() for r in caplog.records] == ["state.write_failed", "state.write_recovered"]
    assert changes == [facts["error"], None]
    assert ledger.facts(0).as_json()["state_dir"]["writable"] is True and ledger.problems("/run/x") == []
    saved = json.loads((tmp_path / COUNTERS_FILE).read_text())
    assert saved["worker_restarts"] == {"crash": 3} and saved["events"][-1]["event"] == "reload"


# --- activation notices a worker that dies on the way --------------------------------------


class _Process:
    pid = 4242

    def kill(self) -> None:
        pass

    async def wait(self) -> int:
        await trio.sleep_forever()
        return 0


class _DiesWhenActivated:
    """A worker's channel: the worker dies as soon as it is told to serve
    (as one did while building a TLS context from a broken file)."""

    def __init__(self) -> None:
        self.worker = None

    async def send(self, message) -> None:
        self.worker.exited.set()


async def test_activation_gives_up_when_the_worker_exits_not_after_the_startup_timeout(
    autojump_clock, tmp_path: Path
) -> None:
    from mcp_sidecar.config.parse import build_config
    from mcp_sidecar.supervise.supervisor import Supervisor, Worker

    config = build_config({"route": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]})
    supervisor = Supervisor(config, tmp_path, lambda: config)
    channel = _DiesWhenActivated()
    worker = Worker(1, _Process(), channel, config)
    channel.worker = worker
    worker.loaded.set()
    t0 = trio.current_time()
    assert await supervisor._activate(worker) is False
    assert trio.current_time() - t0 < 0.1  # the old code waited out STARTUP_TIMEOUT_S (30 s)
    # And a worker that dies before it has even loaded:
    early = Worker(2, _Process(), channel, config)
    early.exited.set()
    assert await supervisor._activate(early) is False
    assert trio.current_time() - t0 < 0.1
