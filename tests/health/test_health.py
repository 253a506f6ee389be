"""Upstream health: rise/fall and adaptive intervals, the circuit breaker,
ordered failover, the connect cap, and `proxyctl check`."""

from __future__ import annotations

import json

import h11
import pytest
import trio

from mcp_sidecar.config.addresses import HostPort
from mcp_sidecar.demo.servers import serve_echo, serve_http, serve_ws
from mcp_sidecar.health.breaker import CircuitBreaker
from mcp_sidecar.health.checks import HISTORY_CHECKS, UpstreamHealth
from mcp_sidecar.net.http import request

from ..conftest import connect, echo_roundtrip, free_port, route_doc, run_proxyctl, start_proxy, wait_until

A = HostPort("127.0.0.1", 1)


def test_rise_fall_and_first_result() -> None:
    h = UpstreamHealth(A, rise=2, fall=3)
    assert h.state is None and not h.healthy
    assert h.record(False, "refused", 0.001) is False  # the first result decides at once
    assert h.record(True, "ok", 0.001) is None  # one success is not enough to rise
    assert h.record(True, "ok", 0.001) is True
    assert h.record(False, "refused", 0.001) is None
    assert h.record(False, "refused", 0.001) is None
    assert h.record(False, "timeout", 0.001) is False  # the third failure in a row falls
    assert (h.state, h.last_result, h.transitions) == (False, "timeout", 3)


def test_the_last_checks_are_kept_for_the_views_and_bounded() -> None:
    h = UpstreamHealth(A, rise=2, fall=3)
    for i in range(HISTORY_CHECKS + 5):
        h.record(i % 4 != 3, "ok" if i % 4 != 3 else "refused", 0.001)
    history = h.as_json()["history"]
    assert len(history) == HISTORY_CHECKS  # the oldest five dropped
    assert [(c["ok"], c["result"]) for c in history[:4]] == [
        (True, "ok"),
        (True, "ok"),
        (False, "refused"),
        (True, "ok"),
    ]
    assert history[-1] == {"at_unix": h.last_check_unix, "ok": True, "result": "ok"}


def test_adaptive_interval_fast_when_unsettled_slow_when_stable() -> None:
    h = UpstreamHealth(A, rise=2, fall=3, interval_s=4.0, interval_max_s=30.0)
    assert h.next_interval_s() == 1.0  # unknown: fast
    h.record(True, "ok", 0)  # up
    intervals = []
    for _ in range(10):
        intervals.append(h.next_interval_s())
        h.record(True, "ok", 0)
    assert intervals == [1.0, 1.0, 4.0, 4.0, 8.0, 8.0, 16.0, 16.0, 30.0, 30.0]
    h.record(False, "refused", 0)
    assert h.next_interval_s() == 1.0  # a failure: fast again
    for _ in range(2):
        h.record(False, "refused", 0)
    assert h.state is False and h.next_interval_s() == 4.0  # down and settled: the base interval
    h.record(True, "ok", 0)
    assert h.next_interval_s() == 1.0  # recovering: fast


def test_circuit_breaker_opens_half_opens_and_closes() -> None:
    b = CircuitBreaker(threshold=3, open_s=30.0)
    for i in range(2):
        assert b.allow(0.0) and not b.record_failure(float(i), "refused")
    assert b.allow(2.0) and b.record_failure(2.0, "refused")  # the third opens it
    assert b.state == "open" and not b.allow(10.0) and b.retry_after_s(10.0) == 22
    assert b.allow(32.0)  # half-open: exactly one probe
    assert not b.allow(32.1)
    assert b.record_failure(33.0, "refused")  # the probe failed: open again
    assert not b.allow(40.0)
    assert b.allow(63.5) and b.record_success()  # a good probe closes it
    assert b.state == "closed" and b.allow(64.0) and b.opened_total == 2
    assert b.rejected == 3


