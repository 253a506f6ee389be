"""MCP faults: the HTTP sides (sans-io: exact bytes, any chunking) and every
fault through a real proxy with the official SDK's client and server, in
both eras over streamable HTTP (the server's own log says what reached it)."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_sidecar.config.faults import parse_fault
from mcp_sidecar.faults.actions import Close, Reply, Send, Wait
from mcp_sidecar.faults.book import FaultBook
from mcp_sidecar.faults.mcp import ResponseSide
from mcp_sidecar.faults.requests import RequestSide
from mcp_sidecar.net.http import request

from ..conftest import ROOT, fault_doc, sdk_server_process, start_proxy

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"


def post(message: dict[str, Any]) -> bytes:
    body = msgspec.json.encode(message)
    return b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def call(request_id: int, tool: str) -> bytes:
    return post({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool}})


def sides(*tables: dict[str, Any]) -> tuple[RequestSide, ResponseSide, FaultBook]:
    book = FaultBook("r")
    for i, table in enumerate(tables):
        book.add(parse_fault({"route": "r", "name": f"f{i}", **table}), 0.0)
    responses = ResponseSide()
    return RequestSide(lambda m, t, k: book.mcp_fault(0.0, m, t, "c", k), responses), responses, book


def fed(side: RequestSide | ResponseSide, data: bytes, cuts: list[int]) -> list[Any]:
    """``data`` fed in pieces cut at ``cuts``, consecutive Sends joined."""
    out: list[Any] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        for action in side.feed(data[a:b]):
            if isinstance(action, Send) and out and isinstance(out[-1], Send):
                out[-1] = Send(out[-1].data + action.data)
            else:
                out.append(action)
    return out


JSON_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def sse_chunked(*events: bytes) -> bytes:
    return SSE_HEAD + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            break
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_an_error_answers_in_the_servers_place_whatever_the_chunking(cuts: list[int]) -> None:
    requests, _, book = sides({"kind": "error", "method": "tools/call", "target": "search*", "code": -32000})
    stream = call(1, "fetch") + call(2, "search_docs") + call(3, "fetch")
    out = fed(requests, stream, cuts)
    assert [type(a) for a in out] == [Send, Reply, Send]
    assert out[0].data == call(1, "fetch") and out[2].data == call(3, "fetch")  # forwarded byte for byte
    reply = out[1]
    assert reply.request == call(2, "search_docs")  # never forwarded
    head, _, body = reply.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    assert json.loads(body) == {
        "jsonrpc": "2.0",
        "id": 2,
        "error": {"code": -32000, "message": "injected by mcp-sidecar"},
    }
    assert book.injected == {"error": 1}


def test_http_status_answers_with_retry_after_or_a_lost_session() -> None:
    requests, _, _ = sides({"kind": "http_status", "status": 429, "retry_after": 7})
    (reply,) = requests.feed(call(5, "x"))
    assert reply.data.startswith(b"HTTP/1.1 429 Too Many Requests\r\n") and b"\r\nRetry-After: 7\r\n" in reply.data
    requests, _, _ = sides({"kind": "http_status", "status": 404})
    (reply,) = requests.feed(call(6, "x"))
    assert reply.data.startswith(b"HTTP/1.1 404 Not Found\r\n") and b'"code":-32001' in reply.data


def test_notifications_responses_and_other_requests_pass_untouched() -> None:
    requests, _, book = sides({"kind": "error"})  # every method
    notification = post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    response = post({"jsonrpc": "2.0", "id": 9, "result": {}})
    get = b"GET /mcp HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    assert requests.feed(notification + response + get) == [Send(notification), Send(response), Send(get)]
    assert book.injected == {}


def test_an_upgrade_is_read_as_frames_that_pass_untouched_when_no_fault_takes_them() -> None:
    requests, responses, _ = sides({"kind": "error", "method": "tools/call"})
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    frames = b"\x81\x85anything-after-the-upgrade"
    assert fed(requests, upgrade + frames, [70]) == [Send(upgrade + frames)]
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    assert fed(responses, switching + b"\x81\x02hi", [10]) == [Send(switching + b"\x81\x02hi")]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_delay_and_drop_act_on_the_answer_to_their_request(cuts: list[int]) -> None:
    requests, responses, _ = sides(
        {"kind": "delay", "target": "slow", "delay": "2s"}, {"kind": "drop", "target": "lost"}
    )
    sent = fed(requests, call(1, "slow") + call(2, "lost") + call(3, "fine"), cuts)
    assert sent == [Send(call(1, "slow") + call(2, "lost") + call(3, "fine"))]  # all three reach the server
    answers = JSON_OK + sse_chunked(b"event: message\ndata: {}\n\n") + JSON_OK
    out = fed(responses, answers, cuts)
    assert isinstance(out[0], Wait) and out[0].seconds == 2.0
    assert out[1:] == [Send(JSON_OK + JSON_OK)]  # the second answer never delivered


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 3000), max_size=8))
def test_cut_closes_the_stream_after_its_events_and_strip_takes_the_keepalives_out(cuts: list[int]) -> None:
    events = [b"event: message\ndata: %d\n\n" % i for i in range(4)]
    keepalive = b": ping\n\n"
    requests, responses, _ = sides({"kind": "cut", "target": "long", "events": 2})
    requests.feed(call(1, "long"))
    out = fed(responses, sse_chunked(events[0], keepalive, events[1], events[2]), cuts)
    assert isinstance(out[-1], Close)
    sent = b"".join(a.data for a in out if isinstance(a, Send))
    assert sent.startswith(SSE_HEAD) and dechunk(sent[len(SSE_HEAD) :]) == events[0] + keepalive + events[1]

    requests, responses, _ = sides({"kind": "strip_keepalive"})
    requests.feed(call(1, "long"))
    out = fed(responses, sse_chunked(keepalive, events[0], keepalive, keepalive, events[1]), cuts)
    sent = b"".join(a.data for a in out if isinstance(a, Send))
    assert dechunk(sent[len(SSE_HEAD) :]) == events[0] + events[1] and sent.endswith(b"0\r\n\r\n")


def client_frame(message: dict[str, Any], key: bytes = b"\x01\x02\x03\x04") -> bytes:
    payload = msgspec.json.encode(message)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + key + masked


def server_frame(message: dict[str, Any]) -> bytes:
    payload = msgspec.json.encode(message)
    assert len(payload) < 126
    return bytes((0x81, len(payload))) + payload


UPGRADE = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 1000), max_size=8))
def test_websocket_frames_answered_held_dropped_or_cut_by_id(cuts: list[int]) -> None:
    requests, responses, book = sides(
        {"kind": "error", "target": "bad", "code": -32001},
        {"kind": "delay", "target": "slow", "delay": "1s"},
        {"kind": "drop", "target": "lost"},
    )
    calls = [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": n}}
        for i, n in enumerate(["bad", "slow", "lost", "fine"], start=1)
    ]
    ping = bytes((0x89, 0x80)) + b"\x00\x00\x00\x00"  # a control frame: passed as it is
    stream = UPGRADE + b"".join(client_frame(c) for c in calls) + ping
    out = fed(requests, stream, cuts)
    replies = [a for a in out if isinstance(a, Reply)]
    assert len(replies) == 1 and replies[0].request == client_frame(calls[0])  # never forwarded
    assert replies[0].data == server_frame(
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32001, "message": "injected by mcp-sidecar"}}
    )
    assert (
        b"".join(a.data for a in out if isinstance(a, Send))
        == UPGRADE + b"".join(client_frame(c) for c in calls[1:]) + ping
    )
    answers = [server_frame({"jsonrpc": "2.0", "id": i, "result": {}}) for i in (4, 3, 2)]  # in any order
    out = fed(responses, SWITCHING + b"".join(answers), cuts)
    waits = [a for a in out if isinstance(a, Wait)]
    assert len(waits) == 1 and waits[0].seconds == 1.0
    sent = [a.data for a in out if isinstance(a, Send)]
    assert b"".join(sent) == SWITCHING + answers[0] + answers[2]  # id 3 dropped, id 2 after its wait
    assert book.injected == {"error": 1, "delay": 1, "drop": 1}


# --- with the official SDK on both ends -----------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """The SDK's server in a subprocess, logging every tool call that reaches it."""
    log = tmp_path_factory.mktemp("sdk") / "reached.log"
    with sdk_server_process(SDK_SERVER_LOG=str(log)) as port:
        yield port, log


