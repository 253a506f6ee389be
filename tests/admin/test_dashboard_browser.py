"""The dashboard in a real browser (headless Chromium): three states,
checked by what the page shows (DOM assertions), with screenshots.

Needs a Chromium binary (``apt-get install chromium``); skipped with that
reason otherwise.  What the page reads is covered without a browser by
test_views.py (the API shapes) and test_admin.py (the assets)."""

from __future__ import annotations

import contextlib
import html
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from mcp_sidecar.demo.drive import drive_mcp, drive_mcp_modern
from mcp_sidecar.demo.servers import serve_echo, serve_http, serve_ws

from ..conftest import fault_doc, free_port, start_proxy, wait_until

GATE_TOKEN = "DashboardGateT0ken0123456789"

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium (apt-get install chromium): the browser test "
    "of the dashboard is skipped; its API is tested apart",
)
#: Where screenshots go when asked (docs/images is refreshed this way).
SHOTS = os.environ.get("MCP_SIDECAR_SCREENSHOTS")


async def _browse(url: str, profile: Path, shot: Path | None = None, width: int = 1400) -> str:
    """The page's DOM after its scripts ran (virtual time: timers and fetches settle)."""
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},1900",
        "--virtual-time-budget=4000",
    ]
    if shot is not None:
        done = await trio.run_process(
            [*args, f"--screenshot={shot}", url], capture_stdout=True, capture_stderr=True, check=False
        )
        assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-500:]
    done = await trio.run_process([*args, "--dump-dom", url], capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr[-500:]
    return done.stdout.decode()


def _rows(dom: str, table: str) -> str:
    match = re.search(rf'<table id="{table}".*?</table>', dom, re.S)
    assert match, table
    return match.group(0)


def _route_cells(table: str) -> dict[str, list[str]]:
    """Each route row's cells (inner HTML), by route name."""
    out = {}
    for name, body in re.findall(r'<tr data-route="([^"]+)"[^>]*>(.*?)</tr>', table, re.S):
        out[name] = [
            re.sub(r"^<span>(.*)</span>$", r"\1", c, flags=re.S) for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)
        ]
    return out


