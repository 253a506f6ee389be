"""Faults at run time, as an operator types them: proxyctl fault
list|add|remove|clear on a supervised tree of two workers (exact lines,
exit codes), the admin API's twins, what status, /readyz and the banner say,
a runtime fault kept across a reload and a configured one back after it."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.net.http import request

from ..conftest import fault_doc, run_proxyctl, start_proxy
from ..supervise.test_supervisor import wait_status

TOKEN = "FaultControlAdminT0ken0123456789"


def _run(state: str, *args: str, code: int = 0) -> str:
    result = run_proxyctl(*args, "--state-dir", state, timeout=60)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return (result.stdout if code == 0 else result.stderr).rstrip("\n")


async def answers(port: int) -> bool:
    """True: echoed; False: reset (refused by a fault)."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    try:
        await stream.send_all(b"hi")
        got = b""
        while len(got) < 2:
            chunk = await stream.receive_some(16)
            if not chunk:
                return False
            got += chunk
        return got == b"hi"
    except trio.BrokenResourceError:
        return False
    finally:
        await stream.aclose()


async def test_an_operator_adds_lists_and_removes_faults_on_two_workers(nursery, supervised) -> None:
    with trio.fail_after(120):
        echo = await nursery.start(serve_echo, "127.0.0.1", 0)
        routes = [
            {
                "name": "echo",
                "listen": "127.0.0.1:0",
                "upstream": f"127.0.0.1:{echo}",
                "health_interval": 0,
                "protocol": "tcp",
                "fault": [{"kind": "latency", "name": "slow-link", "latency": "20ms"}],
            }
        ]
        sup = await trio.to_thread.run_sync(
            lambda: supervised(routes, {}, {"workers": 2}, admin={"token": TOKEN}, faults={"enabled": True})
        )
        assert await trio.to_thread.run_sync(sup.process.wait_for_line, "FAULT INJECTION") == (
            "FAULT INJECTION ENABLED ([faults] enabled = true): 1 configured fault(s):"
        )
        assert await trio.to_thread.run_sync(sup.process.wait_for_line, "  fault ") == (
            "  fault echo/slow-link: latency 20ms downstream"
        )
        await wait_status(sup, lambda s: len(s["workers"]) == 2 and s["standby"] is not None)
        state = str(sup.state_dir)
        port = await trio.to_thread.run_sync(sup.port, "echo")
        admin_host, admin_port = (await trio.to_thread.run_sync(sup.status))["admin"].rsplit(":", 1)

        async def run(*args: str, code: int = 0) -> str:
            return await trio.to_thread.run_sync(lambda: _run(state, *args, code=code))

        assert await run("fault", "add", "echo", "down", "--ttl", "10m") == (
            "fault down-1 on route echo: down, for 10m"
        )
        for _ in range(6):  # whichever worker accepts: every one has it
            assert not await answers(port)
        listing = (await run("fault", "list")).splitlines()
        assert listing[0].split() == ["ROUTE", "NAME", "FAULT", "FROM", "INJECTED", "EXPIRES", "IN"]
        assert listing[1].split()[:5] == ["echo", "slow-link", "latency", "20ms", "downstream"]
        down = listing[2].split()
        assert down[:5] == ["echo", "down-1", "down", "runtime", "6"] and down[5] in ("599", "600")
        status = await trio.to_thread.run_sync(lambda: run_proxyctl("status", "--state-dir", state, timeout=30))
        assert "  FAULT INJECTION ENABLED: 2 fault(s) active:" in status.stdout
        assert "    fault echo/down-1: down (injected 6)" in status.stdout
        ready = json.loads((await request(admin_host, int(admin_port), "/readyz")).body)
        assert ready["faults"] == ["echo/slow-link: latency 20ms downstream", "echo/down-1: down"]

        # A reload keeps the operator's fault (new workers get it) and the configured one.
        assert (await run("reload")).startswith("reloaded: 1 route")
        await wait_status(sup, lambda s: not s["draining_workers"] and len(s["workers"]) == 2)
        assert not await answers(port)
        assert await run("fault", "remove", "echo", "down-1") == "fault down-1 removed from route echo"
        assert await answers(port)

        # Mistakes say what is wrong: a setting (2), a route or fault that is not there (1).
        assert await run("fault", "add", "echo", "latency", code=2) == (
            "proxyctl: error: latency: missing (a latency fault needs it)"
        )
        assert await run("fault", "add", "echo", "latency", "--latency", "1s", "--code", "3", code=2) == (
            "proxyctl: error: code: not a setting of latency (it takes name, probability, ttl, count, "
            "direction, latency, jitter)"
        )
        assert await run("fault", "add", "nope", "down", code=1) == "proxyctl: error: no route 'nope' (routes: echo)"
        assert (
            await run("fault", "remove", "echo", "gone", code=1) == "proxyctl: error: no fault 'gone' on route 'echo'"
        )

        # The API's twins, with the token; a configured fault removed comes back with the next reload.
        headers = [("authorization", f"Bearer {TOKEN}")]
        body = json.dumps({"route": "echo", "kind": "limit_data", "bytes": 1, "name": "tiny"}).encode()
        added = await request(admin_host, int(admin_port), "/api/faults", method="POST", body=body, headers=headers)
        assert added.status == 201 and json.loads(added.body)["fault"]["bytes"] == 1
        bad = await request(
            admin_host,
            int(admin_port),
            "/api/faults",
            method="POST",
            body=json.dumps({"route": "echo", "kind": "limit_data"}).encode(),
            headers=headers,
        )
        assert (bad.status, json.loads(bad.body)) == (400, {"error": "bytes: missing (a limit_data fault needs it)"})
        unauthorized = await request(admin_host, int(admin_port), "/api/faults", method="POST", body=body)
        assert unauthorized.status == 401
        api = json.loads((await request(admin_host, int(admin_port), "/api/faults")).body)
        assert [f["name"] for f in api["faults"]] == ["slow-link", "tiny"]
        cleared = await request(admin_host, int(admin_port), "/api/faults?route=echo", method="DELETE", headers=headers)
        assert (cleared.status, json.loads(cleared.body)) == (200, {"removed": 2})
        assert await run("fault", "list") == "no faults"
        assert (await run("reload")).startswith("reloaded: 1 route")
        await wait_status(sup, lambda s: not s["draining_workers"] and len(s["workers"]) == 2)
        assert [line.split()[1] for line in (await run("fault", "list")).splitlines()[1:]] == ["slow-link"]
        assert await run("fault", "clear") == "1 fault(s) removed from every route"


