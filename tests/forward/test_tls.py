"""TLS termination and TLS towards the upstream, with a trustme CA and real clients."""

from __future__ import annotations

import os
import shutil
import ssl
import warnings

import pytest
import trio
import trio_websocket

from mcp_sidecar.demo.servers import serve_echo, serve_http, serve_ws
from mcp_sidecar.net.http import request_on

from ..conftest import connect, make_tls_files, receive_exactly, route_doc, start_proxy, tls_connect, wait_until
from .test_observation import sample


def tls_route(files, upstream: str, **extra):
    return route_doc(upstream, tls_cert=str(files.cert), tls_key=str(files.key), **extra)


def closed(proxy, end: str) -> int:
    return proxy.route().ended.get(end, 0)


async def test_tls_termination_with_alpn_and_observation(nursery, tls_files) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, tls_route(tls_files, f"127.0.0.1:{upstream}"))
        stream = await tls_connect(proxy.port(), tls_files, alpn=["h2", "http/1.1"])
        assert stream.selected_alpn_protocol() == "http/1.1"  # the bytes are HTTP/1.1: never h2
        assert stream.version() in ("TLSv1.2", "TLSv1.3")
        response = await request_on(stream, "localhost", "/health")
        assert response.status == 200
        registry = proxy.registry()
        await wait_until(
            lambda: (
                registry.get_sample_value(
                    "mcp_sidecar_http_requests_total", {"route": "r", "method": "GET", "status": "200"}
                )
                == 1
            )
        )
        conn = next(iter(proxy.route().connections.values()), None)
        if conn is not None:
            assert conn.as_json(trio.current_time())["tls"]["alpn"] == "http/1.1"


async def test_old_protocols_and_clear_text_are_refused(nursery, tls_files) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_echo, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, tls_route(tls_files, f"127.0.0.1:{upstream}", protocol="tcp"))
        old = tls_files.client_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (that is the point)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        stream = trio.SSLStream(await connect(proxy.port()), old, server_hostname="localhost")
        with pytest.raises(trio.BrokenResourceError) as refused:
            await stream.do_handshake()
        # The server refused the version (an alert), not the client its own configuration.
        assert "VERSION" in str(refused.value.__cause__).upper()
        plain = await connect(proxy.port())
        await plain.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        while True:  # the proxy answers with a TLS alert (or nothing) and closes
            try:
                if not await plain.receive_some(4096):
                    break
            except trio.BrokenResourceError:
                break
        await wait_until(lambda: closed(proxy, "tls_error") == 2)


async def test_bytes_are_exact_through_tls_both_ways(nursery, tls_files) -> None:
    with trio.fail_after(30):
        upstream = await nursery.start(serve_echo, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, tls_route(tls_files, f"127.0.0.1:{upstream}", protocol="tcp"))
        stream = await tls_connect(proxy.port(), tls_files)
        payload = os.urandom(3 * 1024 * 1024 + 17)

        async def send() -> None:
            await stream.send_all(payload)

        nursery.start_soon(send)
        assert await receive_exactly(stream, len(payload)) == payload


async def test_mutual_tls_requires_a_client_certificate(nursery, tls_files, tmp_path) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_echo, "127.0.0.1", 0)
        clients = make_tls_files(tmp_path / "clients", "client")
        proxy = await start_proxy(
            nursery, tls_route(tls_files, f"127.0.0.1:{upstream}", protocol="tcp", tls_client_ca=str(clients.ca_file))
        )
        anonymous = await tls_connect(proxy.port(), tls_files)  # TLS 1.3: the refusal comes after the handshake
        with pytest.raises(trio.BrokenResourceError):
            await anonymous.send_all(b"ping")
            await anonymous.receive_some(10)
        context = tls_files.client_context()
        clients.ca.issue_cert("client@example").configure_cert(context)
        stream = trio.SSLStream(await connect(proxy.port()), context, server_hostname="localhost")
        await stream.send_all(b"ping")
        assert await receive_exactly(stream, 4) == b"ping"


async def test_wss_through_a_tls_route(nursery, tls_files) -> None:
    with trio.fail_after(20):
        upstream = await nursery.start(serve_ws, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, tls_route(tls_files, f"127.0.0.1:{upstream}"))
        async with trio_websocket.open_websocket_url(
            f"wss://localhost:{proxy.port()}/ws", ssl_context=tls_files.client_context()
        ) as ws:
            await ws.send_message('{"jsonrpc":"2.0","id":1,"method":"ping"}')
            reply = await ws.get_message()
        assert '"id":1' in reply.replace(" ", "")
        assert sample(proxy, "mcp_requests_total", method="ping", status="ok", transport="websocket") == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed (apt-get install openssl)")