async def drive(url: str, mode: str, timeout_s: float, *calls: str) -> dict[str, Any]:
    done = await trio.run_process(
        [sys.executable, "-m", "tests.mcp_sdk.faultdriver", url, mode, str(timeout_s), *calls],
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


def reached(log: Path) -> list[str]:
    """The calls that reached the server since the last look."""
    lines = log.read_text().splitlines() if log.exists() else []
    log.write_text("")
    return lines


async def sdk_proxy(nursery, port: int, *faults: dict[str, Any]):
    proxy = await start_proxy(nursery, fault_doc(f"127.0.0.1:{port}", *faults, name="mcp"), admin=True)
    return proxy, f"http://127.0.0.1:{proxy.port()}/mcp"


@pytest.mark.parametrize(("mode", "version"), [("auto", MODERN), ("legacy", HANDSHAKE)])
async def test_the_sdk_client_sees_the_injected_error_and_the_server_never_the_call(
    nursery, sdk_server, mode: str, version: str
) -> None:
    port, log = sdk_server
    with trio.fail_after(60):
        reached(log)
        proxy, url = await sdk_proxy(
            nursery,
            port,
            {"kind": "error", "method": "tools/call", "target": "echo", "code": -32099, "message": "boom", "count": 1},
        )
        done = await drive(url, mode, 5, "echo=first", "echo=second")
        assert done["version"] == version
        assert done["calls"] == [
            {"error": -32099, "message": "boom"},
            {"ok": "second", "is_error": False},
        ]
        assert reached(log) == ["echo second"]  # the first never reached the server
        mcp = json.loads((await request("127.0.0.1", proxy.admin_port, "/api/mcp")).body)
        assert mcp["routes"][0]["methods"]["tools/call"]["errors"] == {"-32099": 1}  # observed as answered


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_times_out_on_a_dropped_answer_the_server_gave(nursery, sdk_server, mode: str) -> None:
    port, log = sdk_server
    with trio.fail_after(60):
        reached(log)
        _, url = await sdk_proxy(nursery, port, {"kind": "drop", "method": "tools/call", "target": "echo", "count": 1})
        done = await drive(url, mode, 1.5, "echo=lost", "echo=after")
        first, second = done["calls"]
        assert first.get("error") == 408 or "timed out" in json.dumps(first).lower(), first  # the client's timeout
        assert second == {"ok": "after", "is_error": False}
        assert reached(log) == ["echo lost", "echo after"]  # both reached the server: the answer was lost


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_delay_holds_the_answer_and_http_status_is_what_the_client_gets(nursery, sdk_server, mode: str) -> None:
    port, log = sdk_server
    with trio.fail_after(60):
        reached(log)
        _, url = await sdk_proxy(
            nursery,
            port,
            {"kind": "delay", "method": "tools/call", "target": "slow", "delay": "600ms"},
            {"kind": "http_status", "method": "tools/call", "target": "echo", "status": 503, "retry_after": 3},
        )
        started = time.perf_counter()
        done = await drive(url, mode, 10, "slow=0")
        assert done["calls"] == [{"ok": "done", "is_error": False}]
        assert time.perf_counter() - started >= 0.6
        done = await drive(url, mode, 10, "echo=refused")
        (refused,) = done["calls"]
        assert "503" in json.dumps(refused) or refused.get("error") is not None, refused
        assert reached(log) == ["slow 0"]  # the 503 was ours: echo never reached the server


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_cut_ends_the_answer_stream_mid_way(nursery, sdk_server, mode: str) -> None:
    port, log = sdk_server
    with trio.fail_after(60):
        reached(log)
        _, url = await sdk_proxy(
            nursery, port, {"kind": "cut", "method": "tools/call", "target": "echo", "events": 0, "count": 1}
        )
        cut = await drive(url, mode, 3, "echo=cut")
        # The client never gets the answer: the call fails, or (2026-07-28) the SDK's client
        # itself gives up, the transport's error escaping its task group.
        assert not any("ok" in c for c in cut["calls"]) and (cut["calls"] or cut.get("failed")), cut
        assert await drive(url, mode, 3, "echo=whole") == {
            "calls": [{"ok": "whole", "is_error": False}],
            "version": cut["version"],
        }
        assert reached(log) == ["echo cut", "echo whole"]


async def test_the_legacy_sse_transport_gets_its_faults_on_the_sessions_stream(nursery, sdk_server) -> None:
    """2024-11-05: the POST is one connection, its answer an event on the
    session's stream (another): the injected error arrives there, a delayed,
    dropped or cut answer is the stream's event for that id."""
    port, log = sdk_server
    with trio.fail_after(90):
        reached(log)
        proxy, url = await sdk_proxy(
            nursery,
            port,
            {"kind": "error", "method": "tools/call", "target": "echo", "code": -32077, "count": 1},
            {"kind": "delay", "method": "tools/call", "target": "slow", "delay": "500ms"},
        )
        sse = url.replace("/mcp", "/sse")
        started = time.perf_counter()
        done = await drive(sse, "sse", 5, "echo=first", "echo=second", "slow=0")
        assert done["version"] == HANDSHAKE
        assert done["calls"] == [
            {"error": -32077, "message": "injected by mcp-sidecar"},
            {"ok": "second", "is_error": False},
            {"ok": "done", "is_error": False},
        ]
        assert time.perf_counter() - started >= 0.5
        assert reached(log) == ["echo second", "slow 0"]  # the first never reached the server
        assert proxy.route().faults.injected == {"error": 1, "delay": 1}
        body = json.dumps({"route": "mcp", "kind": "drop", "method": "tools/call", "target": "echo", "count": 1})
        assert proxy.route().faults is not None
        from mcp_sidecar.config.faults import parse_fault

        proxy.route().faults.add(parse_fault(json.loads(body)), trio.current_time())
        done = await drive(sse, "sse", 1.5, "echo=lost", "echo=after")
        lost, after = done["calls"]
        assert "ok" not in lost and after == {"ok": "after", "is_error": False}, done
        assert reached(log) == ["echo lost", "echo after"]  # it ran; its answer was lost


async def test_websocket_mcp_faults_as_a_client_sees_them(nursery) -> None:
    import trio_websocket

    from mcp_sidecar.demo.servers import serve_ws

    with trio.fail_after(30):
        upstream = await nursery.start(serve_ws, "127.0.0.1", 0)
        faults = (
            {"kind": "error", "method": "tools/call", "target": "echo", "code": -32050, "count": 1},
            {"kind": "delay", "method": "tools/list", "delay": "400ms"},
            {"kind": "drop", "method": "prompts/list"},
        )
        proxy = await start_proxy(nursery, fault_doc(f"127.0.0.1:{upstream}", *faults, name="ws"), admin=True)
        url = f"ws://127.0.0.1:{proxy.port()}/"
        async with trio_websocket.open_websocket_url(url, subprotocols=["mcp"]) as ws:

            async def ask(request_id: int, method: str, **params: Any) -> dict[str, Any]:
                await ws.send_message(
                    json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
                )
                return json.loads(await ws.get_message())

            assert (await ask(1, "initialize"))["id"] == 1
            assert await ask(2, "tools/call", name="echo", arguments={"text": "x"}) == {
                "jsonrpc": "2.0",
                "id": 2,
                "error": {"code": -32050, "message": "injected by mcp-sidecar"},
            }
            echoed = await ask(3, "tools/call", name="echo", arguments={"text": "x"})  # count 1: forwarded now
            assert echoed["id"] == 3 and "result" in echoed
            started = time.perf_counter()
            assert (await ask(4, "tools/list"))["id"] == 4
            assert time.perf_counter() - started >= 0.4
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "prompts/list"}))
            with trio.move_on_after(0.5) as waited:
                await ws.get_message()
            assert waited.cancelled_caught  # the answer never came
            assert (await ask(6, "ping"))["id"] == 6  # and the connection goes on
        assert proxy.route("ws").faults.injected == {"error": 1, "delay": 1, "drop": 1}


