"""Runtime control as an operator types it: proxyctl route ROUTE drain|disable|enable
and proxyctl log-level, on a supervised tree of two workers; the admin API's twins."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.demo.servers import serve_echo, serve_http
from mcp_sidecar.net.http import request

from ..conftest import connect, receive_all, receive_exactly, run_proxyctl
from ..supervise.test_supervisor import wait_status


def _line(state: str, *args: str, code: int = 0) -> str:
    result = run_proxyctl(*args, "--state-dir", state, timeout=60)
    out = result.stdout if code == 0 else result.stderr
    assert result.returncode == code, result.stdout + result.stderr
    (line,) = out.splitlines()
    return line


async def test_an_operator_drains_disables_and_enables_a_route(nursery, supervised) -> None:
    with trio.fail_after(90):
        echo_up = await nursery.start(serve_echo, "127.0.0.1", 0)
        http_up = await nursery.start(serve_http, "127.0.0.1", 0)
        routes = [
            {"name": "echo", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo_up}", "health_interval": 0},
            {"name": "web", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_up}", "health_interval": 0},
        ]
        sup = await trio.to_thread.run_sync(
            lambda: supervised(routes, {}, {"workers": 2}, admin={"open_on_loopback": True})
        )
        await wait_status(sup, lambda s: len(s["workers"]) == 2 and s["standby"] is not None)
        state = str(sup.state_dir)
        echo_port = await trio.to_thread.run_sync(sup.port, "echo")
        web_port = await trio.to_thread.run_sync(sup.port, "web")
        admin_host, admin_port = (await trio.to_thread.run_sync(sup.status))["admin"].rsplit(":", 1)

        async def run(*args: str, code: int = 0) -> str:
            return await trio.to_thread.run_sync(lambda: _line(state, *args, code=code))

        # Drain: a new client gets a 503 that says why; an open connection goes on.
        held = await connect(echo_port)
        await held.send_all(b"before")
        assert await receive_exactly(held, 6) == b"before"
        assert await run("route", "web", "drain") == (
            "route web draining: new clients are refused (503 for HTTP), open connections finish"
        )
        reply = await request("127.0.0.1", web_port, "/health")
        assert reply.status == 503 and reply.headers["retry-after"] == "30"
        assert json.loads(reply.body)["reason"] == "route web is draining by an operator"
        api = json.loads((await request(admin_host, int(admin_port), "/api/status")).body)
        web = next(r for r in api["routes"] if r["name"] == "web")
        assert web["state"] == "draining" and "proxyctl route web enable" in web["reason"]

        # Disable: the open connection is closed, new ones refused; a reload keeps it.
        assert (await run("route", "echo", "disable")).startswith("route echo disabled: ")
        with trio.fail_after(5):
            assert await receive_all(held) == b""
        await held.aclose()
        refused = await connect(echo_port)
        await refused.send_all(b"x\r\n\r\n")
        with trio.fail_after(5):
            try:
                assert await receive_all(refused) == b""
            except trio.BrokenResourceError:
                pass  # reset
        await refused.aclose()
        assert (await run("reload")).startswith("reloaded: 2 routes")
        await wait_status(sup, lambda s: not s["draining_workers"])
        reply = await request("127.0.0.1", web_port, "/health")
        assert reply.status == 503  # still drained after the reload (new workers)

        # Enable, through the admin API for one of them.
        assert await run("route", "web", "enable") == "route web enabled: new clients are forwarded again"
        assert (await request("127.0.0.1", web_port, "/health")).status == 200
        reply = await request(admin_host, int(admin_port), "/api/routes/echo?action=enable", method="POST")
        assert (reply.status, json.loads(reply.body)) == (200, {"route": "echo", "state": "enabled"})
        stream = await connect(echo_port)
        async with stream:
            await stream.send_all(b"again")
            assert await receive_exactly(stream, 5) == b"again"

        # Refusals: in one line, with the exit codes of the table.
        assert await run("route", "nosuch", "drain", code=1) == (
            "proxyctl: error: no route 'nosuch' (routes: echo, web)"
        )
        usage = run_proxyctl("route", "web", "pause", "--state-dir", state)
        assert usage.returncode == 2 and "pause" in usage.stderr

        # The log level of the whole tree, now.
        assert await run("log-level", "debug") == "log level debug (the supervisor and every worker)"
        await request(admin_host, int(admin_port), "/api/status")  # (the supervisor logs each at debug)
        await trio.to_thread.run_sync(sup.process.wait_for_log, '"level":"debug"')