async def test_openssl_s_client_negotiates_http_1_1(nursery, tls_files) -> None:
    with trio.fail_after(30):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, tls_route(tls_files, f"127.0.0.1:{upstream}"))
        result = await trio.run_process(
            [
                "openssl",
                "s_client",
                "-connect",
                f"127.0.0.1:{proxy.port()}",
                "-servername",
                "localhost",
                "-alpn",
                "h2,http/1.1",
                "-CAfile",
                str(tls_files.ca_file),
                "-verify_return_error",
                "-quiet",
            ],
            stdin=b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert b"HTTP/1.1 200" in result.stdout, result.stderr.decode(errors="replace")[-500:]


async def test_tls_towards_the_upstream_is_verified(nursery, tls_files, tmp_path) -> None:
    with trio.fail_after(20):

        async def echo(stream: trio.abc.Stream) -> None:
            try:
                async for data in stream:
                    await stream.send_all(data)
            except trio.BrokenResourceError:
                pass

        listeners = await nursery.start(
            lambda task_status: trio.serve_ssl_over_tcp(
                echo, 0, tls_files.server_context(), host="127.0.0.1", task_status=task_status
            )
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        doc = route_doc(f"localhost:{port}", protocol="tcp", upstream_tls=True, upstream_tls_ca=str(tls_files.ca_file))
        proxy = await start_proxy(nursery, doc)
        client = await connect(proxy.port())
        await client.send_all(b"through TLS")
        assert await receive_exactly(client, 11) == b"through TLS"
        await client.aclose()
        # An upstream whose certificate our CA did not sign: refused, the client reset, counted.
        other = make_tls_files(tmp_path / "other")
        doc = route_doc(f"localhost:{port}", protocol="tcp", upstream_tls=True, upstream_tls_ca=str(other.ca_file))
        wrong = await start_proxy(nursery, doc)
        client = await connect(wrong.port())
        await client.send_all(b"x")
        with pytest.raises(trio.BrokenResourceError):
            while await client.receive_some(10):
                pass
        await wait_until(lambda: closed(wrong, "upstream_tls_error") == 1)


async def test_reload_reads_renewed_certificates(nursery, supervised, tmp_path) -> None:
    with trio.fail_after(60):
        upstream = await nursery.start(serve_echo, "127.0.0.1", 0)
        first = make_tls_files(tmp_path / "first")
        cert, key = tmp_path / "live.pem", tmp_path / "live.key"
        shutil.copy(first.cert, cert)
        shutil.copy(first.key, key)
        route = {
            "name": "tls",
            "listen": "127.0.0.1:0",
            "upstream": f"127.0.0.1:{upstream}",
            "protocol": "tcp",
            "tls_cert": str(cert),
            "tls_key": str(key),
            "health_interval": 0,
        }
        sup = await trio.to_thread.run_sync(supervised, [route])
        port = await trio.to_thread.run_sync(sup.port, "tls")

        async def echo_with(files) -> bytes:
            stream = await tls_connect(port, files)
            await stream.send_all(b"hi")
            data = await receive_exactly(stream, 2)
            await stream.aclose()
            return data

        assert await echo_with(first) == b"hi"
        renewed = make_tls_files(tmp_path / "renewed")  # another CA: only its clients can tell
        shutil.copy(renewed.cert, cert)
        shutil.copy(renewed.key, key)
        reply = await trio.to_thread.run_sync(sup.command, "reload")
        assert reply["ok"], reply
        assert await echo_with(renewed) == b"hi"
        with pytest.raises(trio.BrokenResourceError):
            await echo_with(first)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed (apt-get install openssl)")
async def test_a_client_renegotiation_is_refused_at_once_not_hung(nursery, tls_files) -> None:
    """TLS 1.2 renegotiation is off (OpenSSL's default here); the refusal is an
    alert that must be sent, not left in the memory BIO while the client waits."""
    import subprocess

    with trio.fail_after(30):
        upstream = await nursery.start(serve_echo, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, tls_route(tls_files, f"127.0.0.1:{upstream}", protocol="tcp"))

        def renegotiate() -> tuple[int, str]:
            # Interactive s_client (no -quiet, no -ign_eof): a line "R" asks for a renegotiation.
            client = subprocess.Popen(
                [
                    "openssl",
                    "s_client",
                    "-tls1_2",
                    "-connect",
                    f"127.0.0.1:{proxy.port()}",
                    "-servername",
                    "localhost",
                    "-CAfile",
                    str(tls_files.ca_file),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                client.stdin.write("hello\n")
                client.stdin.flush()
                for line in client.stdout:
                    if line == "hello\n":  # echoed through the proxy: the session works
                        break
                client.stdin.write("R\n")
                client.stdin.flush()
                rest = client.stdout.read()  # until it exits: at once, or never (the old hang)
                return client.wait(timeout=10), rest
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()

        with trio.fail_after(15):
            code, output = await trio.to_thread.run_sync(renegotiate, abandon_on_cancel=True)
        assert "RENEGOTIATING" in output and "no renegotiation" in output and code != 0
        await wait_until(lambda: not proxy.route().connections)