async def _read_to_end(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


def _points(dom: str, chart: str) -> int:
    match = re.search(rf'id="{chart}"[^>]*data-points="(\d+)"|data-points="(\d+)"[^>]*id="{chart}"', dom)
    assert match, chart
    return int(match.group(1) or match.group(2))


async def test_dashboard_idle_traffic_and_upstream_down(nursery, tmp_path: Path) -> None:
    shots = Path(SHOTS) if SHOTS else tmp_path
    with trio.fail_after(90):
        http_up = await nursery.start(serve_http, "127.0.0.1", 0)
        ws_up = await nursery.start(serve_ws, "127.0.0.1", 0)
        flaky_scope = trio.CancelScope()

        async def flaky(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with flaky_scope:
                await serve_echo("127.0.0.1", 0, task_status=task_status)

        flaky_up = await nursery.start(flaky)
        closed_port = free_port()
        proxy = await start_proxy(
            nursery,
            {
                "route": [
                    {
                        "name": "mcp-http",
                        "listen": "127.0.0.1:0",
                        "upstream": f"127.0.0.1:{http_up}",
                        "health_interval": 0,
                    },
                    {"name": "mcp-ws", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{ws_up}", "health_interval": 0},
                    {
                        "name": "flaky",
                        "listen": "127.0.0.1:0",
                        "upstream": f"127.0.0.1:{flaky_up}",
                        "health_interval": "0.2s",
                        "health_fall": 1,
                    },
                    {
                        "name": "gated",
                        "listen": "127.0.0.1:0",
                        "upstream": f"127.0.0.1:{http_up}",
                        "health_interval": 0,
                        "gate": "token",
                        "gate_token": GATE_TOKEN,
                    },
                    {
                        "name": "nowhere",
                        "listen": "127.0.0.1:0",
                        "upstream": f"127.0.0.1:{closed_port}",
                        "health_interval": 0,
                        "connect_retry_window": "0s",
                        "max_connections": 50,
                    },
                ]
            },
            admin=True,
        )
        await wait_until(lambda: proxy.route("flaky").health.state is True)
        url = f"http://127.0.0.1:{proxy.admin_port}/dashboard"
        admin = proxy.admin
        assert admin is not None and admin.history is not None

        def tick() -> None:  # a history point now (the sampler's own task ticks every 5 s)
            admin.history.record(time.time(), *admin.source.sample(5.0))

        # 1. idle: ready, every route serving, no MCP yet, charts without traffic
        tick()
        dom = await _browse(url, tmp_path / "p1", shots / "dashboard-idle.png")
        assert '<span id="state" class="badge ok">ready</span>' in dom
        assert '<section id="supervision" hidden="">' in dom  # no supervisor: no block
        assert '<div id="faults-banner" class="faults-banner" hidden=""></div>' in dom  # faults off: no banner
        routes = _rows(dom, "routes")
        assert routes.count('data-state="serving"') == 5
        upstreams = _rows(dom, "upstreams")
        assert re.search(
            rf'data-route="flaky" data-upstream="127.0.0.1:{flaky_up}" data-state="up" data-checks="\+', upstreams
        )
        assert "not checked (health_interval 0)" in upstreams
        assert re.search(r'data-route="nowhere".*?<span class="conns">0 / 0 / 50</span>', routes, re.S)
        assert "no MCP requests seen yet" in _rows(dom, "methods")
        assert _points(dom, "chart-rps") > 0 and "no open connection" in _rows(dom, "connections")

        # 2. traffic on all three MCP transports, a connection held open
        for _ in range(3):
            await drive_mcp("127.0.0.1", proxy.port("mcp-http"), proxy.port("mcp-ws"))
            tick()
        await drive_mcp_modern("127.0.0.1", proxy.port("mcp-http"))  # and a 2026-07-28 client
        held = await trio.open_tcp_stream("127.0.0.1", proxy.port("flaky"))
        await held.send_all(b"hello")
        await wait_until(lambda: proxy.route("flaky").active == 1)
        dom = await _browse(url, tmp_path / "p2", shots / "dashboard-traffic.png")
        methods = _rows(dom, "methods")
        assert methods.count('data-method="tools/call"') == 2  # over streamable HTTP and WebSocket
        assert re.search(
            r'data-method="tools/call"><td>mcp-http</td><td>tools/call</td><td class="num">8</td>', methods
        )
        # Who was slow: a stacked bar per method, its four parts' means adding up to the latency.
        bar = re.search(
            r'data-method="tools/call"><td>mcp-http</td>.*?<span class="split" data-split="([^"]+)">'
            r'<span class="split-bar">((?:<span class="part-\w+"[^>]*></span>){4})</span>',
            methods,
            re.S,
        )
        assert bar is not None, methods
        network, server, transfer, client = (float(v) for v in bar.group(1).split(","))
        assert server > 10 * (network + transfer + client)  # the demo's slow tool: the server's time
        assert "slow-client answers 0; upstream SSE bursts 0" in re.search(
            r'<div id="mcp-facts"[^>]*>(.*?)</div>', dom
        ).group(1)
        targets = _rows(dom, "targets")  # which tool was called, per route
        assert re.search(
            r'data-target="echo"><td>mcp-http</td><td>tools/call</td><td>echo</td><td class="num">4</td>', targets
        )
        assert 'data-target="slow"' in targets
        assert "<td>mcp-http</td>" in _rows(dom, "clients") and "2026-07-28" in _rows(dom, "clients")
        assert re.search(r'data-route="mcp-http".*?<td>mixed</td>', _rows(dom, "routes"), re.S)
        assert "versions 2025-06-18 " in re.search(r'<div id="mcp-facts"[^>]*>(.*?)</div>', dom).group(1)
        transports = _rows(dom, "transports")
        for era in ("legacy-sse", "http", "websocket"):
            assert f'data-transport="{era}"' in transports, era
        assert _points(dom, "chart-rps") >= 4 and _points(dom, "chart-p95") >= 3
        connections = _rows(dom, "connections")
        assert connections.count('class="clickable') == 1 and "<td>flaky</td>" in connections
        await held.aclose()

        # 3. the flaky upstream goes away: the route is down and the page says why; a
        # client is refused at once (upstream_down), the gate answers 401 to one without
        # the token, the unreachable upstream counts a connect failure
        flaky_scope.cancel()
        await wait_until(lambda: proxy.route("flaky").health.state is False)
        for port in (proxy.port("flaky"), proxy.port("gated"), proxy.port("nowhere")):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            with contextlib.suppress(trio.BrokenResourceError):  # refused with a reset
                await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await _read_to_end(client)
            await client.aclose()
        await wait_until(lambda: proxy.route("nowhere").active == 0 and proxy.route("gated").active == 0)
        dom = await _browse(url, tmp_path / "p3", shots / "dashboard-down.png")
        assert '<span id="state" class="badge bad">not ready</span>' in dom
        routes = _rows(dom, "routes")
        assert 'data-route="flaky" data-state="down"' in routes
        assert f"upstream 127.0.0.1:{flaky_up} is down (" in routes
        assert "route flaky: upstream" in re.search(r'<span id="state-reason">(.*?)</span>', dom).group(1)
        cells = _route_cells(routes)
        assert cells["flaky"][4:9] == [
            '<span class="conns">0 / 1 / 1024</span>',
            "1",  # the one served (as HAProxy, the refused are counted apart)
            '1<div class="breakdown muted">upstream_down 1</div>',
            "-",
            "0",
        ], cells["flaky"]
        assert cells["gated"][6:8] == ["0", "1"], cells["gated"]  # one 401: refused by the gate, not turned away
        assert cells["nowhere"][8].startswith("1<div"), cells["nowhere"]  # one connect failure, by reason
        upstreams = _rows(dom, "upstreams")
        row = re.search(
            rf'data-route="flaky" data-upstream="127.0.0.1:{flaky_up}" data-state="down" data-checks="[+-]*-"',
            upstreams,
        )
        assert row, upstreams
        assert re.search(
            rf'data-upstream="127.0.0.1:{closed_port}".*?<td class="num">0</td><td class="num">1</td>'
            r"<td>closed, 1 failure in a row</td>",
            upstreams,
            re.S,
        )


async def test_a_thousand_connections_stay_one_page_at_a_time(nursery, tmp_path: Path) -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 5000:
        pytest.skip(f"needs 5000 descriptors for 1000 proxied connections (RLIMIT_NOFILE is {soft})")
    with trio.fail_after(120):
        echo = await nursery.start(serve_echo, "127.0.0.1", 0)
        proxy = await start_proxy(
            nursery,
            {
                "route": [
                    {"name": "many", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{echo}", "health_interval": 0}
                ]
            },
            admin=True,
        )
        streams = []
        for _ in range(1000):
            streams.append(await trio.open_tcp_stream("127.0.0.1", proxy.port("many")))
        await wait_until(lambda: len(proxy.route("many").connections) == 1000)
        started = trio.current_time()
        dom = await _browse(f"http://127.0.0.1:{proxy.admin_port}/dashboard", tmp_path / "p")
        assert trio.current_time() - started < 30
        assert '<span id="conn-count" class="muted">(1000 open)</span>' in dom
        assert '<span id="page">page 1 of 10</span>' in dom
        assert _rows(dom, "connections").count('class="clickable') == 100  # one page rendered, not a thousand
        for stream in streams:
            await stream.aclose()


def _ticks(dom: str, chart: str) -> dict[str, list[list[Any]]]:
    match = re.search(rf'<figure class="chart" id="{chart}"[^>]*data-ticks="([^"]*)"', dom)
    assert match, chart
    ticks: dict[str, list[list[Any]]] = json.loads(html.unescape(match.group(1)))
    return ticks


async def test_chart_axes_stay_readable_at_two_widths(nursery, tmp_path: Path) -> None:
    """Ten minutes of history (sub-millisecond RTTs, megabytes per second):
    at a wide and a narrow window, every chart's tick labels are apart on
    both axes and no two labels of an axis read the same."""
    with trio.fail_after(60):
        proxy = await start_proxy(
            nursery,
            {
                "route": [
                    {
                        "name": name,
                        "listen": "127.0.0.1:0",
                        "upstream": f"127.0.0.1:{free_port()}",
                        "health_interval": 0,
                    }
                    for name in ("one", "two")
                ]
            },
            admin=True,
        )
        admin = proxy.admin
        assert admin is not None and admin.history is not None
        now = time.time()
        for i in range(121):  # every 5 s over 10 minutes, as the sampler would
            values = {
                "connections": i % 6,
                "bytes_out_per_s": 1_200_000.0 + 3_000 * (i % 11),
                "mcp_rps": round(0.5 + (i % 7) / 4, 3),
                "mcp_errors_per_s": round((i % 5) / 100, 3),
                "p95_ms": 12.5 + (i % 9) / 5,
                "rtt_client_ms": round(0.041 + (i % 17) / 1000, 3),  # the loopback RTT the old axis repeated
            }
            admin.history.record(now - 600 + 5 * i, {"one": values, "two": {**values, "connections": 1}}, {})
        url = f"http://127.0.0.1:{proxy.admin_port}/dashboard"
        for width in (1400, 560):
            shot = Path(SHOTS) / f"dashboard-charts-{width}.png" if SHOTS else None
            dom = await _browse(url, tmp_path / f"w{width}", shot, width=width)
            for chart in ("chart-rps", "chart-p95", "chart-errors", "chart-conns", "chart-bytes", "chart-rtt"):
                ticks = _ticks(dom, chart)
                xs, ys = ticks["x"], ticks["y"]
                assert len(xs) >= 3 and len(ys) >= 2, (width, chart, ticks)
                for axis in (xs, ys):
                    labels = [t[0] for t in axis]
                    assert len(set(labels)) == len(labels), (width, chart, labels)
                    spans = sorted((t[1], t[2]) for t in axis)
                    for (_, end), (start, _) in itertools.pairwise(spans):
                        assert start - end >= 2, (width, chart, axis)  # apart by two pixels at least
                assert all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", t[0]) for t in xs), xs


async def test_a_supervised_dashboard_shows_the_supervisor_and_every_worker(
    nursery, supervised, tmp_path: Path
) -> None:
    """Two workers and a standby: the supervisor block (its pid, not a
    worker's), a row per worker, and the route's peak over both workers."""
    from ..supervise.test_workers import two_workers

    with trio.fail_after(90):
        _, status, port = await two_workers(nursery, supervised)
        held = []
        try:
            for i in range(6):  # accepted by whichever worker is quicker: the peak counts both
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(b"%d" % i)
                assert await stream.receive_some(8) == b"%d" % i
                held.append(stream)
            dom = await _browse(f"http://{status['admin']}/dashboard", tmp_path / "p")
        finally:
            for stream in held:
                await stream.aclose()
        assert '<section id="supervision">' in dom  # shown (hidden="" when unsupervised)
        supervisor = re.search(r'<div id="supervisor" class="kv">(.*?)</div>', dom, re.S).group(1)
        assert f'<span class="muted">pid</span><span>{status["supervisor"]["pid"]}</span>' in supervisor
        assert '<span class="muted">state directory</span><span>ok</span>' in supervisor
        workers = _rows(dom, "workers")
        for worker in status["workers"]:
            assert re.search(
                rf'data-worker="{worker["id"]}"><td>#{worker["id"]}</td>'
                rf'<td class="num">{worker["pid"]}</td><td>active</td>',
                workers,
            ), workers
        assert f'<td class="num">{status["standby"]["pid"]}</td><td>standby</td>' in workers
        assert '<span class="conns">6 / 6 / 1024</span>' in _rows(dom, "routes")


async def test_the_dashboard_says_fault_injection_is_on(nursery, tmp_path: Path) -> None:
    """[faults] enabled: a banner nobody can miss, each active fault named; off: none."""
    with trio.fail_after(60):
        echo = await nursery.start(serve_echo, "127.0.0.1", 0)
        lag = {"kind": "latency", "name": "lag", "latency": "50ms", "ttl": "10m"}
        proxy = await start_proxy(nursery, fault_doc(f"127.0.0.1:{echo}", lag), admin=True)
        dom = await _browse(f"http://127.0.0.1:{proxy.admin_port}/dashboard", tmp_path / "p")
        banner = re.search(r'<div id="faults-banner" class="faults-banner">(.*?)</div>\s*</header>', dom, re.S)
        assert banner, dom[:2000]
        assert "FAULT INJECTION ENABLED: 1 fault(s) active" in banner.group(1)
        assert re.search(r'data-fault="r/lag">r/lag: latency 50ms downstream - injected 0, expires in \d+ min', dom)
