"""MCP answers at the edges of HTTP, through the proxy, each against a
scripted upstream: a stream's last chunk lost to a client that already has
its answer, a body that runs until the close, an error with a null id, a
notification answered with another status than 202."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.admin.status import mcp_view

from ..conftest import connect, receive_exactly, route_doc, start_proxy, wait_until
from .test_observation import sample


def post(body: bytes, target: bytes = b"/mcp", extra: bytes = b"") -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


async def test_an_answered_event_stream_is_complete_though_the_client_left_before_its_last_chunk(
    nursery, scripted_upstream
) -> None:
    """The 2025 SDK client reads a POST's SSE answer and closes at once; the
    stream's terminating chunk then never makes it.  That exchange was
    answered: a 200, complete -- it used to count as aborted."""
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        request = post(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}')
        await client.send_all(request)
        upstream = await scripted_upstream.accepted.receive()
        assert await receive_exactly(upstream, len(request)) == request
        event = b'event: message\r\ndata: {"jsonrpc":"2.0","id":3,"result":{"content":[]}}\r\n\r\n'
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = head + b"%x\r\n" % len(event) + event + b"\r\n"
        await upstream.send_all(answer)
        assert await receive_exactly(client, len(answer)) == answer
        await client.aclose()  # has its answer; the last chunk ("0\r\n\r\n") never comes
        await upstream.aclose()  # (the server, seeing its client gone, closes too)
        await wait_until(lambda: proxy.route().active == 0)
        assert sample(proxy, "mcp_sidecar_http_requests_total", method="POST", status="200") == 1
        assert sample(proxy, "mcp_sidecar_http_duration_seconds_count", outcome="aborted") == 0
        assert sample(proxy, "mcp_requests_total", method="tools/call", status="ok", target="echo") == 1


async def test_a_body_that_runs_until_the_close_is_complete_at_the_close(nursery, scripted_upstream) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        request = post(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
        await client.send_all(request)
        upstream = await scripted_upstream.accepted.receive()
        await receive_exactly(upstream, len(request))
        answer = (
            b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}'
        )
        await upstream.send_all(answer)
        await upstream.aclose()  # no Content-Length, not chunked: the close ends the body
        assert await receive_exactly(client, len(answer)) == answer
        await client.aclose()
        await wait_until(lambda: proxy.route().active == 0)
        assert sample(proxy, "mcp_sidecar_http_duration_seconds_count", outcome="complete") == 1
        assert sample(proxy, "mcp_sidecar_http_duration_seconds_count", outcome="aborted") == 0
        assert sample(proxy, "mcp_requests_total", method="tools/list", status="ok") == 1


async def test_an_error_with_a_null_id_answers_the_one_request_of_its_exchange(nursery, scripted_upstream) -> None:
    """A server refusing an initialize at once (here 403 for a foreign Host)
    answers with an error whose id is null: that is the request's answer,
    not a request left in flight until it times out."""
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        request = post(b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}')
        await client.send_all(request)
        upstream = await scripted_upstream.accepted.receive()
        await receive_exactly(upstream, len(request))
        error = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Host"}}'
        answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(error)
        await upstream.send_all(answer + error)
        assert await receive_exactly(client, len(answer + error)) == answer + error
        await wait_until(lambda: sample(proxy, "mcp_requests_total", method="initialize") == 1)
        assert (
            sample(proxy, "mcp_requests_total", method="initialize", status="-32600", protocol_version="2025-11-25")
            == 1
        )
        assert proxy.route().observation.tracker.pending == 0  # nothing left to time out
        for s in (client, upstream):
            await s.aclose()


async def test_a_notification_accepted_with_another_status_than_202_is_counted(nursery, scripted_upstream) -> None:
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        upstream_conns = []
        for status, body in ((b"202 Accepted", b""), (b"200 OK", b"{}"), (b"400 Bad Request", b"{}")):
            request = post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}', extra=b"Mcp-Session-Id: s1\r\n")
            await client.send_all(request)
            if not upstream_conns:
                upstream_conns.append(await scripted_upstream.accepted.receive())
            await receive_exactly(upstream_conns[0], len(request))
            answer = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            await upstream_conns[0].send_all(answer)
            assert await receive_exactly(client, len(answer)) == answer
        proxy.route()
        # 202 is the rule, an error status is "cannot accept" (allowed); a 200 is neither.
        assert sample(proxy, "mcp_conformance_total", kind="notification_not_202") == 1
        view = mcp_view(proxy.proxy, trio.current_time())["routes"][0]
        assert view["conformance"] == {"notification_not_202": 1}
        for s in (client, *upstream_conns):
            await s.aclose()


async def test_a_request_described_only_by_its_headers_is_labelled_by_them(nursery, scripted_upstream) -> None:
    """A 2026-07-28 request whose body is not read (not JSON here) is still
    counted, by its Mcp-Method, Mcp-Name and MCP-Protocol-Version headers."""
    with trio.fail_after(10):
        proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{scripted_upstream.port}"))
        client = await connect(proxy.port())
        body = json.dumps({"not": "json-rpc"}).encode()
        extra = b"MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: =?base64?c2VhcmNo?=\r\n"
        request = post(body, extra=extra)
        await client.send_all(request)
        upstream = await scripted_upstream.accepted.receive()
        await receive_exactly(upstream, len(request))
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        await upstream.send_all(answer)
        await receive_exactly(client, len(answer))
        labels = {"method": "tools/call", "protocol_version": "2026-07-28", "target": "search"}
        await wait_until(lambda: sample(proxy, "mcp_requests_total", **labels) == 1)
        for s in (client, upstream):
            await s.aclose()
