"""Finding the instance as an operator does: proxyctl ls, the global options, and
the demo's banner commands run exactly as printed."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from ..conftest import PROXYCTL, free_port


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PROXYCTL, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def test_ls_and_the_global_options_find_a_supervised_instance(supervised, tmp_path: Path) -> None:
    sidecar = supervised(
        [{"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{free_port()}", "health_interval": 0}],
        {},
        {"workers": 1},
    )
    env = {"MCP_SIDECAR_STATE_DIR": str(tmp_path / "elsewhere")}  # (not the instance's: the options must win)
    status = sidecar.status()
    listed = _run(env, "-s", str(sidecar.state_dir), "ls", "--json")
    assert listed.returncode == 0
    (item,) = [i for i in json.loads(listed.stdout) if i["state_dir"] == str(sidecar.state_dir)]
    assert (item["kind"], item["pid"], item["admin"], item["routes"]) == (
        "supervised",
        status["supervisor"]["pid"],
        status["admin"],
        ["r"],
    )
    text = _run(env, "--state-dir", str(sidecar.state_dir), "ls").stdout
    assert (
        f"{sidecar.state_dir}  pid {status['supervisor']['pid']}  supervised, healthy  admin {status['admin']}" in text
    )
    # The global option before the command, the command's own after it (which wins).
    assert _run(env, "-s", str(sidecar.state_dir), "status").returncode == 0
    assert _run(env, "-s", str(tmp_path / "none"), "status", "--state-dir", str(sidecar.state_dir)).returncode == 0
    assert _run(env, "status").returncode == 3  # the environment's directory: nothing runs there
    top = _run(env, "-s", str(sidecar.state_dir), "top", "--once", "--json")  # the admin address from the instance
    assert top.returncode == 0 and json.loads(top.stdout)["status"]["routes"][0]["name"] == "r"


def test_the_demo_registers_and_its_banner_commands_work_as_printed(proxy_process, tmp_path: Path) -> None:
    env = {"MCP_SIDECAR_STATE_DIR": str(tmp_path / "state")}
    demo = proxy_process("demo", "--http-port", "0", "--echo-port", "0", "--ws-port", "0", "--admin-port", "0", env=env)
    line = demo.wait_for_line("Live view: ", timeout=60)
    top_command = line.removeprefix("Live view: ").split("   MCP messages: ")[0]
    top = subprocess.run(
        [*shlex.split(top_command), "--once", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert top.returncode == 0, top.stderr
    listed = json.loads(_run(env, "ls", "--json").stdout)
    (item,) = [i for i in listed if i["kind"] == "demo"]
    assert item["routes"] == ["demo-http", "demo-echo", "demo-ws"] and item["pid"] == demo.proc.pid
    found = _run(env, "top", "--once", "--json")  # no --admin: the registered demo
    assert found.returncode == 0 and json.loads(found.stdout)["status"]["routes"][0]["name"] == "demo-http"
    demo.signal()
    assert demo.wait(timeout=30) == 0
    assert [i for i in json.loads(_run(env, "ls", "--json").stdout) if i["kind"] == "demo"] == []
