"""The supervisor's timing logic under trio's MockClock (autojump): restart
backoff, its reset once a worker is stable, and hang detection -- in virtual
seconds, exactly, without waiting for any of them."""

from __future__ import annotations

from pathlib import Path

import trio

from mcp_sidecar.config.parse import build_config
from mcp_sidecar.supervise.ledger import Ledger, RestartCause
from mcp_sidecar.supervise.statedir import Counters
from mcp_sidecar.supervise.supervisor import Supervisor
from mcp_sidecar.supervise.workers import KillReason, Role, Worker


class _Process:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.killed_at: float | None = None

    def kill(self) -> None:
        self.killed_at = trio.current_time()

    async def wait(self) -> int:
        await trio.sleep_forever()
        return 0


def _supervisor(tmp_path: Path, **supervisor: object) -> Supervisor:
    config = build_config(
        {
            "proxy": {"workers": 1},
            "supervisor": supervisor,
            "route": [{"listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}],
        }
    )
    sup = Supervisor(config, tmp_path, lambda: config)
    sup.ledger = Ledger(Counters.load(tmp_path), None, config.supervisor.alert_threshold)
    return sup


def _worker(sup: Supervisor, pid: int) -> Worker:
    worker = Worker(pid, _Process(pid), None, sup.config)  # type: ignore[arg-type]
    worker.returncode = -9
    return worker


async def test_restart_backoff_doubles_to_its_cap(autojump_clock, tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, restart_backoff_initial="100ms", restart_backoff_max="5s")
    delays = []
    for pid in range(10):
        sup._failed(_worker(sup, pid), Role.ACTIVE, RestartCause.CRASH)
        delays.append(round(sup.next_spawn_at - trio.current_time(), 6))
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0, 5.0]
    assert sup.consecutive_failures == 10
    assert sup.ledger is not None and sup.ledger.counters.data["worker_restarts"] == {"crash": 10}


async def test_a_stable_worker_resets_the_backoff_and_a_silent_one_is_killed(autojump_clock, tmp_path: Path) -> None:
    sup = _supervisor(tmp_path, heartbeat_interval="1s", heartbeat_timeout="5s", stable_after="30s")
    for pid in range(3):
        sup._failed(_worker(sup, pid), Role.ACTIVE, RestartCause.CRASH)
    active = _worker(sup, 100)
    active.returncode = None
    active.role = Role.ACTIVE
    active.serving_since = active.last_heartbeat = trio.current_time()
    sup.actives = [active]
    sup.workers = [active]
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup._monitor_heartbeats)

        async def heartbeats(until: float) -> None:
            while trio.current_time() < until:
                active.last_heartbeat = trio.current_time()
                await trio.sleep(1.0)

        await heartbeats(t0 + 29.0)
        assert sup.consecutive_failures == 3  # not stable yet
        await heartbeats(t0 + 31.0)
        assert sup.consecutive_failures == 0 and sup.next_spawn_at == 0.0  # stable: backoff reset
        # Now the worker's loop stalls: no heartbeat for heartbeat_timeout means a hang.
        silent_from = active.last_heartbeat
        while active.kill_reason is None:
            await trio.sleep(0.05)
        assert active.kill_reason is KillReason.HANG
        killed_at = active.process.killed_at  # type: ignore[attr-defined]
        assert 5.0 < killed_at - silent_from <= 5.0 + 0.25 + 1e-6  # past the timeout, within one check period
        nursery.cancel_scope.cancel()
