"""Who may talk to the admin endpoint: only requests for its own names
(DNS rebinding), state changes and the tap only with its token and never
from another origin (CSRF)."""

from __future__ import annotations

import os
import shlex
import stat

import trio

from mcp_sidecar.net.http import request_on

from ..conftest import PROXYCTL, connect, route_doc, start_proxy, wait_until

TOKEN = "Adm1n-access-token-0123456789"


async def _ask(
    port: int,
    target: str,
    *,
    host: str | None = None,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
):
    stream = await connect(port)
    return await request_on(stream, host or f"127.0.0.1:{port}", target, method=method, headers=headers, body=body)


async def test_a_host_that_is_not_this_endpoint_gets_nothing(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        doc = route_doc(f"127.0.0.1:{echo_port}")
        doc["admin"] = {"hosts": ["sidecar.example"], "open_on_loopback": True}
        proxy = await start_proxy(nursery, doc, admin=True)
        port = proxy.admin_port
        # A page on a name re-pointed at 127.0.0.1 (DNS rebinding) names its own host:
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "localhost.evil"):
            for target in ("/api/status", "/api/tap", "/metrics", "/dashboard"):
                reply = await _ask(port, target, host=host)
                assert reply.status == 421, (host, target)
                assert b"DNS rebinding" in reply.body
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            "LOCALHOST",
            f"[::1]:{port}",
            "sidecar.example",
            f"Sidecar.Example.:{port}",
            "10.1.2.3:6279",
        ):
            assert (await _ask(port, "/api/status", host=host)).status == 200, host


async def test_another_origin_cannot_drain_or_tap_even_with_the_token(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        doc = route_doc(f"127.0.0.1:{echo_port}")
        doc["admin"] = {"token": TOKEN}
        proxy = await start_proxy(nursery, doc, admin=True)
        port = proxy.admin_port
        auth = ("authorization", f"Bearer {TOKEN}")
        # The classic cross-site form POST: text/plain, no preflight, the victim's browser on this host.
        for headers in (
            [("origin", "http://evil.example"), ("content-type", "text/plain")],
            [("origin", "http://evil.example"), auth],
            [("origin", f"http://127.0.0.1:{port + 1}"), auth],  # another port: another origin
            [("origin", "null"), auth],
            [("sec-fetch-site", "cross-site"), auth],
            [("sec-fetch-site", "same-site"), auth],
        ):
            reply = await _ask(port, "/api/drain", method="POST", headers=headers, body=b"x")
            assert reply.status == 403, headers
            tap = await _ask(port, "/api/tap?duration=0.1", headers=headers)
            assert tap.status == 403, headers
        assert not proxy.proxy.draining
        # Without the token: 401; the same origin with the token: done.
        assert (await _ask(port, "/api/drain", method="POST")).status == 401
        reply = await _ask(
            port,
            "/api/drain",
            method="POST",
            headers=[("origin", f"http://localhost:{port}"), ("sec-fetch-site", "same-origin"), auth],
        )
        assert reply.status == 202
        await proxy.proxy.stopped.wait()


async def test_proxyctl_run_generates_a_token_that_only_this_user_can_read(tmp_path, proxy_process) -> None:
    with trio.fail_after(40):
        state = tmp_path / "state"
        env = {k: v for k, v in os.environ.items() if k != "MCP_SIDECAR_ADMIN_TOKEN"}
        proc = proxy_process(
            "run", "--forward", "127.0.0.1:0:127.0.0.1:9", "--admin", "127.0.0.1:0", "--state-dir", str(state), env=env
        )
        await trio.to_thread.run_sync(proc.wait_for_line, "admin http://")
        admin_line = next(line for line in proc.lines if line.startswith("admin http://"))
        port = int(admin_line.split()[1].rstrip("/").rsplit(":", 1)[1])
        token_file = state / f"admin-{port}.token"
        await wait_until(token_file.exists)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32 and token not in "\n".join(proc.lines + proc.log_lines)
        assert (await _ask(port, "/api/drain", method="POST")).status == 401
        # proxyctl finds it: the tap runs without --token.
        tapped = await trio.run_process(
            [
                *PROXYCTL,
                "tap",
                "--admin",
                f"127.0.0.1:{port}",
                "--state-dir",
                str(state),
                "--duration",
                "0.3",
                "--json",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
        assert tapped.returncode == 0, tapped.stderr.decode()
        proc.signal()
        assert await trio.to_thread.run_sync(proc.wait) == 0
        assert not token_file.exists()  # removed with the instance


async def test_the_demos_tap_command_works_as_printed(proxy_process) -> None:
    """The demo is a short-lived loopback toy: its admin endpoint is open on
    loopback (``open_on_loopback``), so the tap it prints needs no token."""
    from ..conftest import free_port

    with trio.fail_after(60):
        ports = [str(free_port()) for _ in range(4)]
        proc = proxy_process(
            "demo", "--http-port", ports[0], "--echo-port", ports[1], "--admin-port", ports[2], "--ws-port", ports[3]
        )
        line = await trio.to_thread.run_sync(proc.wait_for_line, "Live view:", 40)
        printed = shlex.split(line.split("MCP messages: ", 1)[1])
        # (as printed: proxyctl when it is on PATH, else how this one was started)
        assert printed[printed.index("tap") - 1] in ("proxyctl", "mcp_sidecar") or printed[0].endswith("proxyctl")
        env = {k: v for k, v in os.environ.items() if k != "MCP_SIDECAR_ADMIN_TOKEN"}
        tapped = await trio.run_process(
            [*printed, "--duration", "0.3"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env,
        )
        assert tapped.returncode == 0, tapped.stderr.decode()
