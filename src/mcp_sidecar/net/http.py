"""A minimal HTTP/1.1 client on h11 and trio, for the demo self-check,
diagnostics and tests (never the forwarding path)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import h11
import trio

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def request(
    host: str,
    port: int,
    target: str = "/",
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    tls: bool = False,
) -> HttpResponse:
    """One request on a fresh connection; the caller bounds the time."""
    if tls:
        stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
            host, port, ssl_context=ssl.create_default_context())
    else:
        stream = await trio.open_tcp_stream(host, port)
    return await request_on(stream, f"{host}:{port}", target, method=method, body=body, headers=headers)


async def request_on(
    stream: trio.abc.Stream,
    authority: str,
    target: str = "/",
    *,
    method: str = "GET",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> HttpResponse:
    """One request on ``stream`` (closed afterwards)."""
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        hdrs = [("host", authority), ("connection", "close"), *(headers or [])]
        if body or method in ("POST", "PUT"):
            hdrs.append(("content-length", str(len(body))))
        out = conn.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)
        response = None
        data = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                data += event.data
                if len(data) > MAX_RESPONSE_BYTES:
                    raise ValueError("response body too large")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        assert response is not None
        return HttpResponse(
            response.status_code,
            {k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers},
            bytes(data),
        )