async def test_faults_off_refuses_every_way_in(nursery, supervised) -> None:
    with trio.fail_after(60):
        echo = await nursery.start(serve_echo, "127.0.0.1", 0)
        routes = [{"name": "echo", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo}", "health_interval": 0}]
        sup = await trio.to_thread.run_sync(lambda: supervised(routes, {}, {"workers": 1}))
        await wait_status(sup, lambda s: len(s["workers"]) == 1)
        state = str(sup.state_dir)
        off = "proxyctl: error: fault injection is off: set [faults] enabled = true in the configuration and reload"
        assert await trio.to_thread.run_sync(lambda: _run(state, "fault", "add", "echo", "down", code=1)) == off
        assert await trio.to_thread.run_sync(lambda: _run(state, "fault", "clear", code=1)) == off
        assert await trio.to_thread.run_sync(lambda: _run(state, "fault", "list")) == (
            "fault injection is off ([faults] enabled = false)"
        )
        status = await trio.to_thread.run_sync(lambda: run_proxyctl("status", "--state-dir", state, timeout=30))
        assert "FAULT" not in status.stdout


async def test_an_injected_fault_shows_in_the_connection_detail(nursery) -> None:
    with trio.fail_after(30):
        echo = await nursery.start(serve_echo, "127.0.0.1", 0)
        lag = {"kind": "latency", "name": "lag", "latency": "10ms"}
        proxy = await start_proxy(nursery, fault_doc(f"127.0.0.1:{echo}", lag, protocol="tcp"), admin=True)
        stream = await trio.open_tcp_stream("127.0.0.1", proxy.port("r"))
        await stream.send_all(b"x")
        assert await stream.receive_some(8) == b"x"
        (conn,) = json.loads((await request("127.0.0.1", proxy.admin_port, "/api/connections")).body)["connections"]
        assert conn["faults"] == ["lag: latency 10ms downstream"]
        status = json.loads((await request("127.0.0.1", proxy.admin_port, "/api/status")).body)
        assert status["faults"]["enabled"] and status["faults"]["faults"][0]["injected"] == 1
        await stream.aclose()
