"""The proxy's own WebSocket keepalive: pings between frames, pongs consumed,
zombies closed, and every message still delivered intact."""

from __future__ import annotations

import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, Request, TextMessage

from mcp_sidecar.forward.failopen import peer_fault
from mcp_sidecar.observe.websocket import FrameScanner

from ..conftest import connect, route_doc, start_proxy, start_scripted_upstream, tls_connect, wait_until


class Peer:
    """A raw wsproto endpoint on a trio stream that records what it receives
    and answers pings (as every WebSocket implementation must)."""

    def __init__(self, stream: trio.SocketStream, role: ConnectionType) -> None:
        self.stream = stream
        self.ws = WSConnection(role)
        self.messages: list[bytes | str] = []
        self.pings = 0
        self.pongs = 0
        self.answer_pings = True
        self.closed = trio.Event()
        self._partial: list = []
        self._lock = trio.Lock()

    async def send(self, event) -> None:
        async with self._lock:  # the reader answers pings while the test sends
            await self.stream.send_all(self.ws.send(event))

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while data := await self.stream.receive_some(65536):
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, Request):
                        await self.send(AcceptConnection())
                    elif isinstance(event, Ping):
                        self.pings += 1
                        if self.answer_pings:
                            await self.send(event.response())
                    elif isinstance(event, Pong):
                        self.pongs += 1
                    elif isinstance(event, (TextMessage, BytesMessage)):
                        self._partial.append(event.data)
                        if event.message_finished:
                            joined = (
                                "".join(self._partial) if isinstance(event, TextMessage) else b"".join(self._partial)
                            )
                            self.messages.append(joined)
                            self._partial = []
                    elif isinstance(event, CloseConnection):
                        self.closed.set()
                        return
        except trio.BrokenResourceError:
            pass
        self.closed.set()


async def open_pair(nursery, tls_files=None, gate_token: str | None = None, **settings_):
    """A WebSocket client and upstream through the proxy (TLS towards the
    client with ``tls_files``; through the access gate with ``gate_token``)."""
    upstream = await start_scripted_upstream(nursery)
    if tls_files is not None:
        settings_.update(tls_cert=str(tls_files.cert), tls_key=str(tls_files.key))
    if gate_token is not None:
        settings_.update(gate="token", gate_token=gate_token)
    proxy = await start_proxy(nursery, route_doc(f"127.0.0.1:{upstream.port}", **settings_))
    client_stream = await (tls_connect(proxy.port(), tls_files) if tls_files is not None else connect(proxy.port()))
    client = Peer(client_stream, ConnectionType.CLIENT)
    headers = [(b"authorization", f"Bearer {gate_token}".encode())] if gate_token else []
    await client.send(Request(host="x", target="/ws", subprotocols=["mcp"], extra_headers=headers))
    server = Peer(await upstream.accepted.receive(), ConnectionType.SERVER)
    await nursery.start(server.run)
    # the client's handshake answer
    while True:
        client.ws.receive_data(await client_stream.receive_some(65536))
        if any(isinstance(e, AcceptConnection) for e in client.ws.events()):
            break
    await nursery.start(client.run)
    return proxy, client, server


async def test_keepalive_measures_both_legs_and_never_forwards_its_pongs(nursery) -> None:
    with trio.fail_after(20):
        proxy, client, server = await open_pair(nursery, ws_ping_interval="30ms", ws_ping_timeout="5s")
        rt = proxy.route()
        registry = proxy.registry()

        def keepalives(leg: str) -> float:
            return (
                registry.get_sample_value(
                    "mcp_sidecar_websocket_keepalive_rtt_seconds_count", {"route": "r", "leg": leg}
                )
                or 0.0
            )

        for i in range(20):
            await client.send(TextMessage(data=f'{{"jsonrpc":"2.0","id":{i},"method":"ping"}}'))
            await server.send(TextMessage(data=f'{{"jsonrpc":"2.0","id":{i},"result":{{}}}}'))
            await trio.sleep(0.01)
        await wait_until(lambda: keepalives("client") >= 3 and keepalives("upstream") >= 3)
        assert client.pings >= 3 and server.pings >= 3  # both sides were pinged by the proxy ...
        assert client.pongs == 0 and server.pongs == 0  # ... and its pongs never reached the other side
        assert len(client.messages) == len(server.messages) == 20
        assert rt.ended == {}
        conn = next(iter(rt.connections.values()))
        quality = conn.quality.report()  # fed by the keepalive RTTs and the MCP latencies
        assert quality["source"] in ("ws_ping", "mcp") and quality["samples"] >= 6


