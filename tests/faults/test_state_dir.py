"""The supervisor's state directory failing under a running tree: full
(``/run`` is a small tmpfs shared with other services) or read-only.

The promise (docs/reliability.md): counters, events and the PID file are
best effort once running.  The supervisor keeps serving, says so once in
the log, in ``proxyctl status`` and ``/api/status`` and in
``mcp_sidecar_state_writable``, and writes the counters again when it can.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import trio

from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.net.http import request

from ..conftest import echo_roundtrip, needs_root
from ..supervise.test_supervisor import echo_route, replaced, wait_status


def _writes_refused(status: dict) -> bool:
    return any("does not take writes" in p for p in status["problems"])


async def _metric(admin: str, name: str) -> float:
    host, port = admin.rsplit(":", 1)
    reply = await request(host, int(port), "/metrics")
    for line in reply.body.decode().splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


@needs_root
@pytest.mark.parametrize("fault", ["full", "read-only"])
async def test_a_state_dir_that_refuses_writes_does_not_stop_the_supervisor(
    nursery, supervised, small_fs, fault
) -> None:
    with trio.fail_after(60):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        state_dir = small_fs.path / "state"
        sup = await trio.to_thread.run_sync(lambda: supervised([echo_route(echo_port)], state_dir=state_dir))
        port = await trio.to_thread.run_sync(sup.port, "echo")
        status = await wait_status(sup, lambda s: s["standby"] and s["standby"]["state"] == "standby")
        victim = status["worker"]["pid"]
        if fault == "full":
            small_fs.fill()
        else:
            small_fs.remount("ro")

        # A worker death is counted (a write of the counters file): the supervisor must not die of it.
        os.kill(victim, signal.SIGKILL)
        status = await wait_status(sup, lambda s: replaced(victim)(s) and _writes_refused(s))
        assert sup.process.proc.poll() is None, sup.process.stderr()
        assert status["restarts"]["crash"] == 1
        assert await echo_roundtrip(port) == b"ping"
        assert await _metric(status["admin"], "mcp_sidecar_state_writable") == 0
        assert await _metric(status["admin"], "mcp_sidecar_state_write_failures_total") >= 1
        failed = [line for line in sup.process.log_lines if '"state.write_failed"' in line]
        assert len(failed) == 1, failed  # said once, not per failed write

        # Space (or write access) comes back: the books are written again, the problem is gone.
        if fault == "full":
            small_fs.free()
        else:
            small_fs.remount("rw")
        await wait_status(sup, lambda s: not _writes_refused(s), timeout=20)
        saved = json.loads((state_dir / "counters.json").read_text())
        assert saved["worker_restarts"]["crash"] == 1
        assert any(e["event"] == "worker_crash" for e in saved["events"])
        assert await _metric(status["admin"], "mcp_sidecar_state_writable") == 1
        await trio.to_thread.run_sync(sup.process.wait_for_log, '"state.write_recovered"')
