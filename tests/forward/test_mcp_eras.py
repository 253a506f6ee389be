"""Both MCP eras through the proxy, with the official MCP Python SDK on both
ends: the 2026-07-28 revision (stateless, ``server/discover``,
``subscriptions/listen``), 2025-11-25 streamable HTTP (sessions,
``initialize``) and the 2024-11-05 HTTP+SSE transport, on one upstream.
What the clients did is counted on the client; the proxy must count the same."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from mcp_sidecar.admin.status import mcp_view
from mcp_sidecar.net.http import request

from ..conftest import ROOT, route_doc, sdk_server_process, start_proxy, wait_until
from .test_observation import sample

#: Sessions per era in the counting test.
SESSIONS = 4
MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"


@pytest.fixture(scope="module")
def sdk_server() -> Iterator[int]:
    """The SDK's server (tests/mcp_sdk/server.py) in a subprocess: its port."""
    with sdk_server_process() as port:
        yield port


async def drive(url: str, mode: str, sessions: int) -> dict[str, Any]:
    """Run tests/mcp_sdk/driver.py: what the SDK's client did."""
    result = await trio.run_process(
        [sys.executable, "-m", "tests.mcp_sdk.driver", url, mode, str(sessions)],
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
    )
    return json.loads(result.stdout)


def requests(proxy, **labels: str) -> float:
    return sample(proxy, "mcp_requests_total", **labels)


async def test_every_method_of_both_eras_is_counted_as_the_client_made_it(nursery, sdk_server) -> None:
    with trio.fail_after(120):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{sdk_server}"))
        base = f"http://127.0.0.1:{proxy.port()}"
        modern = await drive(f"{base}/mcp", "auto", SESSIONS)
        handshake = await drive(f"{base}/mcp", "legacy", SESSIONS)
        legacy_sse = await drive(f"{base}/sse", "sse", SESSIONS)
        assert modern["versions"] == {MODERN: SESSIONS}
        assert handshake["versions"] == legacy_sse["versions"] == {HANDSHAKE: SESSIONS}
        await wait_until(lambda: proxy.route().active == 0)  # every connection closed

        for done, transport, version in (
            (modern, "http", MODERN),
            (handshake, "http", HANDSHAKE),
            (legacy_sse, "legacy-sse", HANDSHAKE),
        ):
            calls = done["calls"]
            labels = {"transport": transport, "protocol_version": version}
            assert requests(proxy, method="tools/list", status="ok", target="", **labels) == calls["tools/list"]
            assert (
                requests(proxy, method="tools/call", status="ok", target="echo", **labels) == calls["tools/call:echo"]
            )
            # A tool that raised: a result with isError, not a JSON-RPC error.
            assert (
                requests(proxy, method="tools/call", status="tool_error", target="fail", **labels)
                == (calls["tools/call:fail"])
            )
            assert requests(proxy, method="prompts/get", status="ok", target="greet", **labels) == calls["prompts/get"]
            # Resource URIs are no labels unless the route opts in.
            assert requests(proxy, method="resources/read", status="ok", target="", **labels) == calls["resources/read"]
        # 2026-07-28: discovery instead of initialize, and the listen streams as requests.
        assert requests(proxy, method="server/discover", status="ok", protocol_version=MODERN) == SESSIONS
        assert (
            requests(proxy, method="subscriptions/listen", status="ok", protocol_version=MODERN)
            == (modern["calls"]["subscriptions/listen"])
        )
        assert requests(proxy, method="initialize", protocol_version=MODERN) == 0
        assert requests(proxy, method="initialize", status="ok", protocol_version=HANDSHAKE) == 2 * SESSIONS
        assert requests(proxy, method="other") == 0
        assert requests(proxy) == 7 * SESSIONS + 2 * 6 * SESSIONS  # nothing else, nothing twice
        assert sample(proxy, "mcp_conformance_total") == 0  # the SDK keeps the rules

        # Streams: every one ended, the gauges are back to 0.
        assert sample(proxy, "mcp_streams_open") == 0
        assert sample(proxy, "mcp_stream_duration_seconds_count", kind="listen", end="client_closed") == SESSIONS
        assert sample(proxy, "mcp_stream_duration_seconds_count", kind="legacy-sse") == SESSIONS
        # No request's answer counted as aborted: only the streams the clients closed.
        closed_by_clients = sample(proxy, "mcp_stream_duration_seconds_count", end="client_closed")
        assert sample(proxy, "mcp_sidecar_http_duration_seconds_count", outcome="aborted") == closed_by_clients

        view = mcp_view(proxy.proxy, trio.current_time())["routes"][0]
        assert view["era"] == "mixed"
        assert view["eras"] == {MODERN: 7 * SESSIONS, "2025": 6 * SESSIONS, "legacy-sse": 6 * SESSIONS}
        assert view["protocol_versions"] == {MODERN: 7 * SESSIONS, HANDSHAKE: 12 * SESSIONS}
        assert view["sessions_open"] == 0  # 2025 sessions were deleted, legacy ones ended with their stream
        assert view["streams_open"] == 0
        assert [c["protocol_version"] for c in view["clients"]] in ([MODERN], [HANDSHAKE])  # one client host
        assert view["targets"]["tools/call"]["fail"]["outcomes"] == {"error": 3 * SESSIONS}
        assert set(view["targets"]) == {"tools/call", "prompts/get"}