async def test_faults_are_refused_while_disabled(nursery) -> None:
    with trio.fail_after(30):
        token = "FaultsOffAdminT0ken0123456789"
        proxy = await start_proxy(
            nursery,
            {"admin": {"token": token}, "route": [{"name": "r", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:9"}]},
            admin=True,
        )
        headers = [("authorization", f"Bearer {token}")]
        body = json.dumps({"route": "r", "kind": "down"}).encode()
        refused = await request("127.0.0.1", proxy.admin_port, "/api/faults", method="POST", body=body, headers=headers)
        assert refused.status == 409
        assert json.loads(refused.body) == {
            "error": "fault injection is off: set [faults] enabled = true in the configuration and reload"
        }
        listed = json.loads((await request("127.0.0.1", proxy.admin_port, "/api/faults")).body)
        assert listed == {"enabled": False, "faults": [], "injected": {}}
        assert proxy.route("r").faults is None  # no book: no connection can take a fault's path


async def test_the_tap_shows_an_injected_fault_marked_and_its_answer(nursery) -> None:
    from mcp_sidecar.cli.tap import describe
    from mcp_sidecar.demo.servers import serve_http

    from ..admin.test_views import TOKEN, _lines, _tap

    with trio.fail_after(30):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        fault = {"kind": "error", "name": "flaky", "target": "search", "code": -32000}
        doc = {**fault_doc(f"127.0.0.1:{upstream}", fault, name="mcp"), "admin": {"token": TOKEN}}
        proxy = await start_proxy(nursery, doc, admin=True)
        stream, exchange, head = await _tap(proxy.admin_port, "?route=mcp")
        assert head.status_code == 200
        reply = await request(
            "127.0.0.1",
            proxy.port(),
            "/mcp",
            method="POST",
            body=call(7, "search")[call(7, "search").index(b"\r\n\r\n") + 4 :],
            headers=[("content-type", "application/json"), ("accept", "application/json, text/event-stream")],
        )
        assert reply.status == 200 and json.loads(reply.body)["error"]["code"] == -32000
        _, fault, *observed = await _lines(exchange, 4)  # (the first line: the subscription)
        assert {k: fault[k] for k in ("kind", "fault", "fault_kind", "method", "target", "direction")} == {
            "kind": "fault",
            "fault": "flaky",
            "fault_kind": "error",
            "method": "tools/call",
            "target": "search",
            "direction": "upstream_to_client",
        }
        assert describe(fault).endswith(" mcp <- fault INJECTED flaky (error -32000 search) on tools/call search")
        assert [r["direction"] for r in observed] == ["client_to_upstream", "upstream_to_client"]
        assert json.loads(observed[1]["error"])["code"] == -32000  # its answer, as the client got it
        await stream.aclose()


def test_legacy_streams_are_known_by_session_and_act_on_answers_by_id() -> None:
    from mcp_sidecar.faults.legacy import LegacyStreams

    book = FaultBook("r")
    for i, table in enumerate(
        [
            {"kind": "error", "target": "bad", "code": -32009},
            {"kind": "cut", "target": "long"},
            {"kind": "http_status", "target": "gone", "status": 404},
        ]
    ):
        book.add(parse_fault({"route": "r", "name": f"f{i}", **table}), 0.0)
    legacy = LegacyStreams()

    def pair() -> tuple[RequestSide, ResponseSide]:
        responses = ResponseSide(legacy)
        return RequestSide(lambda m, t, k: book.mcp_fault(0.0, m, t, "c", k), responses, None, legacy), responses

    stream_req, stream_resp = pair()
    get = b"GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    assert stream_req.feed(get) == [Send(get)]
    endpoint = b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n"
    out = stream_resp.feed(SSE_HEAD + b"%x\r\n%s\r\n" % (len(endpoint), endpoint))
    assert b"".join(a.data for a in out if isinstance(a, Send)) == SSE_HEAD + b"%x\r\n%s\r\n" % (
        len(endpoint),
        endpoint,
    )
    stream = legacy.get("abc")
    assert stream is not None and stream is stream_resp.stream

    post_req, _ = pair()

    def legacy_call(request_id: int, tool: str) -> bytes:
        body = msgspec.json.encode(
            {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool}}
        )
        return b"POST /messages/?session_id=abc HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    (reply,) = post_req.feed(legacy_call(1, "bad"))
    assert isinstance(reply, Reply) and reply.data.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert reply.inject is not None and reply.inject[0] is stream
    assert reply.inject[1] == (
        b'event: message\r\ndata: {"jsonrpc":"2.0","id":1,"error":{"code":-32009,'
        b'"message":"injected by mcp-sidecar"}}\r\n\r\n'
    )
    (gone,) = post_req.feed(legacy_call(2, "gone"))
    assert isinstance(gone, Reply) and gone.data.startswith(b"HTTP/1.1 404 Not Found\r\n") and gone.inject is None
    assert post_req.feed(legacy_call(3, "long")) == [Send(legacy_call(3, "long"))]  # forwarded; its answer cut
    answer = b'event: message\r\ndata: {"jsonrpc":"2.0","id":3,"result":{}}\r\n\r\n'
    out = stream_resp.feed(b"%x\r\n%s\r\n" % (len(answer), answer))
    assert [type(a) for a in out] == [Close]
    stream_resp.close()
    assert legacy.get("abc") is None  # a stream that ended is forgotten
    # A session whose stream is not known here (another worker): only http_status applies.
    assert post_req.feed(legacy_call(4, "bad")) == [Send(legacy_call(4, "bad"))]


async def test_a_gated_route_gets_its_faults_after_the_gate(nursery) -> None:
    """A gated route's connections take the fault pump (the gate first): no
    token, the gate's 401; with it, the injected error."""
    from mcp_sidecar.demo.servers import serve_http

    with trio.fail_after(30):
        upstream = await nursery.start(serve_http, "127.0.0.1", 0)
        token = "GatedFaultT0ken0123456789abc"
        fault = {"kind": "error", "target": "search", "code": -32011}
        proxy = await start_proxy(
            nursery, fault_doc(f"127.0.0.1:{upstream}", fault, name="mcp", gate="token", gate_token=token)
        )
        body = call(9, "search")[call(9, "search").index(b"\r\n\r\n") + 4 :]
        headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
        refused = await request("127.0.0.1", proxy.port(), "/mcp", method="POST", body=body, headers=headers)
        assert refused.status == 401
        headers.append(("authorization", f"Bearer {token}"))
        reply = await request("127.0.0.1", proxy.port(), "/mcp", method="POST", body=body, headers=headers)
        assert reply.status == 200 and json.loads(reply.body)["error"]["code"] == -32011
        assert proxy.route().faults.injected == {"error": 1}
