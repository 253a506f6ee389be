"""``proxyctl url``: a gated route's token reaches the operator who asks,
never a collected log (the banner on a pipe, the journal, kubectl logs)."""

from __future__ import annotations

import os
import pty
import select
import subprocess

import trio

from mcp_sidecar.demo.servers import serve_http
from mcp_sidecar.net.http import request

from ..conftest import PROXYCTL, run_proxyctl

TOKEN = "gate-token-for-the-url-tests-0123"


async def test_the_banner_keeps_the_token_out_of_logs_and_proxyctl_url_gives_it(nursery, supervised, tmp_path) -> None:
    with trio.fail_after(60):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        routes = [
            {
                "name": "ui",
                "listen": "127.0.0.1:0",
                "upstream": f"127.0.0.1:{upstream}",
                "gate": "token",
                "gate_token": TOKEN,
                "health_interval": 0,
            },
            {"name": "open", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{upstream}", "health_interval": 0},
        ]
        sup = await trio.to_thread.run_sync(supervised, routes)
        line = await trio.to_thread.run_sync(sup.process.wait_for_line, "route ui is gated")
        assert line == (
            "route ui is gated: its URL carries the token and is not printed here (this output may be "
            "collected); get it with: proxyctl url ui"
        )
        assert TOKEN not in "\n".join(sup.process.lines + sup.process.log_lines)
        got = await trio.to_thread.run_sync(run_proxyctl, "url", "ui", "--state-dir", str(sup.state_dir))
        assert got.returncode == 0, got.stderr
        (url,) = got.stdout.splitlines()
        port = await trio.to_thread.run_sync(sup.port, "ui")
        assert url == f"http://127.0.0.1:{port}/?mcp_sidecar_token={TOKEN}"
        reply = await request("127.0.0.1", port, url.split(str(port), 1)[1])
        assert reply.status == 303 and "set-cookie" in reply.headers  # the gate takes it
        for args, code, message in (
            (["nosuch"], 2, "no route 'nosuch' (routes: ui, open)"),
            (["open"], 2, "route open is not gated (no token to put in a URL)"),
        ):
            done = await trio.to_thread.run_sync(run_proxyctl, "url", *args, "--state-dir", str(sup.state_dir))
            assert (done.returncode, done.stderr.strip()) == (code, f"proxyctl: error: {message}")
    stopped = run_proxyctl("url", "ui", "--state-dir", str(tmp_path / "nothing-here"))
    assert stopped.returncode == 3 and "not running" in stopped.stderr


def test_on_a_terminal_the_banner_prints_the_url(tmp_path) -> None:
    """Someone reading the terminal is the operator: the URL is printed there."""
    config = tmp_path / "gated.toml"
    config.write_text(
        '[admin]\nlisten = "off"\n[[route]]\nname = "ui"\nlisten = "127.0.0.1:0"\n'
        'upstream = "127.0.0.1:9"\ngate = "token"\nhealth_interval = 0\n'
    )
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [*PROXYCTL, "run", "--no-supervise", "--config", str(config), "--log-format", "json"],
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "MCP_SIDECAR_GATE_TOKEN": TOKEN},
    )
    os.close(terminal)
    try:
        seen = b""
        while b"mcp_sidecar_token=" + TOKEN.encode() not in seen:
            assert select.select([controller], [], [], 20)[0], seen
            seen += os.read(controller, 4096)
        assert b"route ui is gated: open this URL once in a browser" in seen
    finally:
        proc.kill()
        proc.wait(timeout=10)
        os.close(controller)