async def test_a_side_that_stops_answering_is_closed(nursery) -> None:
    with trio.fail_after(20):
        proxy, client, server = await open_pair(nursery, ws_ping_interval="50ms", ws_ping_timeout="300ms")
        server.answer_pings = False  # a zombie upstream: connected, silent
        t0 = trio.current_time()
        await client.closed.wait()
        assert 0.3 <= trio.current_time() - t0 < 3
        await wait_until(lambda: proxy.route().active == 0)
        assert proxy.route().ended == {"ws_timeout": 1}


@settings(max_examples=8, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=70_000), min_size=1, max_size=40))
async def test_messages_intact_while_keepalive_pings_interleave(sizes) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            _proxy, client, server = await open_pair(
                nursery, ws_ping_interval="5ms", ws_ping_timeout="5s", buffer_size=4096
            )
            up = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
            down = [f"m{i}:" + "y" * (n // 7) for i, n in enumerate(sizes)]

            async def send_up() -> None:
                for m in up:
                    await client.send(BytesMessage(data=m))

            async def send_down() -> None:
                for m in down:
                    await server.send(TextMessage(data=m))

            async with trio.open_nursery() as n:
                n.start_soon(send_up)
                n.start_soon(send_down)
            await wait_until(lambda: len(server.messages) == len(up) and len(client.messages) == len(down))
            assert server.messages == up and client.messages == down
            assert client.pongs == 0 and server.pongs == 0
            nursery.cancel_scope.cancel()


async def test_keepalive_stops_when_observation_gives_up(nursery) -> None:
    """Without its frame scanners the proxy knows no frame boundaries: it must
    stop pinging, and a ping left unanswered must not condemn the connection."""
    with trio.fail_after(20):
        proxy, client, server = await open_pair(nursery, ws_ping_interval="20ms", ws_ping_timeout="150ms")
        server.answer_pings = False  # our ping to the upstream stays outstanding ...
        observation = next(iter(proxy.route().connections.values())).observation
        # Every ping written so far has arrived: the upstream's one (never answered, so the
        # only one), and the client's (each answered before the next is sent; none out now).
        await wait_until(
            lambda: (
                server.pings == 1
                and observation.observer.outstanding("upstream") is not None
                and observation.observer.outstanding("client") is None
                and client.pings >= 1
            )
        )
        # ... when observation stops
        peer_fault(observation.observer, observation.route, observation.conn_id, RuntimeError("test: gave up"))
        pings = (client.pings, server.pings)
        await trio.sleep(0.5)  # over three timeouts: nothing may happen in this time
        assert (client.pings, server.pings) == pings
        assert proxy.route().ended == {} and proxy.route().active == 1
        await client.send(TextMessage(data="still here"))
        await server.send(TextMessage(data="and here"))
        await wait_until(lambda: server.messages[-1:] == ["still here"] and client.messages[-1:] == ["and here"])


async def test_bytes_held_for_a_pong_are_released_in_order_when_the_other_side_gives_up() -> None:
    """A pong header withheld (it may answer our keepalive) must reach its
    destination, followed by the chunk in hand, if observation stops meanwhile."""
    from mcp_sidecar.forward.metrics import Metrics
    from mcp_sidecar.forward.observation import Observation, RouteObservation
    from mcp_sidecar.observe.mcp import McpTracker
    from mcp_sidecar.observe.quality import Quality

    with trio.fail_after(5):
        observation = Observation(RouteObservation("r", Metrics(), McpTracker()), 1, Quality(), "http", keepalive=True)
        client, upstream = observation.client_direction, observation.upstream_direction
        assert client.feed(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        assert upstream.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        assert observation.mode == "websocket"
        assert observation.keepalive_frame("client", trio.current_time()) is not None  # ours goes out
        frame = b"\x8a\xa0" + b"\x00\x00\x00\x00" + b"somebody-else's-pong-32-bytes..."  # masked, zero key
        assert len(frame) == 6 + 32
        assert client.rewriting and client.feed(frame[:6]) == b""  # could be ours: held
        assert upstream.feed(b"\x83\x00") is False  # a reserved opcode: the upstream side gives up
        assert observation.mode == "failed"
        assert client.feed(frame[6:] + b"next") == frame + b"next"
        assert client.feed(b"more") is False  # nothing held any more: plain forwarding


async def test_the_keepalive_runs_on_tls_and_gated_routes_too(nursery, tls_files) -> None:
    """One pipeline for every route: the keepalive's pings go through TLS, in
    order with the stream, and through the gate's routes (where the Inspector
    is exposed); a silent side is still found."""
    with trio.fail_after(20):
        proxy, client, server = await open_pair(
            nursery, tls_files=tls_files, gate_token="k" * 24, ws_ping_interval="30ms", ws_ping_timeout="300ms"
        )
        registry = proxy.registry()

        def keepalives(leg: str) -> float:
            return (
                registry.get_sample_value(
                    "mcp_sidecar_websocket_keepalive_rtt_seconds_count", {"route": "r", "leg": leg}
                )
                or 0.0
            )

        for i in range(10):
            await client.send(TextMessage(data=f'{{"jsonrpc":"2.0","id":{i},"method":"ping"}}'))
            await server.send(TextMessage(data="x" * (i * 3000)))
            await trio.sleep(0.01)
        await wait_until(
            lambda: (
                keepalives("client") >= 3
                and keepalives("upstream") >= 3
                and len(client.messages) == len(server.messages) == 10
            )
        )
        assert client.pongs == 0 and server.pongs == 0
        assert client.messages == ["x" * (i * 3000) for i in range(10)]
        server.answer_pings = False  # now a zombie upstream: found through TLS and the gate as well
        await client.closed.wait()
        await wait_until(lambda: proxy.route().ended.get("ws_timeout") == 1)


# --- the keepalive's timing, in virtual time (trio's MockClock) ---------------------------


class _Leg:
    """A leg that takes every frame and remembers when."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []

    def try_write_whole(self, frame: bytes) -> bool:
        self.frames.append((trio.current_time(), frame))
        return True


def _keepalive_harness(interval_s: float = 15.0):
    """A real Observation (with the worker's queue) of an upgraded connection,
    and the fakes _ws_keepalive needs around it."""
    from types import SimpleNamespace

    from mcp_sidecar.forward.metrics import Metrics
    from mcp_sidecar.forward.observation import Observation, RouteObservation
    from mcp_sidecar.forward.observequeue import ObservationQueue
    from mcp_sidecar.forward.pump import Flow
    from mcp_sidecar.observe.mcp import McpTracker
    from mcp_sidecar.observe.quality import Quality

    queue = ObservationQueue()
    route = RouteObservation("r", Metrics(), McpTracker(), queue=queue)
    observation = Observation(route, 1, Quality(), "http", keepalive=True)
    observation.client_direction.feed(
        memoryview(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    )
    observation.upstream_direction.feed(
        memoryview(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    )
    observation.settle()
    conn = SimpleNamespace(observation=observation, u2c=Flow(), c2u=Flow(), end=None, route="r", id=1)
    settings = SimpleNamespace(ws_ping_interval_s=interval_s, ws_ping_timeout_s=10.0)
    rt = SimpleNamespace(config=SimpleNamespace(settings=settings))
    return observation, queue, conn, rt


async def test_pings_go_every_interval_and_a_silent_side_is_a_zombie_after_the_timeout(autojump_clock) -> None:
    from wsproto.connection import Connection as WsConnection
    from wsproto.events import Pong

    from mcp_sidecar.forward.connection import _ws_keepalive

    observation, _queue, conn, rt = _keepalive_harness()
    observer = observation.observer
    client, upstream = _Leg(), _Leg()
    t0 = trio.current_time()
    client_ws = WsConnection(ConnectionType.CLIENT)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ws_keepalive, conn, rt, client, upstream, scope)
            for round_ in range(3):  # the client answers each ping; the upstream never does
                while len(client.frames) <= round_:
                    await trio.sleep(0.5)
                sent_at, frame = client.frames[round_]
                assert sent_at - t0 == 15.0 * (round_ + 1)  # one every interval, exactly
                payload = FrameScanner().feed(frame)[0].payload
                out, _events = observer.rewrite("client", client_ws.send(Pong(payload=payload)), trio.current_time())
                assert out == b""  # (our own pong: never forwarded)
    # The upstream's one ping (at 15 s) was never answered: more than 10 s later (checked at 30 s), a zombie.
    assert [t - t0 for t, _ in upstream.frames] == [15.0]
    assert conn.end == "ws_timeout" and trio.current_time() - t0 == 30.0


async def test_no_ping_goes_into_a_frame_whose_first_half_waits_in_the_observation_queue(autojump_clock) -> None:
    """The pump queues what it forwarded; the keepalive must see it observed
    before it decides it is between frames (the ping once went into the
    middle of a frame: a corrupt stream, 1 run in 10 of the interleaving test)."""
    from mcp_sidecar.forward.connection import _ws_keepalive

    observation, queue, conn, rt = _keepalive_harness(interval_s=1.0)
    whole = b"\x81\x05hello"  # an unmasked text frame, upstream to client
    observation.upstream_direction.feed(memoryview(whole[:3]))  # forwarded: its header and one byte
    assert len(queue) == 1  # (not observed yet)
    client, upstream = _Leg(), _Leg()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_ws_keepalive, conn, rt, client, upstream, scope)
            await trio.sleep(1.5)  # one round of the keepalive
            assert client.frames == []  # the client's stream is mid-frame: no ping
            observation.upstream_direction.feed(memoryview(whole[3:]))  # the rest of the frame
            await trio.sleep(1.0)
            assert len(client.frames) == 1  # now between frames: the ping goes
            scope.cancel()
