"""The command line's conventions: one error style, exit codes that never
overload a meaning, idempotent stop with --wait, no silent fallback for an
empty config, --json wherever a command reports, check on the running
instance, concrete failure messages; and the scripts' venv handling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import trio

from mcp_sidecar.demo.servers import serve_echo, serve_http

from ..conftest import PROXYCTL, ROOT, free_port, run_proxyctl
from ..supervise.test_supervisor import echo_route, wait_status


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    err = result.stderr.strip()
    assert err.startswith("proxyctl: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_usage_errors_have_the_one_error_style_and_exit_2() -> None:
    for args, words in (
        (["stop", "--bogus"], "No such option '--bogus'"),
        (["nosuch"], "No such command"),
        (["config", "validate"], "Missing argument 'FILE'"),
        (["tap", "--count", "0"], "--count"),
    ):
        result = run_proxyctl(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in _one_line_error(result) and "--help" in result.stderr, args
        assert "Usage:" not in result.stderr  # click's own style is gone
    assert run_proxyctl("--help").returncode == 0 and run_proxyctl("stop", "--help").returncode == 0


def test_an_empty_config_file_is_an_error_not_the_inspector_profile(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text('# nothing yet\n[admin]\nlisten = "127.0.0.1:0"\n')
    for args in (
        ["config", "validate", str(empty)],
        ["config", "show", "--config", str(empty)],
        ["run", "--config", str(empty), "--state-dir", str(tmp_path / "s")],
    ):
        result = run_proxyctl(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert f"{empty}: route: no routes" in _one_line_error(result)
    # Routes from the command line next to the file are fine, and so is an explicit profile.
    ok = run_proxyctl("config", "show", "--config", str(empty), "--forward", "18080:localhost:3000", "--json")
    assert ok.returncode == 0 and [r["name"] for r in json.loads(ok.stdout)["config"]["route"]] == ["port-18080"]
    valid = run_proxyctl("config", "validate", str(ROOT / "deploy" / "sidecar.toml"), "--json")
    assert json.loads(valid.stdout) == {
        "ok": True,
        "file": str(ROOT / "deploy" / "sidecar.toml"),
        "routes": ["inspector-ui", "inspector-proxy"],
        "warnings": [],
    }


def test_commands_on_a_stopped_service(tmp_path: Path) -> None:
    state = str(tmp_path / "none")
    stop = run_proxyctl("stop", "--state-dir", state)
    assert (stop.returncode, stop.stdout.strip()) == (0, f"mcp-sidecar is not running (state directory {state})")
    stop_json = run_proxyctl("stop", "--wait", "--json", "--state-dir", state)
    assert stop_json.returncode == 0 and json.loads(stop_json.stdout)["running"] is False
    for command in ("restart", "reload"):
        result = run_proxyctl(command, "--state-dir", state)
        assert result.returncode == 3 and result.stdout == ""  # one line, no status dump
        assert _one_line_error(result) == f"proxyctl: error: mcp-sidecar is not running (state directory {state})"
    status = run_proxyctl("status", "--state-dir", state, "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False


def test_stop_wait_returns_once_stopped_and_stop_again_is_done(supervised, tmp_path: Path) -> None:
    echo_port = free_port()
    sidecar = supervised(
        [{"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo_port}", "health_interval": 0}]
    )
    state = str(sidecar.state_dir)
    reload = run_proxyctl("reload", "--json", "--state-dir", state, timeout=90)
    assert reload.returncode == 0 and json.loads(reload.stdout)["routes"] == ["r"]
    result = run_proxyctl("stop", "--wait", "--json", "--state-dir", state, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    reply = json.loads(result.stdout)
    assert reply["stopped"] is True and reply["stopping"] is True and reply["waited_s"] < 30
    assert sidecar.process.proc.wait(timeout=10) == 0  # it had exited when stop returned
    again = run_proxyctl("stop", "--state-dir", state)
    assert again.returncode == 0 and "not running" in again.stdout


def test_check_asks_the_running_instance_and_never_connects_to_a_wildcard(supervised, tmp_path: Path) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            upstream = await nursery.start(serve_http, "127.0.0.1", 0)
            port = free_port()
            sidecar = await trio.to_thread.run_sync(
                lambda: supervised(
                    [
                        {
                            "name": f"port-{port}",
                            "listen": f"0.0.0.0:{port}",
                            "upstream": f"127.0.0.1:{upstream}",
                            "health_check": "http",
                            "health_path": "/health",
                        }
                    ]
                )
            )
            state = str(sidecar.state_dir)
            for args in ((), (f"port-{port}",)):
                result = await trio.to_thread.run_sync(
                    lambda args=args: run_proxyctl("check", *args, "--json", "--state-dir", state, timeout=60)
                )
                assert result.returncode == 0, result.stdout + result.stderr
                (report,) = json.loads(result.stdout)
                assert report["verdict"] == "healthy"
                through = report["columns"][0]
                assert through["target"] == f"127.0.0.1:{port}"  # not 0.0.0.0
                assert through["steps"][-1]["detail"].startswith("200 in ")
            missing = await trio.to_thread.run_sync(lambda: run_proxyctl("check", "nope", "--state-dir", state))
            assert missing.returncode == 2
            assert "no route 'nope' in the running instance" in _one_line_error(missing)
            assert f"port-{port}" in missing.stderr
            nursery.cancel_scope.cancel()

    trio.run(main)


async def test_check_failures_say_what_happened(nursery) -> None:
    with trio.fail_after(60):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)

        async def check(url: str) -> subprocess.CompletedProcess[str]:
            return await trio.to_thread.run_sync(lambda: run_proxyctl("check", url, "--timeout", "3s"))

        not_mcp = await check(f"http://127.0.0.1:{upstream}/nothing/mcp")  # answered 404 there
        assert not_mcp.returncode == 1
        assert "FAIL http 404" in not_mcp.stdout and "mcp bad json" not in not_mcp.stdout
        assert "not as an MCP endpoint there" in not_mcp.stdout
        not_ws = await check(f"ws://127.0.0.1:{upstream}/health")
        assert not_ws.returncode == 1 and "ExceptionGroup" not in not_ws.stdout
        (line,) = [item for item in not_ws.stdout.splitlines() if "FAIL" in item]
        assert len(line.split("FAIL", 1)[1].strip()) > len("HandshakeError")  # a message, not a class name
        dead = await check(f"tcp://127.0.0.1:{free_port()}")
        assert dead.returncode == 5 and "verdict: unreachable" in dead.stdout


# --- the scripts' virtual environment ---------------------------------------------------


def _script_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "_venv.sh", tree / "scripts")
    (tree / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tree / "constraints.txt").write_text("")
    (tree / "scripts" / "probe").write_text('#!/usr/bin/env bash\nsource "$(dirname "$0")/_venv.sh" ""\necho ok\n')
    (tree / "scripts" / "probe").chmod(0o755)
    return tree


def _python_without_venv(tmp_path: Path) -> Path:
    """A python3 whose venv/ensurepip import fails (as Debian's without python3-venv)."""
    fake = tmp_path / "python3-no-venv"
    real = shutil.which("python3") or "/usr/bin/python3"
    fake.write_text(
        f'#!/usr/bin/env bash\nfor a in "$@"; do case "$a" in *ensurepip*|venv) '
        f'echo "No module named ensurepip" >&2; exit 1;; esac; done\nexec {real} "$@"\n'
    )
    fake.chmod(0o755)
    return fake


def test_scripts_name_the_missing_package_and_leave_nothing_behind(tmp_path: Path) -> None:
    tree = _script_tree(tmp_path)
    env = dict(os.environ, PYTHON=str(_python_without_venv(tmp_path)))
    result = subprocess.run([str(tree / "scripts" / "probe")], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert "install python3-venv (Debian/Ubuntu: apt-get install python3-venv" in result.stderr
    assert not (tree / ".venv").exists()


def test_scripts_repair_a_half_made_venv(tmp_path: Path) -> None:
    tree = _script_tree(tmp_path)
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # no working pip
    (tree / ".venv" / "bin" / "python").chmod(0o755)
    env = dict(os.environ, PYTHON=str(_python_without_venv(tmp_path)))
    result = subprocess.run([str(tree / "scripts" / "probe")], capture_output=True, text=True, env=env, timeout=60)
    assert "is incomplete (no working pip): making it again" in result.stderr
    assert result.returncode == 1 and not (tree / ".venv").exists()  # removed, then creation refused cleanly


def test_check_speaks_tls_and_passes_the_gate_of_a_route(supervised, tls_files, tmp_path: Path) -> None:
    """Through a TLS route behind the access gate: the check speaks TLS, and sends
    the gate's token when it has one (the gate's 401 is not a failure without)."""
    from ..conftest import PROXYCTL

    token = "G4teT0kenForTheCheckTest0123"

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            upstream = await nursery.start(serve_http, "127.0.0.1", 0)
            sidecar = await trio.to_thread.run_sync(
                lambda: supervised(
                    [
                        {
                            "name": "secure",
                            "listen": "127.0.0.1:0",
                            "upstream": f"127.0.0.1:{upstream}",
                            "health_check": "http",
                            "health_path": "/health",
                            "tls_cert": str(tls_files.cert),
                            "tls_key": str(tls_files.key),
                            "gate": "token",
                            "gate_token": token,
                        }
                    ]
                )
            )
            state = str(sidecar.state_dir)

            def check(env_token: str | None) -> dict:
                env = {k: v for k, v in os.environ.items() if k != "MCP_SIDECAR_GATE_TOKEN"}
                if env_token:
                    env["MCP_SIDECAR_GATE_TOKEN"] = env_token
                done = subprocess.run(
                    [*PROXYCTL, "check", "secure", "--json", "--state-dir", state],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    env=env,
                )
                assert done.returncode in (0, 1), done.stdout + done.stderr
                return json.loads(done.stdout)[0]

            without = await trio.to_thread.run_sync(lambda: check(None))
            step = without["columns"][0]["steps"][-1]
            assert step["ok"] and step["detail"].startswith("401 from the access gate"), step
            assert without["verdict"] == "healthy"
            with_token = await trio.to_thread.run_sync(lambda: check(token))
            step = with_token["columns"][0]["steps"][-1]
            assert step["ok"] and step["detail"].startswith("200 in"), step  # TLS, through the gate, to /health
            assert with_token["verdict"] == "healthy" and with_token["columns"][0]["target"].startswith("127.0.0.1:")
            wrong = await trio.to_thread.run_sync(lambda: check("Wr0ngT0kenForTheCheckTest999"))
            assert wrong["columns"][0]["steps"][-1]["detail"].startswith("401 in"), wrong  # refused, as it should be
            assert wrong["verdict"] == "degraded"
            nursery.cancel_scope.cancel()

    trio.run(main)


async def test_a_reader_that_closes_early_is_not_a_failure(nursery, supervised) -> None:
    """``proxyctl status | head -1`` under ``set -o pipefail``: the command's own
    exit code (0: healthy), nothing on stderr -- not 1 for a broken pipe."""
    with trio.fail_after(60):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        sup = await trio.to_thread.run_sync(supervised, [echo_route(echo_port)])
        await wait_status(sup, lambda s: s["healthy"] and s["standby"] is not None)
        for args in (["status"], ["status", "--json"], ["config", "show", "--config", str(sup.config_path)]):
            read, write = os.pipe()
            os.close(read)  # the reader is gone before the first line: every write fails
            try:
                result = await trio.to_thread.run_sync(
                    lambda args=args, write=write: subprocess.run(
                        [*PROXYCTL, *args, *(["--state-dir", str(sup.state_dir)] if args[0] == "status" else [])],
                        stdout=write,
                        stderr=subprocess.PIPE,
                        text=True,
                        timeout=30,
                    )
                )
            finally:
                os.close(write)
            assert (result.returncode, result.stderr) == (0, ""), args


def test_action_commands_say_one_human_line(supervised) -> None:
    """restart (re-reading the configuration, as systemctl restart), restart
    --worker-only, restart --hard, reload and stop: one sentence each, --json for
    scripts; no Python reprs."""
    sidecar = supervised(
        [{"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{free_port()}", "health_interval": 0}],
        {},
        {"workers": 1, "drain_timeout": "5s"},
    )
    state = str(sidecar.state_dir)

    def line(*args: str) -> str:
        result = run_proxyctl(*args, "--state-dir", state, timeout=90)
        assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
        (text,) = result.stdout.splitlines()
        assert "=" not in text and "[" not in text and "{" not in text, text  # (no key=value, no reprs)
        return text

    pids = [w["pid"] for w in sidecar.status()["workers"]]
    restarted = line("restart")
    new = [w["pid"] for w in sidecar.status()["workers"]]
    assert restarted == (
        f"restarted with the configuration re-read: 1 route (r), worker(s) {new[0]}; "
        "the previous ones drain for up to 5 s"
    )
    assert new != pids
    only = line("restart", "--worker-only")
    newer = [w["pid"] for w in sidecar.status()["workers"]]
    assert only == (
        f"restarted: worker(s) {newer[0]} serve; {new[0]} drain for up to 5 s (the configuration was not re-read)"
    )
    assert line("reload").startswith("reloaded: 1 route (r), worker(s) ")
    assert line("restart", "--hard").startswith("restarted (hard): killed worker(s) ")
    counters = sidecar.status()["restarts"]
    assert (counters["restart"], counters["reload"]) == (3, 1)  # re-read, worker-only, hard; reload
    events = [e["event"] for e in sidecar.status()["counters"]["events"]]
    assert events.count("worker_restart") == 2  # worker-only and hard: both in the events list
    stopping = line("stop")
    assert stopping == "stopping: no new connections; open ones drain for up to 5 s"


def test_check_without_an_instance_says_so_and_config_takes_its_file_either_way(tmp_path: Path) -> None:
    state = str(tmp_path / "none")
    result = run_proxyctl("check", "--state-dir", state)
    assert result.returncode == 3 and result.stdout == ""
    assert _one_line_error(result) == (
        f"proxyctl: error: mcp-sidecar is not running (state directory {state}); to check without it, give a URL "
        "(proxyctl check http://HOST:PORT/mcp) or the routes (--config FILE, --forward, --profile)"
    )
    sample = str(ROOT / "deploy" / "sidecar.toml")
    for args in (["validate", sample], ["validate", "--config", sample], ["validate", sample, "--config", sample]):
        result = run_proxyctl("config", *args)
        assert (result.returncode, result.stdout) == (0, f"{sample}: ok (2 routes)\n"), args
    shown = {run_proxyctl("config", "show", *args).stdout for args in ([sample], ["--config", sample])}
    assert len(shown) == 1 and "[[route]]" in shown.pop()
    other = str(tmp_path / "other.toml")
    both = run_proxyctl("config", "validate", sample, "--config", other)
    assert both.returncode == 2
    assert _one_line_error(both).startswith(f"proxyctl: error: two configuration files given ({sample} and --config")


def test_a_misspelt_key_gets_a_suggestion_and_an_unused_gate_token_a_warning(tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text(
        '[[route]]\nname = "r"\nlisten = "127.0.0.1:7000"\nupstream = "127.0.0.1:7001"\nhealth_intervall = "1s"\n'
    )
    result = run_proxyctl("config", "validate", str(typo))
    assert result.returncode == 2
    assert _one_line_error(result) == (
        f"proxyctl: error: {typo}: route[1].health_intervall: unknown key (did you mean health_interval?)"
    )
    plain = tmp_path / "plain.toml"
    plain.write_text('[[route]]\nname = "r"\nlisten = "127.0.0.1:7000"\nupstream = "127.0.0.1:7001"\n')
    env = {**os.environ, "MCP_SIDECAR_GATE_TOKEN": "an-unused-gate-token-0123456789"}
    result = subprocess.run(
        [*PROXYCTL, "config", "validate", str(plain)], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0
    assert result.stderr == 'warning: MCP_SIDECAR_GATE_TOKEN is set but not used: no route has gate = "token"\n'
