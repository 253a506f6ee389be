"""Several forwarding workers on the supervisor's sockets, one view: real
supervisor and worker processes, the admin endpoint served by the supervisor."""

from __future__ import annotations

import json
import os
import signal

import trio

from mcp_sidecar.demo.servers import serve_echo, serve_http
from mcp_sidecar.net.http import ClientExchange, request
from mcp_sidecar.observe.sse import SseEvent, SseParser
from mcp_sidecar.supervise.taprelay import BATCH_BYTES

from ..admin.test_views import _lines, _tap
from ..conftest import connect, echo_roundtrip, free_port, receive_all, receive_exactly, wait_until
from .test_supervisor import echo_route, wait_status


async def admin_json(sup, target: str) -> dict:
    host, port = (await trio.to_thread.run_sync(sup.status))["admin"].rsplit(":", 1)
    reply = await request(host, int(port), target)
    assert reply.status == 200, (target, reply.status, reply.body[:300])
    return json.loads(reply.body)


async def admin_text(sup, target: str) -> str:
    host, port = (await trio.to_thread.run_sync(sup.status))["admin"].rsplit(":", 1)
    reply = await request(host, int(port), target)
    assert reply.status == 200, (target, reply.status)
    return reply.body.decode()


def sample(metrics: str, name: str, **labels: str) -> float:
    """One sample's value from a Prometheus text exposition (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def two_workers(nursery, supervised, *routes_extra, admin=None, observe=None, **route_settings):
    echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
    sup = await trio.to_thread.run_sync(
        lambda: supervised(
            [echo_route(echo_port, **route_settings), *routes_extra],
            {},
            {"workers": 2, "drain_timeout": "60s"},
            admin=admin,
            observe=observe,
        )
    )
    status = await wait_status(sup, lambda s: len(s["workers"]) == 2 and s["standby"] is not None)
    return sup, status, await trio.to_thread.run_sync(sup.port, "echo")


async def test_every_worker_serves_and_the_view_adds_them_up(nursery, supervised) -> None:
    with trio.fail_after(60):
        sup, status, port = await two_workers(nursery, supervised)
        assert status["workers_target"] == 2
        held = [await connect(port) for _ in range(12)]
        try:
            for i, stream in enumerate(held):
                await stream.send_all(b"%02d" % i)
                assert await receive_exactly(stream, 2) == b"%02d" % i
            for _ in range(20):
                assert await echo_roundtrip(port) == b"ping"
            # Every open connection is listed once, with the worker that holds it.
            page = await admin_json(sup, "/api/connections?limit=100")
            serving = {w["id"] for w in status["workers"]}
            assert page["count"] == 12 and len(page["connections"]) == 12
            assert {c["worker"] for c in page["connections"]} <= serving
            ids = [c["id"] for c in page["connections"]]
            assert len(set(ids)) == 12
            one = await admin_json(sup, f"/api/connections/{ids[0]}")
            assert one["id"] == ids[0] and one["worker"] in serving
            # Both workers' counters, summed: what the clients did.
            metrics = await admin_text(sup, "/metrics")
            assert sample(metrics, "mcp_sidecar_connections_total", route="echo") == 32
            assert sample(metrics, "mcp_sidecar_connections_active", route="echo") == 12
            api = await admin_json(sup, "/api/status")
            assert api["routes"][0]["connections_total"] == 32
            assert api["routes"][0]["connections_active"] == 12
            assert sorted(w["id"] for w in api["workers"] if w["state"] == "active") == sorted(serving)
            per_worker = (await trio.to_thread.run_sync(sup.status))["workers"]
            assert sum(w["connections_total"] for w in per_worker) == 32
        finally:
            for stream in held:
                await stream.aclose()
        text = await trio.to_thread.run_sync(lambda: sup.command("status"))
        assert len(text["workers"]) == 2


async def test_a_burst_of_connections_is_shared_out_among_the_workers(nursery, supervised) -> None:
    """Regression: on the one listening socket they share, the first worker
    awake took every connection waiting (8 of 8, or 7 of 8, measured with wrk's
    8 connections): with long-lived MCP connections one core served them all.
    A worker that holds more than an even share of the route's connections
    now leaves a new one to the others for a moment (BALANCE_WAIT_S)."""
    with trio.fail_after(60):
        sup, status, port = await two_workers(nursery, supervised)
        serving = {w["id"] for w in status["workers"]}
        for _ in range(3):
            held = [await connect(port) for _ in range(8)]  # (all in the backlog before a worker wakes)
            try:
                for i, stream in enumerate(held):
                    await stream.send_all(b"%d" % i)
                    assert await receive_exactly(stream, 1) == b"%d" % i
                page = await admin_json(sup, "/api/connections?limit=100")
                per_worker = [sum(c["worker"] == w for c in page["connections"]) for w in serving]
                assert sum(per_worker) == 8 and min(per_worker) >= 2, per_worker
            finally:
                for stream in held:
                    await stream.aclose()
            with trio.fail_after(10):
                while (await admin_json(sup, "/api/connections?limit=100"))["count"]:
                    await trio.sleep(0.05)


async def test_counters_and_history_survive_restart_reload_and_a_crash(nursery, supervised) -> None:
    with trio.fail_after(90):
        sup, _, port = await two_workers(nursery, supervised)
        for _ in range(10):
            assert await echo_roundtrip(port) == b"ping"
        history = await admin_json(sup, "/api/history")
        before = sample(await admin_text(sup, "/metrics"), "mcp_sidecar_connections_total", route="echo")
        assert before == 10
        assert (await trio.to_thread.run_sync(sup.command, "restart"))["ok"]
        await wait_status(sup, lambda s: not s["draining_workers"] and len(s["workers"]) == 2)
        assert (await trio.to_thread.run_sync(sup.command, "reload"))["ok"]
        await wait_status(sup, lambda s: not s["draining_workers"] and len(s["workers"]) == 2)
        victim = (await trio.to_thread.run_sync(sup.status))["workers"][0]["pid"]
        for _ in range(5):
            assert await echo_roundtrip(port) == b"ping"
        # (a crash loses at most what the victim counted since its last report: the
        # connections above ended before a report was asked for below)
        await admin_json(sup, "/api/status")
        os.kill(victim, signal.SIGKILL)
        await wait_status(sup, lambda s: victim not in {w["pid"] for w in s["workers"]} and len(s["workers"]) == 2)
        metrics = await admin_text(sup, "/metrics")
        assert sample(metrics, "mcp_sidecar_connections_total", route="echo") == 15
        assert (await admin_json(sup, "/api/status"))["routes"][0]["connections_total"] == 15
        assert sample(metrics, "mcp_sidecar_worker_restarts_total", cause="restart") == 2
        assert sample(metrics, "mcp_sidecar_worker_restarts_total", cause="reload") == 2
        assert sample(metrics, "mcp_sidecar_worker_restarts_total", cause="crash") == 1
        later = await admin_json(sup, "/api/history")
        assert later["points"] >= history["points"]  # the dashboard's history was kept
        assert later["t"][: len(history["t"])] == history["t"][: len(later["t"])][: len(history["t"])]


async def test_the_admin_endpoint_answers_while_a_worker_is_stopped(nursery, supervised) -> None:
    with trio.fail_after(60):
        sup, status, port = await two_workers(nursery, supervised)
        victim = status["workers"][0]["pid"]
        os.kill(victim, signal.SIGSTOP)
        try:
            t0 = trio.current_time()
            api = await admin_json(sup, "/api/status")
            metrics = await admin_text(sup, "/metrics")
            assert trio.current_time() - t0 < 2.0  # a silent worker delays a view, never blocks it
            assert api["routes"][0]["name"] == "echo" and "mcp_sidecar_connections_total" in metrics
            assert await echo_roundtrip(port) == b"ping"  # the other worker accepts meanwhile
            await wait_status(sup, lambda s: victim not in {w["pid"] for w in s["workers"]})
        finally:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert (await admin_json(sup, "/api/status"))["ready"]


async def test_max_connections_holds_for_the_route_not_per_worker(nursery, supervised) -> None:
    with trio.fail_after(60):
        sup, _, port = await two_workers(nursery, supervised, max_connections=4)
        held = []
        try:
            for _ in range(8):
                try:
                    stream = await connect(port)
                except OSError:
                    continue  # refused: over the route's limit
                held.append(stream)
                with trio.move_on_after(0.5):
                    try:
                        await stream.send_all(b"x")
                        await receive_exactly(stream, 1)
                    except trio.BrokenResourceError:
                        pass  # refused: over the route's limit
            api = await admin_json(sup, "/api/status")
            assert api["routes"][0]["connections_active"] == 4
            assert sum(api["routes"][0]["connections_rejected"].values()) == 4
        finally:
            for stream in held:
                await stream.aclose()


async def test_a_legacy_sse_session_split_across_workers_is_correlated(nursery, supervised) -> None:
    """The GET stream stays on a draining worker while the POSTs reach the new ones."""
    with trio.fail_after(60):
        http_port = await nursery.start(serve_http, "127.0.0.1", 0)
        route = {"name": "mcp", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_port}", "health_interval": 0}
        sup, status, _ = await two_workers(nursery, supervised, route)
        port = await trio.to_thread.run_sync(sup.port, "mcp")
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        answers = 0
        async with stream:
            exchange = ClientExchange(stream)
            await exchange.send(f"127.0.0.1:{port}", "/sse", "GET", b"", [("accept", "text/event-stream")])
            parser = SseParser()
            async for chunk in exchange.body():
                for sse in parser.feed(chunk):
                    if not isinstance(sse, SseEvent):
                        continue
                    if sse.event == "endpoint":
                        assert (await trio.to_thread.run_sync(sup.command, "restart"))["ok"]
                        old = {w["pid"] for w in status["workers"]}
                        now = await trio.to_thread.run_sync(sup.status)
                        # (the old worker without a connection is gone already; the stream's drains)
                        assert {w["pid"] for w in now["draining_workers"]} <= old
                        assert not old & {w["pid"] for w in now["workers"]}
                        for i, method in enumerate(("initialize", "tools/list"), start=1):
                            params = {"protocolVersion": "2024-11-05", "capabilities": {}} if i == 1 else {}
                            body = {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
                            reply = await request(
                                "127.0.0.1",
                                port,
                                sse.data,
                                method="POST",
                                headers=[("content-type", "application/json")],
                                body=json.dumps(body).encode(),
                            )
                            assert reply.status in (200, 202)
                    elif '"id"' in sse.data:
                        answers += 1
                if answers == 2:
                    break
        view = await admin_json(sup, "/api/mcp?route=mcp")
        (mcp,) = view["routes"]
        assert {m: s["outcomes"] for m, s in mcp["methods"].items()} == {
            "initialize": {"ok": 1},
            "tools/list": {"ok": 1},
        }
        assert mcp["in_flight"] == 0
        metrics = await admin_text(sup, "/metrics")
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("mcp_requests_total{") and 'method="tools/list"' in line and 'status="ok"' in line
        ]
        assert len(counted) == 1 and counted[0].endswith(" 1.0") and 'transport="legacy-sse"' in counted[0]


async def test_auto_is_the_cpus_this_process_may_use(nursery, supervised) -> None:
    with trio.fail_after(60):
        echo_port = await nursery.start(serve_echo, "127.0.0.1", 0)
        sup = await trio.to_thread.run_sync(
            lambda: supervised([echo_route(echo_port)], preexec_fn=lambda: os.sched_setaffinity(0, {0}))
        )
        status = await wait_status(sup, lambda s: s["standby"] is not None)
        assert status["workers_target"] == 1 and len(status["workers"]) == 1
        port = await trio.to_thread.run_sync(sup.port, "echo")
        assert await echo_roundtrip(port) == b"ping"


async def test_the_tap_shows_every_workers_messages(nursery, supervised) -> None:
    with trio.fail_after(60):
        http_port = await nursery.start(serve_http, "127.0.0.1", 0)
        route = {"name": "mcp", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_port}", "health_interval": 0}
        sup, _, _ = await two_workers(nursery, supervised, route, admin={"open_on_loopback": True})
        port = await trio.to_thread.run_sync(sup.port, "mcp")
        admin_port = int((await trio.to_thread.run_sync(sup.status))["admin"].rsplit(":", 1)[1])
        stream, exchange, head = await _tap(admin_port, "?route=mcp&method=tools/call", token=None)
        async with stream:
            assert head.status_code == 200
            (first,) = await _lines(exchange, 1)  # (written once every worker relays)
            assert first["tap"]["route"] == "mcp"
            metrics = await admin_text(sup, "/metrics")
            assert sample(metrics, "mcp_sidecar_tap_subscribers") == 1
            headers = [("content-type", "application/json"), ("accept", "application/json")]
            ids = list(range(1, 9))
            for i in ids:  # each on a new connection: both workers forward some
                body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
                await request("127.0.0.1", port, "/mcp", method="POST", headers=headers, body=json.dumps(body).encode())
            records = await _lines(exchange, 2 * len(ids))
        assert sorted(r["id"] for r in records if r["kind"] == "request") == ids
        assert sorted(r["id"] for r in records if r["kind"] == "response") == ids


#: Messages in one body: more lines than one relay batch holds.
BURST = 6000


async def test_a_configured_recording_holds_every_workers_messages(nursery, supervised, tmp_path) -> None:
    """[observe] record under a supervisor: one file set for the route, written
    by the supervisor from both workers' relays, each line whole and in order."""
    with trio.fail_after(60):
        http_port = await nursery.start(serve_http, "127.0.0.1", 0)
        route = {"name": "mcp", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_port}", "health_interval": 0}
        directory = tmp_path / "recordings"
        sup, _, _ = await two_workers(
            nursery, supervised, route, observe={"record": {"dir": str(directory), "routes": ["mcp"]}}
        )
        port = await trio.to_thread.run_sync(sup.port, "mcp")
        headers = [("content-type", "application/json"), ("accept", "application/json")]
        ids = list(range(1, 11))
        for i in ids:  # each on a new connection: both workers forward some
            body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
            await request("127.0.0.1", port, "/mcp", method="POST", headers=headers, body=json.dumps(body).encode())

        def lines() -> list[dict]:
            """The whole lines so far (the supervisor may be writing the last one)."""
            return [
                json.loads(line)
                for p in sorted(directory.glob("mcp-*.jsonl"))
                for line in p.read_bytes().split(b"\n")[:-1]
            ]

        await wait_until(lambda: len([line for line in lines() if line["type"] == "message"]) == 2 * len(ids))
        recorded = lines()
        assert [p.name.startswith("mcp-") for p in directory.iterdir()] == [
            True
        ]  # one file, the echo route not recorded
        assert recorded[0]["type"] == "header" and recorded[0]["routes"]["mcp"]["upstreams"] == [
            f"127.0.0.1:{http_port}"
        ]
        messages = recorded[1:]
        assert [m["seq"] for m in messages] == list(range(1, 2 * len(ids) + 1))
        assert sorted(m["id"] for m in messages if m["kind"] == "request") == ids
        assert sorted(m["id"] for m in messages if m["kind"] == "response") == ids
        metrics = await admin_text(sup, "/metrics")  # (the recording is a tap subscriber of the supervisor's)
        assert sample(metrics, "mcp_sidecar_tap_subscribers") == 1
        # A burst observed at once (its lines take more than one relay batch: BATCH_BYTES) is recorded whole.
        burst = [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}} for n in range(BURST)]
        await request("127.0.0.1", port, "/mcp", method="POST", headers=headers, body=json.dumps(burst).encode())
        await wait_until(lambda: sum(line.get("count", 1) for line in lines()[1:]) >= 2 * len(ids) + BURST)
        messages = lines()[1:]
        assert {m["type"] for m in messages} == {"message"}  # no "dropped" line
        assert [m["seq"] for m in messages] == list(range(1, 2 * len(ids) + BURST + 1))
        assert [m["params"]["n"] for m in messages if m.get("method") == "notifications/message"] == list(range(BURST))
        assert sum(len(json.dumps(m)) for m in messages) > BATCH_BYTES


