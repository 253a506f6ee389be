"""The admin endpoint: health, readiness, metrics, JSON API, hostile clients."""

from __future__ import annotations

import json
import re

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from mcp_sidecar import logs
from mcp_sidecar.admin import server as admin_module
from mcp_sidecar.demo.servers import serve_echo
from mcp_sidecar.net.http import request
from mcp_sidecar.net.netinfo import nonloopback_addresses

from ..conftest import (
    ROOT,
    connect,
    echo_roundtrip,
    exported_metrics,
    receive_all,
    receive_exactly,
    route_doc,
    start_proxy,
    wait_until,
)

SECRET = "Zs3cr3tT0kenValue0123456789"


async def get(port: int, target: str, **kwargs):
    return await request("127.0.0.1", port, target, **kwargs)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    result = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            result[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return result


async def test_healthz_and_index(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        reply = await get(proxy.admin_port, "/healthz")
        assert (reply.status, reply.body, reply.headers["content-type"]) == (200, b"ok\n", "text/plain; charset=utf-8")
        head = await get(proxy.admin_port, "/healthz", method="HEAD")
        assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "3")
        assert (await get(proxy.admin_port, "/nope")).status == 404
        wrong = await get(proxy.admin_port, "/metrics", method="POST")
        assert (wrong.status, wrong.headers["allow"]) == (405, "GET, HEAD")


async def test_dashboard_page_and_its_assets_are_self_contained(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        reply = await get(proxy.admin_port, "/dashboard")
        assert reply.status == 200 and reply.headers["content-type"] == "text/html; charset=utf-8"
        csp = reply.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        page = reply.body.decode()
        assert "<script>" not in page and "style=" not in page  # no inline script or style: the CSP forbids them
        referenced = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert sorted(referenced) == [
            "/dashboard/dashboard.css",
            "/dashboard/dashboard.js",
            "/dashboard/uplot.iife.min.js",
            "/dashboard/uplot.min.css",
        ]
        for path in referenced:
            asset = await get(proxy.admin_port, path)
            assert asset.status == 200 and len(asset.body) > 500, path
            text = asset.body.decode()
            # offline: nothing fetched from elsewhere (uPlot mentions URLs only in comments/strings it never loads)
            assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?https?://""", text), path
        script = (await get(proxy.admin_port, "/dashboard/dashboard.js")).body.decode()
        assert "innerHTML" not in script  # traffic-derived text is inserted as text only
        for endpoint in ("/api/status", "/api/mcp", "/api/history", "/api/connections?limit=1000"):
            assert f'"{endpoint}' in script, endpoint
        assert (await get(proxy.admin_port, "/dashboard/nope.js")).status == 404


async def test_metrics_parse_and_move_with_traffic(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        before = samples((await get(proxy.admin_port, "/metrics")).body.decode())
        assert before[("mcp_sidecar_connections_total", (("route", "r"),))] == 0
        assert (
            before[
                (
                    "mcp_sidecar_build_info",
                    (
                        ("python", __import__("platform").python_version()),
                        ("version", __import__("mcp_sidecar").__version__),
                    ),
                )
            ]
            == 1
        )
        assert ("process_cpu_seconds_total", ()) in before  # the standard process collector

        for payload in (b"a" * 1000, b"b" * 2345):
            assert await echo_roundtrip(proxy.port(), message=payload) == payload
        await wait_until(lambda: proxy.route().active == 0)

        after = samples((await get(proxy.admin_port, "/metrics")).body.decode())
        r = (("route", "r"),)
        assert after[("mcp_sidecar_connections_total", r)] == 2
        assert after[("mcp_sidecar_connections_active", r)] == 0
        assert after[("mcp_sidecar_connections_closed_total", (("end", "closed"), ("route", "r")))] == 2
        for direction in ("client_to_upstream", "upstream_to_client"):
            assert after[("mcp_sidecar_bytes_total", (("direction", direction), ("route", "r")))] == 3345
        assert after[("mcp_sidecar_connection_duration_seconds_count", r)] == 2
        assert after[("mcp_sidecar_upstream_connect_seconds_count", r)] == 2
        rtt_count = after[("mcp_sidecar_tcp_rtt_seconds_count", (("leg", "client"), ("route", "r")))]
        assert rtt_count >= 2  # sampled at close at least
        assert after[("mcp_sidecar_tcp_rtt_seconds_bucket", (("le", "1e-05"), ("leg", "client"), ("route", "r")))] >= 0
        assert after[("mcp_sidecar_worker_restarts_total", (("cause", "crash"),))] == 0


async def test_openmetrics_when_asked(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        reply = await get(
            proxy.admin_port, "/metrics", headers=[("accept", "application/openmetrics-text; version=1.0.0")]
        )
        assert reply.headers["content-type"].startswith("application/openmetrics-text")
        assert reply.body.endswith(b"# EOF\n")
        plain = await get(proxy.admin_port, "/metrics")
        assert plain.headers["content-type"].startswith("text/plain")


async def test_readyz_follows_upstream_down_and_back(nursery) -> None:
    with trio.fail_after(20):
        upstream_scope = trio.CancelScope()
        port_box = {}

        async def upstream(port: int = 0, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
            with upstream_scope:
                async with trio.open_nursery() as n:
                    port_box["port"] = await n.start(serve_echo, "127.0.0.1", port)
                    task_status.started()

        await nursery.start(upstream)
        port = port_box["port"]
        proxy = await start_proxy(
            nursery, route_doc(f"127.0.0.1:{port}", health_interval="50ms", health_rise=2, health_fall=2), admin=True
        )

        async def ready_state() -> tuple[int, dict]:
            reply = await get(proxy.admin_port, "/readyz")
            return reply.status, json.loads(reply.body)

        async def wait_ready(status: int) -> dict:
            while True:
                got, body = await ready_state()
                if got == status:
                    return body
                await trio.sleep(0.02)

        assert await wait_ready(200) == {"ready": True}
        upstream_scope.cancel()  # the upstream stops listening
        body = await wait_ready(503)
        assert body["ready"] is False
        assert body["reasons"] == [f"route r: upstream 127.0.0.1:{port} is down (refused)"]
        status = json.loads((await get(proxy.admin_port, "/api/status")).body)
        assert status["routes"][0]["upstream_healthy"] is False
        upstream_scope = trio.CancelScope()
        await nursery.start(upstream, port)  # back on the same port
        assert await wait_ready(200) == {"ready": True}
        proxy.proxy.begin_drain()
        body = await wait_ready(503)
        assert body["reasons"][0] == "draining: shutting down"


async def test_status_and_connections_show_kernel_rtt_on_both_legs(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        stream = await connect(proxy.port())
        for _ in range(20):
            await stream.send_all(b"ping")
            assert await receive_exactly(stream, 4) == b"ping"

        listing = json.loads((await get(proxy.admin_port, "/api/connections")).body)
        assert listing["count"] == 1
        conn = listing["connections"][0]
        assert conn["route"] == "r"
        assert conn["upstream"] == f"127.0.0.1:{echo_port}"
        assert conn["client"].startswith("127.0.0.1:")
        assert conn["bytes_client_to_upstream"] == conn["bytes_upstream_to_client"] == 80
        assert conn["protocol"] == "tcp"
        assert 0 <= conn["idle_s"] <= conn["age_s"]
        assert {"score", "grade", "trend", "p95_ms", "cv", "anomaly"} <= set(conn["quality"])
        for leg in ("client", "upstream"):
            assert conn["tcp"][leg]["rtt_ms"] > 0
            assert set(conn["tcp"][leg]) == {"rtt_ms", "rttvar_ms", "retransmits"}

        one = await get(proxy.admin_port, f"/api/connections/{conn['id']}")
        assert json.loads(one.body)["id"] == conn["id"]
        assert (await get(proxy.admin_port, "/api/connections/999999")).status == 404
        assert (await get(proxy.admin_port, "/api/connections/abc")).status == 404

        status = json.loads((await get(proxy.admin_port, "/api/status")).body)
        assert {"version", "pid", "uptime_s", "supervisor", "routes"} <= set(status)
        route = status["routes"][0]
        assert route["name"] == "r"
        assert route["listen"] == [f"127.0.0.1:{proxy.port()}"]
        assert route["upstream"] == f"127.0.0.1:{echo_port}"
        assert (route["connections_active"], route["connections_total"]) == (1, 1)
        assert route["upstream_healthy"] is True
        await stream.aclose()


async def test_slowloris_does_not_block_others_and_is_cut(nursery, echo_port: int, monkeypatch) -> None:
    monkeypatch.setattr(admin_module, "HEAD_TIMEOUT_S", 0.5)
    with trio.fail_after(15):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        slow = [await connect(proxy.admin_port) for _ in range(10)]
        for s in slow:
            await s.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finishes the head

        t0 = trio.current_time()
        reply = await get(proxy.admin_port, "/healthz")
        assert reply.status == 200
        assert trio.current_time() - t0 < 0.4  # not queued behind the slow ones

        for s in slow:  # each slow client is answered 408 and closed
            data = await receive_all(s)
            assert data.startswith(b"HTTP/1.1 408 ")
            await s.aclose()


async def test_admin_answers_while_a_connection_pushes_flat_out(nursery, echo_port: int) -> None:
    """The pump yields every few chunks: a saturating connection cannot
    starve the admin endpoint (or other connections)."""
    with trio.fail_after(20):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        stream = await connect(proxy.port())
        block = b"x" * 1_000_000
        stop = trio.Event()

        async def pump_out() -> None:
            while not stop.is_set():
                await stream.send_all(block)

        async def drain_in() -> None:
            while not stop.is_set():
                await stream.receive_some(1 << 20)

        async with trio.open_nursery() as n:
            n.start_soon(pump_out)
            n.start_soon(drain_in)
            await wait_until(lambda: proxy.route().bytes_forwarded()[1] > 20_000_000)
            t0 = trio.current_time()
            for _ in range(5):
                assert (await get(proxy.admin_port, "/healthz")).status == 200
            elapsed = trio.current_time() - t0
            moved = proxy.route().bytes_forwarded()[1]
            stop.set()
            n.cancel_scope.cancel()
        assert elapsed < 2.0, elapsed  # generous: five requests on a loaded loop
        assert moved > 20_000_000
        await stream.aclose()


async def test_oversized_head_gets_431(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        s = await connect(proxy.admin_port)
        await s.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
        data = await receive_all(s)
        assert data.startswith(b"HTTP/1.1 431 ")
        await s.aclose()


async def test_drain_needs_a_token_unless_open_on_loopback_is_chosen(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        closed = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        reply = await get(closed.admin_port, "/api/drain", method="POST")
        assert reply.status == 403 and b"open_on_loopback" in reply.body and not closed.proxy.draining
        doc = route_doc(f"127.0.0.1:{echo_port}")
        doc["admin"] = {"open_on_loopback": True}
        proxy = await start_proxy(nursery, doc, admin=True)
        reply = await get(proxy.admin_port, "/api/drain", method="POST")
        assert reply.status == 202
        await proxy.proxy.stopped.wait()


async def test_drain_with_token(nursery, echo_port: int) -> None:
    token = "t" * 32
    with trio.fail_after(10):
        doc = route_doc(f"127.0.0.1:{echo_port}")
        doc["admin"] = {"token": token}
        proxy = await start_proxy(nursery, doc, admin=True)
        for auth in ([], [("authorization", "Bearer wrong")], [("authorization", f"Basic {token}")]):
            reply = await get(proxy.admin_port, "/api/drain", method="POST", headers=auth)
            assert (reply.status, reply.headers.get("www-authenticate")) == (401, "Bearer")
        assert not proxy.proxy.draining
        reply = await get(proxy.admin_port, "/api/drain", method="POST", headers=[("authorization", f"Bearer {token}")])
        assert reply.status == 202
        assert proxy.proxy.draining


async def test_non_loopback_admin_refuses_changes_without_token(nursery, echo_port: int) -> None:
    addresses = [a for a in nonloopback_addresses() if ":" not in a]
    if not addresses:
        pytest.skip("this host has no non-loopback IPv4 address")
    with trio.fail_after(10):
        doc = route_doc(f"127.0.0.1:{echo_port}")
        doc["admin"] = {"listen": f"{addresses[0]}:0"}
        proxy = await start_proxy(nursery, doc, admin=True)
        reply = await request(addresses[0], proxy.admin_port, "/api/drain", method="POST")
        assert reply.status == 403
        assert b"admin.token" in reply.body
        assert (await request(addresses[0], proxy.admin_port, "/healthz")).status == 200
        assert not proxy.proxy.draining


async def test_secrets_never_reach_logs_metrics_or_api(nursery, echo_port: int, caplog) -> None:
    import io

    stream = io.StringIO()
    logs.configure("json", "debug", stream=stream)
    try:
        with trio.fail_after(10):
            proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
            headers = [("authorization", f"Bearer {SECRET}"), ("x-mcp-proxy-auth", f"Bearer {SECRET}")]
            for target in (
                f"/api/status?MCP_PROXY_AUTH_TOKEN={SECRET}",
                f"/api/connections?token={SECRET}",
                f"/metrics?MCP_PROXY_AUTH_TOKEN={SECRET}",
            ):
                reply = await get(proxy.admin_port, target, headers=headers)
                assert reply.status == 200
                assert SECRET.encode() not in reply.body
            log_text = stream.getvalue()
            assert '"event":"admin.request"' in log_text  # the requests were logged ...
            assert "MCP_PROXY_AUTH_TOKEN=REDACTED" in log_text  # ... with the token removed
            assert SECRET not in log_text
    finally:
        logs.configure("text", "warning")


def test_every_exported_metric_is_documented() -> None:
    """docs/metrics.md is the catalogue: each family we export is in it."""
    exported = {name for name in exported_metrics() if name.startswith("mcp_")}
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(mcp_[a-z_]+)`", doc))
    missing = {n for n in exported if n not in documented and f"{n}_total" not in documented}
    assert not missing, f"undocumented metrics: {sorted(missing)}"


async def test_metric_naming_no_created_series_and_known_labels_start_at_zero(nursery, echo_port: int) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(
            nursery,
            route_doc(f"127.0.0.1:{echo_port}", gate="token", gate_token="G4teT0kenForNamingTest0123"),
            admin=True,
        )
        for accept in ("", "application/openmetrics-text; version=1.0.0"):
            text = (
                await get(proxy.admin_port, "/metrics", headers=[("accept", accept)] if accept else None)
            ).body.decode()
            assert "_created" not in text, accept
        values = samples((await get(proxy.admin_port, "/metrics")).body.decode())
        r = ("route", "r")
        for reason in ("refused", "timeout", "unreachable", "dns", "error"):
            assert values[("mcp_sidecar_upstream_connect_failures_total", (("reason", reason), r))] == 0
        for reason in ("max_connections", "descriptors", "circuit_open", "not_allowed"):
            assert values[("mcp_sidecar_connections_rejected_total", (("reason", reason), r))] == 0
        for end in ("closed", "client_reset", "upstream_unavailable", "gate_refused", "drain_timeout"):
            assert values[("mcp_sidecar_connections_closed_total", (("end", end), r))] == 0
        for result in ("cookie", "bearer", "url", "missing", "invalid"):
            assert values[("mcp_sidecar_gate_requests_total", (("result", result), r))] == 0
        names = {name for name, _ in values}
        assert not any(name.startswith("mcp_sidecar_mcp_") for name in names)  # the prefix said MCP twice
        assert ("mcp_progress_notifications_total", (r,)) in values
        for kind in ("legacy-sse", "get", "listen", "inspector-v2"):  # every stream kind, at 0 from the start
            assert values[("mcp_streams_open", (("kind", kind), r))] == 0


def test_the_routes_are_declared_once_and_the_docs_list_them() -> None:
    """The router, the index page and docs/cli.md's endpoint table all come
    from routes.ENDPOINTS."""
    from mcp_sidecar.admin.routes import ENDPOINTS, index

    doc = (ROOT / "docs" / "cli.md").read_text()
    documented = re.findall(r"^\| `(GET|POST|DELETE) (/[^`?]*)(\?[^`]*)?` \|", doc, re.M)
    listed = [(e.method, e.path, e.query) for e in ENDPOINTS if e.path != "/"]
    assert [(m, p, q.replace("\\|", "|")) for m, p, q in documented] == listed  # (a table escapes its pipes)
    assert index() == [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/status",
        "/api/connections",
        "/api/connections/{id}",
        "/api/mcp",
        "/api/history",
        "/api/config",
        "/api/tap",
        "/dashboard",
        "POST /api/drain",
        "POST /api/routes/{id}",
        "POST /api/log-level",
        "/api/faults",
        "POST /api/faults",
        "DELETE /api/faults",
        "DELETE /api/faults/{id}",
    ]


async def test_the_index_and_unknown_paths_list_the_table(nursery, echo_port: int) -> None:
    from mcp_sidecar.admin.routes import index

    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{echo_port}"), admin=True)
        assert json.loads((await get(proxy.admin_port, "/")).body)["endpoints"] == index()
        missing = await get(proxy.admin_port, "/nope")
        assert missing.status == 404 and json.loads(missing.body)["endpoints"] == index()
        wrong = await get(proxy.admin_port, "/api/drain")
        assert (wrong.status, wrong.headers.get("allow")) == (405, "POST")