async def test_breaker_answers_http_503_fast_and_recovers(nursery, mock_clock) -> None:
    """Real sockets under trio's MockClock: the breaker's 30 s pass in a jump
    (the clock also runs at real speed, so the deadline still bounds the test)."""
    import time

    mock_clock.rate = 1.0
    with trio.fail_after(20 + 30):
        port = free_port()
        proxy = await start_proxy(
            nursery,
            route_doc(f"127.0.0.1:{port}", connect_retry_window=0, breaker_failures=3, breaker_open="30s"),
            admin=True,
        )
        rt = proxy.route()
        for _ in range(3):  # three clients that cannot be connected open the breaker
            stream = await connect(proxy.port())
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some(10)
            await stream.aclose()
        assert rt.breaker.state == "open"  # (the third client's end was what the read above saw)

        t0 = time.perf_counter()  # (the mock clock stands still: the wall clock measures speed)
        reply = await request("127.0.0.1", proxy.port(), "/anything", headers=[("x-mcp-proxy-auth", "Bearer s")])
        elapsed_ms = (time.perf_counter() - t0) * 1000
        assert reply.status == 503
        assert elapsed_ms < 50, elapsed_ms
        assert int(reply.headers["retry-after"]) == 30
        body = json.loads(reply.body)
        assert body["route"] == "r" and body["error"] == "upstream unavailable"
        assert body["reason"] == "circuit open after 3 consecutive upstream failures (refused)"

        upgrade = await request(
            "127.0.0.1",
            proxy.port(),
            "/ws",
            headers=[
                ("upgrade", "websocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-version", "13"),
                ("sec-websocket-protocol", "mcp"),
            ],
        )
        assert upgrade.status == 503

        ready = await request("127.0.0.1", proxy.admin_port, "/readyz")
        assert ready.status == 503 and "circuit open" in json.loads(ready.body)["reasons"][0]
        assert rt.rejected["circuit_open"] == 2

        await nursery.start(serve_echo, "127.0.0.1", port)  # the upstream returns
        mock_clock.jump(29.9)
        assert (await request("127.0.0.1", proxy.port(), "/still")).status == 503  # not yet
        mock_clock.jump(0.1)  # the open period is over
        assert await echo_roundtrip(proxy.port(), message=b"probe") == b"probe"  # the probe client is served ...
        assert rt.breaker.state == "closed"  # ... and closes the breaker
        ready = await request("127.0.0.1", proxy.admin_port, "/readyz")
        assert ready.status == 200


async def test_breaker_closes_raw_tcp_clients_at_once(nursery) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(
            nursery, route_doc(f"127.0.0.1:{free_port()}", connect_retry_window=0, breaker_failures=1, protocol="tcp")
        )
        stream = await connect(proxy.port())
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some(10)
        await wait_until(lambda: proxy.route().breaker.state == "open")
        t0 = trio.current_time()
        try:
            stream = await connect(proxy.port())
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some(10)
        except OSError:
            pass  # reset during the handshake: as immediate
        assert trio.current_time() - t0 < 0.05
        assert proxy.route().rejected == {"circuit_open": 1}


async def test_ordered_failover_and_failback(nursery) -> None:
    with trio.fail_after(20):
        first = free_port()
        second = await nursery.start(serve_echo, "127.0.0.1", 0)
        doc = route_doc("unused:1", health_interval="50ms", health_rise=1, health_fall=1)
        doc["route"][0]["upstream"] = [f"127.0.0.1:{first}", f"127.0.0.1:{second}"]
        proxy = await start_proxy(nursery, doc)
        rt = proxy.route()

        async def roundtrip() -> None:
            assert await echo_roundtrip(proxy.port(), message=b"x") == b"x"

        await roundtrip()  # the first is down: the second serves, no client error
        assert rt.connector.connected_to == {f"127.0.0.1:{second}": 1}
        await wait_until(lambda: rt.health.targets[0].state is False)
        await roundtrip()
        assert rt.connector.connected_to == {f"127.0.0.1:{second}": 2}
        await nursery.start(serve_echo, "127.0.0.1", first)  # the preferred one returns
        await wait_until(lambda: rt.health.targets[0].state is True)
        await roundtrip()
        assert rt.connector.connected_to[f"127.0.0.1:{first}"] == 1  # failed back


