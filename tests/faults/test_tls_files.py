"""A TLS file broken on disk while the tree runs: no worker may depend on it.

The promise (docs/reliability.md): workers start from the certificate and
key bytes the configuration loaded (config/tls.py), so a worker that dies
after ``tls_cert`` broke is replaced as usual and every route keeps
serving; a reload of the broken file is refused and changes nothing.  If a
route's TLS could not be built at all, only that route refuses.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import trio

from mcp_sidecar.config.model import TlsMaterial
from mcp_sidecar.config.parse import build_config
from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.forward.proxy import Proxy
from mcp_sidecar.net.listeners import bind_all

from ..conftest import connect, echo_roundtrip, receive_exactly, route_doc, tls_connect
from ..supervise.test_supervisor import echo_route, replaced, wait_status


async def _tls_echo(port: int, files) -> bytes:
    stream = await tls_connect(port, files)
    async with stream:
        await stream.send_all(b"over tls")
        return await receive_exactly(stream, 8)


async def test_a_worker_replaced_after_the_certificate_broke_serves_every_route(nursery, supervised, tls_files) -> None:
    with trio.fail_after(60):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        secure = echo_route(
            echo_port, name="secure", protocol="tcp", tls_cert=str(tls_files.cert), tls_key=str(tls_files.key)
        )
        sup = await trio.to_thread.run_sync(supervised, [secure, echo_route(echo_port)])
        status = await wait_status(sup, lambda s: s["standby"] and s["standby"]["state"] == "standby")
        secure_port = await trio.to_thread.run_sync(sup.port, "secure")
        plain_port = await trio.to_thread.run_sync(sup.port, "echo")
        assert await _tls_echo(secure_port, tls_files) == b"over tls"

        tls_files.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken by a botched renewal\n")
        victim = status["worker"]["pid"]
        os.kill(victim, signal.SIGKILL)
        status = await wait_status(
            sup,
            lambda s: replaced(victim)(s) and s["standby"] is not None and s["standby"]["state"] == "standby",
        )
        assert await _tls_echo(secure_port, tls_files) == b"over tls"  # the certificate that loaded
        assert await echo_roundtrip(plain_port) == b"ping"
        assert status["consecutive_failures"] == 1 and status["restarts"]["crash"] == 1

        # A reload reads the files: refused, naming the field; the tree keeps what it has.
        reply = await trio.to_thread.run_sync(sup.command, "reload")
        assert reply["ok"] is False and "route[1].tls_cert" in reply["error"]
        assert await _tls_echo(secure_port, tls_files) == b"over tls"
        status = await trio.to_thread.run_sync(sup.status)
        assert victim not in {w["pid"] for w in status["workers"]} and status["restarts"]["crash"] == 1


async def test_a_route_whose_tls_cannot_be_built_refuses_alone(nursery, tls_files) -> None:
    with trio.fail_after(20):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        doc = route_doc(f"127.0.0.1:{echo_port}", tls_cert=str(tls_files.cert), tls_key=str(tls_files.key))
        doc["route"].append(
            {"name": "plain", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo_port}", "health_interval": 0}
        )
        config = build_config(doc, source="test")
        broken = replace(config.routes[0], tls_material=TlsMaterial(cert_chain=b"junk", key=b"junk"))
        config = replace(config, routes=(broken, config.routes[1]))
        proxy = Proxy(config, bind_all(config))
        await nursery.start(proxy.serve)
        bad, plain = proxy.routes
        assert bad.unusable is not None and bad.unusable.startswith("TLS unavailable (tls_cert: ")
        assert await echo_roundtrip(plain.listeners[0].address.port) == b"ping"
        try:  # refused at once: a reset, seen at connect or at the first read
            stream = await connect(bad.listeners[0].address.port)
            async with stream:
                assert await stream.receive_some(10) == b""
        except (OSError, trio.BrokenResourceError):
            pass
        assert bad.rejected == {"route_unusable": 1}
        from mcp_sidecar.admin.status import readiness

        assert any(r.startswith("route r: TLS unavailable") for r in readiness(proxy))