async def test_each_worker_has_its_own_circuit_breaker(nursery, supervised) -> None:
    """Per worker, by design (design.md): a dead upstream opens every worker's circuit
    after at most breaker_failures connects each; the view shows the circuit open."""
    with trio.fail_after(60):
        dead = free_port()
        route = {
            "name": "dead",
            "listen": "127.0.0.1:0",
            "upstream": f"127.0.0.1:{dead}",
            "health_interval": 0,
            "connect_retry_window": 0,
            "breaker_failures": 2,
            "breaker_open": "60s",
        }
        sup, status, _ = await two_workers(nursery, supervised, route)
        port = await trio.to_thread.run_sync(sup.port, "dead")
        for _ in range(12):
            try:
                stream = await connect(port)
            except OSError:
                continue  # reset at once (an open circuit, or no upstream before connect returned)
            async with stream:
                with trio.move_on_after(2):
                    try:
                        await stream.send_all(b"x\r\n\r\n")  # (not an HTTP head: an open circuit resets at once)
                        assert await receive_all(stream) == b""  # closed: no upstream
                    except trio.BrokenResourceError:
                        pass  # reset
        api = await admin_json(sup, "/api/status")
        (route_view,) = [r for r in api["routes"] if r["name"] == "dead"]
        assert route_view["circuit"]["state"] == "open"
        failures = sum(route_view["upstream_connect_failures"].values())
        assert 2 <= failures <= 2 * status["workers_target"]  # each worker's own count
        assert sum(route_view["connections_rejected"].values()) == 12 - failures
        metrics = await admin_text(sup, "/metrics")
        assert sample(metrics, "mcp_sidecar_circuit_open", route="dead") == 1
