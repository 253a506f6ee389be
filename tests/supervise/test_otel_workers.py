"""OpenTelemetry under a supervisor with two workers, configured by the
standard environment variables alone: each worker exports the spans and
metrics of what it correlated itself, the supervisor those of the requests
it correlated across workers (the 2024-11-05 transport), each process its
own ``service.instance.id``; a reload keeps the supervisor's exporting."""

from __future__ import annotations

import os

import trio

from mcp_sidecar.demo.drive import drive_mcp
from mcp_sidecar.demo.servers import serve_http, serve_ws

from ..conftest import wait_until
from ..otlp import start_receiver
from .test_supervisor import wait_status


async def test_workers_and_the_supervisor_each_export_their_own(nursery, supervised) -> None:
    with trio.fail_after(60):
        receiver = await start_receiver(nursery)
        http_port = await nursery.start(serve_http, "127.0.0.1", 0)
        ws_port = await nursery.start(serve_ws, "127.0.0.1", 0)
        routes = [
            {"name": "r", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{http_port}", "health_interval": 0},
            {"name": "ws", "listen": "127.0.0.1:0", "upstream": f"127.0.0.1:{ws_port}", "health_interval": 0},
        ]
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_SERVICE_NAME": "sidecar-pod",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }
        sup = await trio.to_thread.run_sync(
            lambda: supervised(routes, {}, {"workers": 2, "drain_timeout": "60s"}, env=env)
        )
        status = await wait_status(sup, lambda s: len(s["workers"]) == 2 and s["standby"] is not None)
        http, ws = [await trio.to_thread.run_sync(sup.port, name) for name in ("r", "ws")]
        await drive_mcp("127.0.0.1", http, ws)
        # 2025 HTTP: 4 requests; WebSocket: 3; legacy SSE: 2 (correlated by the supervisor).
        await wait_until(lambda: len(receiver.spans) == 9)

        def exported(era: str) -> set[str]:
            return {
                p["attributes"]["mcp.method.name"]
                for resource, metrics in receiver.metric_exports
                for p in metrics["mcp.server.operation.duration"][2]
                if p["attributes"].get("mcp_sidecar.route") == "r" and resource["service.instance.id"] in instances(era)
            }

        def instances(era: str) -> set[str]:
            return {s["instance"] for s in receiver.spans if s["attributes"]["mcp_sidecar.era"] == era}

        await wait_until(
            lambda: "tools/list" in exported("2024-11-05-sse") and "tools/call" in exported("streamable-http-2025")
        )
        assert (await trio.to_thread.run_sync(sup.command, "reload"))["ok"]
        await wait_status(sup, lambda s: not s["draining_workers"] and len(s["workers"]) == 2)
        await drive_mcp("127.0.0.1", http, ws)
        await wait_until(lambda: len(receiver.spans) == 18)
    supervisor = f"-{sup.process.proc.pid}"
    workers = {f"-{w['pid']}" for w in status["workers"]} | {
        f"-{w['pid']}" for w in (await trio.to_thread.run_sync(sup.status))["workers"]
    }
    (legacy_instance,) = instances("2024-11-05-sse")
    assert legacy_instance.endswith(supervisor)
    assert {i[i.rindex("-") :] for i in instances("streamable-http-2025") | instances("websocket")} <= workers
    legacy = [s for s in receiver.spans if s["attributes"]["mcp_sidecar.era"] == "2024-11-05-sse"]
    assert sorted(s["name"] for s in legacy) == ["initialize", "initialize", "tools/list", "tools/list"]
    assert all(s["attributes"]["mcp_sidecar.transport"] == "legacy-sse" and s["duration_ms"] > 0 for s in legacy)
    assert {r["service.name"] for r in receiver.resources} == {"sidecar-pod"}