async def test_listen_streams_are_open_while_held_and_end_when_abandoned(nursery, sdk_server) -> None:
    with trio.fail_after(60):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{sdk_server}"))
        held = 3
        async with trio.open_nursery() as inner:
            proc = await inner.start(
                lambda task_status: trio.run_process(
                    [
                        sys.executable,
                        "-m",
                        "tests.mcp_sdk.driver",
                        f"http://127.0.0.1:{proxy.port()}/mcp",
                        "hold",
                        str(held),
                    ],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    task_status=task_status,
                )
            )
            line = await proc.stdout.receive_some(100)
            assert line.startswith(b"listening")
            proxy.route()  # (drains the observation queue)
            assert sample(proxy, "mcp_streams_open", kind="listen") == held
            assert mcp_view(proxy.proxy, trio.current_time())["routes"][0]["streams"]["open"] == {"listen": held}
            await proc.stdin.aclose()  # the client abandons its streams
        await wait_until(lambda: proxy.route().active == 0)
        assert sample(proxy, "mcp_streams_open") == 0
        assert sample(proxy, "mcp_stream_duration_seconds_count", kind="listen", end="client_closed") == held
        assert requests(proxy, method="subscriptions/listen", status="ok") == held


async def mcp_post(port: int, body: dict[str, Any], headers: dict[str, str]):
    return await request(
        "127.0.0.1",
        port,
        "/mcp",
        method="POST",
        body=json.dumps(body).encode(),
        headers=[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            *headers.items(),
        ],
    )


def modern_call(name: str, request_id: int = 1, version: str = MODERN) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": {"text": "x"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": version,
                "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }


async def test_requests_that_break_the_header_rules_are_counted_by_kind_and_still_forwarded(
    nursery, sdk_server
) -> None:
    with trio.fail_after(30):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{sdk_server}"))
        port = proxy.port()
        good = {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "echo"}
        reply = await mcp_post(port, modern_call("echo"), good)
        assert reply.status == 200
        cases = [
            ({**good, "mcp-name": "fail"}, "name_header_mismatch"),
            ({k: v for k, v in good.items() if k != "mcp-method"}, "method_header_missing"),
            ({k: v for k, v in good.items() if k != "mcp-name"}, "name_header_missing"),
            ({**good, "mcp-method": "tools/list"}, "method_header_mismatch"),
            ({**good, "mcp-protocol-version": HANDSHAKE}, "version_header_mismatch"),
            ({**good, "mcp-name": "=?base64?not base64?="}, "header_value_invalid"),
        ]
        for n, (headers, kind) in enumerate(cases, 2):
            reply = await mcp_post(port, modern_call("echo", n), headers)
            # The upstream judged it (the bytes reached it unchanged): 400 and a
            # JSON-RPC error (the SDK says -32020 HeaderMismatch, or -32600 for the version).
            assert reply.status == 400, (kind, reply.status, reply.body)
            assert json.loads(reply.body)["error"]["code"] in (-32020, -32600), kind
            assert sample(proxy, "mcp_conformance_total", kind=kind) == 1, kind
        counted = {
            s.labels["kind"]: s.value
            for f in proxy.registry().collect()
            for s in f.samples
            if s.name == "mcp_conformance_total"
        }
        assert counted == {kind: 1 for _, kind in cases}
        refused = requests(proxy, method="tools/call", status="-32020") + requests(
            proxy, method="tools/call", status="-32600"
        )
        assert refused == len(cases)
        assert mcp_view(proxy.proxy, trio.current_time())["routes"][0]["conformance"] == counted


async def test_the_target_labels_are_capped_per_route_and_resources_are_opt_in(nursery, sdk_server) -> None:
    with trio.fail_after(60):
        proxy = await start_proxy(
            nursery, route_doc(f"127.0.0.1:{sdk_server}", target_label_limit=1, target_label_resources=True)
        )
        await drive(f"http://127.0.0.1:{proxy.port()}/mcp", "auto", 1)
        await wait_until(lambda: proxy.route().active == 0)
        assert requests(proxy, method="tools/call", target="echo") == 1  # the first name is a label
        assert requests(proxy, method="tools/call", target="other") == 1  # "fail": past the cap
        assert requests(proxy, method="prompts/get", target="other") == 1
        assert requests(proxy, method="resources/read", target="other") == 1
        assert sample(proxy, "mcp_sidecar_targets_capped_total") == 3
        proxy2 = await start_proxy(nursery, route_doc(f"127.0.0.1:{sdk_server}", target_label_resources=True))
        await drive(f"http://127.0.0.1:{proxy2.port()}/mcp", "auto", 1)
        await wait_until(lambda: proxy2.route().active == 0)
        assert requests(proxy2, method="resources/read", target="demo://config") == 1


async def test_the_demo_upstream_speaks_2026_and_refuses_mismatched_headers(nursery) -> None:
    """The embedded demo serves the 2026-07-28 revision beside the 2025 one on
    /mcp: what its 2026 client does is counted under that version, with no
    session, and its listen stream ends when the client closes it."""
    from mcp_sidecar.demo.drive import drive_mcp_modern
    from mcp_sidecar.demo.servers import serve_http

    with trio.fail_after(20):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream}"))
        assert await drive_mcp_modern("127.0.0.1", proxy.port()) == 5
        await wait_until(lambda: proxy.route().active == 0)
        for method, target in (
            ("server/discover", ""),
            ("tools/list", ""),
            ("tools/call", "echo"),
            ("tools/call", "slow"),
        ):
            assert requests(proxy, method=method, status="ok", protocol_version=MODERN, target=target) == 1, method
        assert requests(proxy, method="subscriptions/listen", status="ok") == 1
        assert sample(proxy, "mcp_stream_duration_seconds_count", kind="listen", end="client_closed") == 1
        assert sample(proxy, "mcp_conformance_total") == 0
        view = mcp_view(proxy.proxy, trio.current_time())["routes"][0]
        assert view["sessions_open"] == 0 and view["era"] == MODERN and view["clients_active"] == 1
        # The demo refuses what the revision refuses: a name header that is not the body's.
        reply = await mcp_post(
            proxy.port(),
            modern_call("echo"),
            {"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "slow"},
        )
        assert reply.status == 400 and json.loads(reply.body)["error"]["code"] == -32020
        assert sample(proxy, "mcp_conformance_total", kind="name_header_mismatch") == 1
