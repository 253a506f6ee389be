"""``proxyctl top`` and ``proxyctl tap`` against a live in-process worker."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.demo.drive import drive_mcp
from mcp_sidecar.demo.servers import serve_http, serve_ws

from ..conftest import PROXYCTL, free_port, start_proxy, wait_until

TOKEN = "Adm1nT0kenForTheCliTests0123"


async def _proxy(nursery, **extra):
    http_up = await nursery.start(serve_http, "127.0.0.1", 0)
    ws_up = await nursery.start(serve_ws, "127.0.0.1", 0)
    return await start_proxy(
        nursery,
        {
            "route": [
                {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "health_interval": 0},
                {"name": "ws", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{ws_up}", "health_interval": 0},
            ],
            **extra,
        },
        admin=True,
    )


async def _proxyctl(*args: str, env_token: str | None = None):
    import os

    env = dict(os.environ, COLUMNS="160")
    env.pop("MCP_SIDECAR_ADMIN_TOKEN", None)
    if env_token:
        env["MCP_SIDECAR_ADMIN_TOKEN"] = env_token
    return await trio.run_process([*PROXYCTL, *args], capture_stdout=True, capture_stderr=True, check=False, env=env)


async def test_top_without_a_terminal_prints_one_snapshot(nursery) -> None:
    with trio.fail_after(40):
        proxy = await _proxy(nursery)
        await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        await wait_until(lambda: proxy.route("r").active == 0)
        done = await _proxyctl("top", "--admin", f"127.0.0.1:{proxy.admin_port}")
        out = done.stdout.decode()
        assert done.returncode == 0, done.stderr.decode()
        assert "ready" in out.splitlines()[0] and "routes" in out and "MCP methods (last 60 s)" in out
        for text in ("tools/call", "initialize", "ping", "serving", "busiest connections (0 open"):
            assert text in out, text
        methods_part, targets_part = out.split("MCP targets (last 60 s)")
        method_rows = [line for line in methods_part.splitlines() if "tools/call" in line]
        assert len(method_rows) == 2  # route r (streamable HTTP) and route ws
        target_rows = [line.split() for line in targets_part.splitlines() if "tools/call" in line]
        assert sorted((row[1], row[5]) for row in target_rows) == [("r", "echo"), ("r", "slow"), ("ws", "slow")]
        assert "protocol versions: r: 2025-06-18" in targets_part.splitlines()[0]
        as_json = await _proxyctl("top", "--json", "--admin", f"127.0.0.1:{proxy.admin_port}")
        data = json.loads(as_json.stdout)
        assert set(data) == {"status", "mcp", "connections"}
        assert data["mcp"]["routes"][0]["methods"]["tools/call"]["requests"] == 2


async def test_top_and_tap_say_when_nothing_answers() -> None:
    with trio.fail_after(30):
        port = free_port()
        for command in ("top", "tap"):
            done = await _proxyctl(command, "--admin", f"127.0.0.1:{port}")
            err = done.stderr.decode().strip()
            assert done.returncode == 3, err
            assert (
                err.startswith(f"proxyctl: error: admin endpoint 127.0.0.1:{port} does not answer") and "\n" not in err
            )


async def test_tap_streams_readable_lines_and_records_json(nursery, tmp_path) -> None:
    with trio.fail_after(40):
        proxy = await _proxy(nursery, admin={"token": TOKEN})
        recording = tmp_path / "tap.jsonl"
        admin = f"127.0.0.1:{proxy.admin_port}"
        refused = await _proxyctl("tap", "--admin", admin, "--count", "1")
        assert refused.returncode == 1 and b"HTTP 401" in refused.stderr
        result = {}

        async def run_tap() -> None:
            result["done"] = await _proxyctl(
                "tap", "ws", "--admin", admin, "--count", "6", "--output", str(recording), env_token=TOKEN
            )

        async with trio.open_nursery() as inner:
            inner.start_soon(run_tap)
            await wait_until(lambda: proxy.route("ws").observation.taps != ())
            await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
        done = result["done"]
        assert done.returncode == 0, done.stderr.decode()
        lines = done.stdout.decode().splitlines()
        assert len(lines) == 6 and "tapping route ws" in done.stderr.decode()
        assert " ws -> request initialize #1 " in lines[0] and "[websocket 2025-06-18 conn:" in lines[0]
        assert " ws <- response initialize #1 ok " in lines[1] and " ms " in lines[1]
        assert "notifications/progress" in lines[3]  # the slow tool's progress, shown while tapped
        records = [json.loads(line) for line in recording.read_text().splitlines()]
        assert [r["kind"] for r in records[:3]] == ["request", "response", "request"]
        assert {r["route"] for r in records} == {"ws"} and TOKEN not in recording.read_text()
        await wait_until(lambda: proxy.route("ws").observation.taps == ())


def test_tap_and_top_help() -> None:
    import subprocess

    for command in ("tap", "top"):
        done = subprocess.run([*PROXYCTL, command, "--help"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "--admin" in done.stdout and "--token" in done.stdout


async def test_top_on_a_terminal_refreshes_until_q(nursery) -> None:
    import os
    import pty

    with trio.fail_after(40):
        proxy = await _proxy(nursery)
        master, slave = pty.openpty()
        env = dict(os.environ, COLUMNS="140", LINES="60", TERM="xterm")
        process = await trio.lowlevel.open_process(
            [*PROXYCTL, "top", "--interval", "0.3", "--admin", f"127.0.0.1:{proxy.admin_port}"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
        )
        os.close(slave)
        screen = b""
        async with trio.lowlevel.FdStream(master) as terminal:

            async def read_until(text: bytes) -> None:
                nonlocal screen
                while text not in screen:
                    screen += await terminal.receive_some(65536)

            await read_until(b"MCP methods")
            await read_until(b"no MCP requests seen yet")
            await drive_mcp("127.0.0.1", proxy.port("r"), proxy.port("ws"))
            screen = b""
            await read_until(b"tools/call")  # a later refresh shows the traffic
            await terminal.send_all(b"q")
            assert await process.wait() == 0


async def test_tap_shows_any_method_by_name_progress_tokens_and_params_as_json(nursery) -> None:
    """A method outside the spec is shown by its name (its metrics label beside it),
    filtered by it; a progressToken is shown as sent; --json gives params as JSON;
    an unknown route is a usage error (exit 2)."""
    with trio.fail_after(40):
        proxy = await _proxy(nursery, admin={"token": TOKEN})
        admin = f"127.0.0.1:{proxy.admin_port}"
        nosuch = await _proxyctl("tap", "nosuch", "--admin", admin, env_token=TOKEN)
        assert nosuch.returncode == 2 and b"no route 'nosuch'" in nosuch.stderr
        result = {}

        async def run_tap() -> None:
            result["done"] = await _proxyctl(
                "tap", "r", "--method", "acme/reindex", "--json", "--admin", admin, "--count", "2", env_token=TOKEN
            )

        token = "sk-abcdefghijklmnopqrstuvwx"  # (the shape of a secret: a progress token all the same)
        async with trio.open_nursery() as inner:
            inner.start_soon(run_tap)
            await wait_until(lambda: proxy.route("r").observation.taps != ())
            from mcp_sidecar.net.http import request

            headers = [("content-type", "application/json"), ("accept", "application/json")]
            for method in ("tools/list", "acme/reindex"):
                body = {"jsonrpc": "2.0", "id": 5, "method": method, "params": {"_meta": {"progressToken": token}}}
                await request(
                    "127.0.0.1", proxy.port("r"), "/mcp", method="POST", headers=headers, body=json.dumps(body).encode()
                )
        done = result["done"]
        assert done.returncode == 0, done.stderr.decode()
        request_record, answer = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert (request_record["method"], request_record["label"]) == ("acme/reindex", "other")
        assert request_record["params"] == {"_meta": {"progressToken": token}}  # JSON, not a string
        assert answer["kind"] in ("response", "error") and (answer["method"], answer["label"]) == (
            "acme/reindex",
            "other",
        )