async def test_500_clients_against_down_upstream_stay_under_connect_cap(nursery) -> None:
    with trio.fail_after(60):
        proxy = await start_proxy(
            nursery,
            route_doc(
                f"127.0.0.1:{free_port()}",
                connect_retry_window="300ms",
                max_connecting=8,
                breaker_failures=0,
                max_connections=1000,
            ),
        )
        rt = proxy.route()
        outcomes = {"reset": 0}

        async def client() -> None:
            try:
                stream = await connect(proxy.port())
            except OSError:
                outcomes["reset"] += 1
                return
            try:
                await stream.receive_some(10)
            except trio.BrokenResourceError:
                pass
            outcomes["reset"] += 1
            await stream.aclose()

        async with trio.open_nursery() as n:
            for _ in range(500):
                n.start_soon(client)
        assert outcomes["reset"] == 500
        assert rt.connector.connecting_peak <= 8
        assert rt.connector.failed_attempts >= 500
        assert rt.ended == {"upstream_unavailable": 500}


async def _slow_http(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            return  # the TCP connect probe
    await trio.sleep(0.7)  # slower than the 500 ms warning threshold
    await stream.send_all(
        conn.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
        + conn.send(h11.Data(data=b"ok"))
        + conn.send(h11.EndOfMessage())
    )
    await stream.aclose()


async def test_check_live_slow_and_dead_urls(nursery) -> None:
    with trio.fail_after(40):
        live = await nursery.start(serve_http, "127.0.0.1", 0)
        ws = await nursery.start(serve_ws, "127.0.0.1", 0)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        slow = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, _slow_http, listeners)

        async def check(*args: str):
            return await trio.to_thread.run_sync(lambda: run_proxyctl("check", *args))

        result = await check(f"http://127.0.0.1:{live}/health")
        assert result.returncode == 0, result.stdout
        assert result.stdout.splitlines()[-1] == "verdict: healthy"
        assert "http GET /health  200 in" in result.stdout

        result = await check(f"http://127.0.0.1:{live}/mcp", "--json")
        report = json.loads(result.stdout)[0]
        assert result.returncode == 0 and report["verdict"] == "healthy"
        assert report["columns"][0]["steps"][-1]["step"] == "mcp initialize + ping /mcp"

        result = await check(f"ws://127.0.0.1:{ws}/")
        assert result.returncode == 0 and "websocket / handshake + ping  ping RTT" in result.stdout

        result = await check(f"http://127.0.0.1:{slow}/")
        assert result.returncode == 1, result.stdout
        assert "verdict: degraded" in result.stdout
        assert "(warning: above 500 ms)" in result.stdout

        dead = free_port()
        result = await check(f"http://127.0.0.1:{dead}/")
        assert result.returncode == 5  # unreachable: its own code, not usage's 2
        assert "verdict: unreachable" in result.stdout
        assert f"nothing listens on 127.0.0.1:{dead}" in result.stdout

        result = await check("ftp://x/")
        assert result.returncode == 2 and "expected an http://, ws:// or tcp:// URL" in result.stderr


async def test_check_route_side_by_side(nursery, proxy_process, tmp_path) -> None:
    with trio.fail_after(40):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        port = free_port()
        config = tmp_path / "c.toml"
        config.write_text(
            f'[[route]]\nname = "ui"\nlisten = "127.0.0.1:{port}"\nupstream = "localhost:{upstream}"\n'
            'health_check = "http"\nhealth_path = "/health"\n'
        )

        async def check() -> tuple[int, str]:
            r = await trio.to_thread.run_sync(
                lambda: run_proxyctl("check", "ui", "--config", str(config), "--state-dir", str(tmp_path / "none"))
            )
            return r.returncode, r.stdout

        code, out = await check()  # the proxy is not running yet
        assert code == 5  # unreachable
        assert f"nothing accepts on 127.0.0.1:{port}: is the proxy running" in out

        proc = proxy_process("run", "--no-supervise", "--config", str(config), "--admin", "off")
        await trio.to_thread.run_sync(proc.wait_for_line, "route ui")
        code, out = await check()
        assert code == 0, out
        header = out.splitlines()[1]
        assert "through proxy" in header and "direct" in header
        assert out.count("200 in") == 2  # GET /health through the proxy and directly
