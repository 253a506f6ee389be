"""``proxyctl`` as a user runs it: subprocesses, exit codes, exact messages."""

from __future__ import annotations

import json
import os
import signal
import socket
import tomllib
from pathlib import Path

import pytest
import trio

from mcp_sidecar.demo.servers import serve_echo

from ..conftest import connect, receive_all, receive_exactly, run_proxyctl


def test_config_validate_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[[route]]\nlisten = "127.0.0.1:7000"\nupstream = "localhost:8000"\n')
    result = run_proxyctl("config", "validate", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{path}: ok (1 route)\n", "")


def test_config_validate_error_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[route]]\nlisten = "127.0.0.1:7000"\nupstream = "localhost"\n')
    result = run_proxyctl("config", "validate", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (f"proxyctl: error: {path}: route[1].upstream: expected \"HOST:PORT\", got 'localhost'\n")


def test_run_with_invalid_config_starts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[defaults]\nidle_timeout = "soon"\n')
    result = run_proxyctl("run", "--no-supervise", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"proxyctl: error: {path}: defaults.idle_timeout: expected a duration such as 5, 0.25 or \"250ms\", got 'soon'"
    ]
    assert "Traceback" not in result.stderr


def test_run_with_busy_port_names_address_and_owner(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_proxyctl(
            "run", "--state-dir", str(tmp_path / "state"), "--forward", f"127.0.0.1:{port}:localhost:9"
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"proxyctl: error: cannot listen on 127.0.0.1:{port} (route port-{port}): address already in use by "
        f"pid {os.getpid()} ({Path('/proc/self/comm').read_text().strip()}) listening on 127.0.0.1:{port}\n"
    )


def test_bad_forward_spec_exit_2() -> None:
    result = run_proxyctl("run", "--no-supervise", "--forward", "7000")
    assert result.returncode == 2
    assert result.stderr.startswith('proxyctl: error: --forward: 7000: expected "[BIND:]PORT:HOST:HOSTPORT"')


def test_config_show_default_profile_is_valid_toml() -> None:
    result = run_proxyctl("config", "show")
    assert result.returncode == 0, result.stderr
    document = tomllib.loads(result.stdout)
    assert [(r["name"], r["listen"], r["upstream"]) for r in document["route"]] == [
        ("inspector-ui", "@nonloopback:6274", "localhost:6274"),
        ("inspector-proxy", "@nonloopback:6277", "localhost:6277"),
    ]
    assert document["route"][0]["idle_timeout"] == "0s"
    assert document["proxy"]["drain_timeout"] == "25s"


def test_demo_self_check_passes() -> None:
    result = run_proxyctl(
        "demo",
        "--check",
        "--http-port",
        "0",
        "--echo-port",
        "0",
        "--admin-port",
        "0",
        "--ws-port",
        "0",
        "--log-format",
        "json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("mcp-sidecar ")
    assert any(item.startswith("  ok   GET http://127.0.0.1:") and ": 200 in " in item for item in lines)
    assert any(item.startswith("  ok   echo tcp://127.0.0.1:") and "26 bytes back" in item for item in lines)
    assert (
        "  ok   MCP sessions (streamable HTTP, WebSocket, HTTP+SSE): streamable_http 3 responses, "
        "websocket 3 responses, http_sse 2 responses"
    ) in lines
    assert "  ok   MCP 2026-07-28 (stateless: discover, tools, a listen stream): 5 answers" in lines
    assert '"event":"connection.closed"' in result.stderr


async def forwarding_process(nursery, proxy_process, drain_timeout: str):
    """An unsupervised ``proxyctl run`` in front of an echo server, and its route's port."""
    echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
    proc = proxy_process(
        "run",
        "--no-supervise",
        "--forward",
        f"127.0.0.1:0:127.0.0.1:{echo_port}",
        "--drain-timeout",
        drain_timeout,
        "--admin",
        "127.0.0.1:0",
        "--log-format",
        "json",
    )
    await trio.to_thread.run_sync(proc.wait_for_line, "route route-1")
    return proc, proc.route_port("route-1")


async def test_sigterm_drains_open_connection_then_exits_0(nursery, proxy_process) -> None:
    with trio.fail_after(30):
        proc, port = await forwarding_process(nursery, proxy_process, "20s")
        conn = await connect(port)
        await conn.send_all(b"before")
        assert await receive_exactly(conn, 6) == b"before"

        proc.signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait_for_log, '"event":"proxy.draining"')
        with pytest.raises(OSError):  # no longer accepting
            await connect(port)
        await conn.send_all(b"during drain")  # but the open connection lives on
        assert await receive_exactly(conn, 12) == b"during drain"
        assert proc.proc.poll() is None
        await conn.send_eof()
        assert await receive_all(conn) == b""
        await conn.aclose()
        assert await trio.to_thread.run_sync(proc.wait) == 0


async def test_drain_timeout_then_second_signal_semantics(nursery, proxy_process) -> None:
    with trio.fail_after(30):
        proc, port = await forwarding_process(nursery, proxy_process, "60s")
        conn = await connect(port)
        await conn.send_all(b"x")
        assert await receive_exactly(conn, 1) == b"x"
        proc.signal(signal.SIGINT)
        await trio.to_thread.run_sync(proc.wait_for_log, '"event":"proxy.draining"')
        proc.signal(signal.SIGINT)  # a second signal closes connections at once
        assert await trio.to_thread.run_sync(proc.wait) == 0
        assert await conn.receive_some(10) == b""
        await conn.aclose()
        assert any('"end":"drain_timeout"' in item for item in proc.log_lines)


def test_inspector_v2_without_the_gate_beyond_loopback_is_refused_and_starts_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "off.toml"
    config.write_text('[defaults]\ngate = "off"\n')
    result = run_proxyctl("run", "--config", str(config), "--profile", "inspector-v2", "--state-dir", str(state))
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "proxyctl: error: --profile inspector-v2: refusing to listen beyond loopback without the "
        "access gate (@nonloopback:6274, @nonloopback:6275, @nonloopback:6278): Inspector v2 "
        "serves its API token"
    )
    assert "ssh -L 6274:localhost:6274" in line and line.endswith(
        "or pass --dangerously-expose-unprotected on a trusted network"
    )
    assert not state.exists()  # no state directory, no PID file, nothing bound
    # By default the profile is gated, so it is accepted.
    shown = run_proxyctl("config", "show", "--profile", "inspector-v2")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count('gate = "token"') == 3 and "gate_token is set (not shown; generated)" in shown.stdout


def _profile_ports_free() -> bool:
    from mcp_sidecar.net.netinfo import nonloopback_addresses

    hosts = nonloopback_addresses()
    for host in hosts:
        for port in (6274, 6275, 6278):
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    return False
    return bool(hosts)


async def test_inspector_v2_exposed_explicitly_warns_everywhere(supervised) -> None:
    if not _profile_ports_free():
        pytest.skip("needs a non-loopback address with ports 6274, 6275 and 6278 free (the profile's fixed ports)")
    from mcp_sidecar.net.http import request

    expected = (
        "route inspector-ui listens beyond loopback without protection (--dangerously-expose-unprotected): "
        "Inspector v2 serves its API token in its page to anyone who loads it, and that token runs "
        "commands on this host"
    )
    with trio.fail_after(30):
        sup = supervised([], None, None, "--profile", "inspector-v2", "--dangerously-expose-unprotected")
        await trio.to_thread.run_sync(sup.process.wait_for_line, f"WARNING: {expected}")
        log = await trio.to_thread.run_sync(sup.process.wait_for_log, '"event":"exposure.unprotected"')
        assert '"level":"warning"' in log and expected in log
        status = await trio.to_thread.run_sync(sup.status)
        assert expected in status["warnings"]
        text = run_proxyctl("status", "--state-dir", str(sup.state_dir))
        assert f"  WARNING: {expected}" in text.stdout.splitlines()
        admin = status["admin"].rsplit(":", 1)
        reply = await request(admin[0], int(admin[1]), "/api/status")
        assert expected in json.loads(reply.body)["warnings"]


@pytest.mark.parametrize("supervise", ["--supervise", "--no-supervise"])
async def test_admin_beyond_loopback_without_token_is_warned_in_both_modes(proxy_process, tmp_path, supervise) -> None:
    with trio.fail_after(20):
        proc = proxy_process(
            "run",
            supervise,
            "--forward",
            "127.0.0.1:0:127.0.0.1:9",
            "--admin",
            "0.0.0.0:0",
            "--state-dir",
            str(tmp_path / "state"),
            "--log-format",
            "json",
        )
        line = await trio.to_thread.run_sync(proc.wait_for_log, '"event":"admin.exposed_without_token"')
        assert '"level":"warning"' in line and '"address":"0.0.0.0:0"' in line
