"""An upstream known to be down is answered at once: a 503 with Retry-After for
HTTP, a reset otherwise -- not a hang for the connect retry window."""

from __future__ import annotations

import json

import trio

from mcp_sidecar.demo.servers import serve_http
from mcp_sidecar.net.http import request

from ..conftest import connect, free_port, start_proxy, wait_until


def _route(name: str, upstream: str, **settings) -> dict:
    return {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "health_interval": "100ms", **settings}


async def test_a_known_down_upstream_is_answered_at_once(nursery) -> None:
    with trio.fail_after(30):
        http_up = await nursery.start(serve_http, "127.0.0.1", 0)
        dead = f"127.0.0.1:{free_port()}"
        proxy = await start_proxy(
            nursery,
            {
                "route": [
                    _route("up", f"127.0.0.1:{http_up}"),
                    _route("down", dead),
                    _route("down-tcp", dead, protocol="tcp"),
                    _route("down-auto", dead),
                ]
            },
        )
        await wait_until(lambda: all(proxy.route(n).health.state is False for n in ("down", "down-tcp", "down-auto")))
        assert all(proxy.route(n).health.state for n in ("up",))

        t0 = trio.current_time()
        healthy = await request("127.0.0.1", proxy.port("up"), "/health")
        t_healthy = trio.current_time() - t0
        assert healthy.status == 200

        t0 = trio.current_time()
        refused = await request("127.0.0.1", proxy.port("down"), "/mcp")
        t_refused = trio.current_time() - t0
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"  # the next check (fast while down), rounded up
        assert json.loads(refused.body) == {
            "error": "upstream unavailable",
            "route": "down",
            "reason": f"upstream {dead} is down (refused)",
            "retry_after_s": 1,
        }
        # The same order of time as a healthy request, not the 5 s retry window.
        print(f"healthy {t_healthy * 1000:.2f} ms, known down {t_refused * 1000:.2f} ms")
        assert t_refused < max(10 * t_healthy, 0.05)

        for name, first in (("down-tcp", b""), ("down-auto", b"\x16\x03\x01\x00")):  # (raw TCP; TLS)
            t0 = trio.current_time()
            stream = await connect(proxy.port(name))
            try:
                if first:
                    await stream.send_all(first)
                got = await stream.receive_some(100)
            except trio.BrokenResourceError:
                got = b"reset"
            finally:
                await stream.aclose()
            assert got in (b"", b"reset"), name
            assert trio.current_time() - t0 < 0.5, name  # (not the 1 s sniff, nor the retry window)
        rejected = {n: dict(proxy.route(n).rejected) for n in ("down", "down-tcp", "down-auto")}
        assert rejected == {n: {"upstream_down": 1} for n in rejected}
