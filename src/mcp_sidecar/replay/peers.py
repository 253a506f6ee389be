"""The server side of a replay, over each transport: the client's messages
sent, the answers read back (trio; the shared h11 client, trio-websocket).

Rules this module keeps:

* A peer speaks one transport to one URL for one conversation: streamable
  HTTP (a POST per message, the answer as JSON or in an event stream; the
  session id the server gives kept and sent back; 2026-07-28: the
  ``Mcp-Method``/``Mcp-Name`` headers and the protocol version in ``_meta``),
  WebSocket (subprotocol ``mcp``, a frame per message), or the 2024-11-05
  HTTP+SSE pair (the stream opened first, messages POSTed to the endpoint
  it names, answers read from the stream).
* A server request met on the way (sampling, roots, elicitation) is
  answered with what the recorded client answered (``ServerRequests``), or
  ``-32601`` when the recording has no such answer: the replay goes on.
* Every wait is bounded by the caller's cancel scope (``--timeout``); a
  server that is not there is ``ServerAbsent`` (exit 2).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import h11
import trio

from ..errors import EXIT_USAGE, RemoteError
from ..net.http import ClientExchange
from ..observe.sse import SseEvent, SseParser

#: What the server says per message, at most (an answer bigger than this is cut off).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
CLIENT_INFO = {"name": "mcp-sidecar-replay", "version": "1"}


class ServerAbsent(RemoteError):
    """Nothing answers at the URL (exit 2: the replay could not start)."""

    exit_code = EXIT_USAGE


@dataclass
class Answer:
    """What the server said to one message: the JSON-RPC answer (None: none),
    the HTTP status where there is one, and a note on anything odd."""

    message: dict[str, Any] | None
    status: int | None = None
    note: str = ""


ReplyFor = Callable[[dict[str, Any]], dict[str, Any]]


def _is_answer(message: Any, wanted: Any) -> bool:
    return isinstance(message, dict) and message.get("id") == wanted and ("result" in message or "error" in message)


def _is_server_request(message: Any) -> bool:
    return isinstance(message, dict) and "method" in message and "id" in message


def _messages(data: Any) -> list[Any]:
    return data if isinstance(data, list) else [data]


async def _connect(url: SplitResult) -> trio.abc.Stream:
    port = url.port or (443 if url.scheme in ("https", "wss") else 80)
    host = url.hostname or "127.0.0.1"
    try:
        if url.scheme in ("https", "wss"):
            return await trio.open_ssl_over_tcp_stream(host, port, ssl_context=ssl.create_default_context())
        return await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise ServerAbsent(f"{url.geturl()}: nothing answers ({exc.strerror or exc})") from None


def _target(url: SplitResult) -> str:
    """The request target of ``url``: its path and query."""
    return (url.path or "/") + (f"?{url.query}" if url.query else "")


class StreamableHttp:
    """Streamable HTTP, either revision (``stateless``: 2026-07-28)."""

    def __init__(self, url: SplitResult, version: str | None, stateless: bool) -> None:
        self.url = url
        self.version = version
        self.stateless = stateless
        self.session: str | None = None

    def _headers(self, message: dict[str, Any]) -> list[tuple[str, str]]:
        headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
        if self.version is not None and message.get("method") != "initialize":
            headers.append(("mcp-protocol-version", self.version))
        if self.session is not None:
            headers.append(("mcp-session-id", self.session))
        method = message.get("method")
        if self.stateless and isinstance(method, str):
            headers.append(("mcp-method", method))
            params = message.get("params") or {}
            name = params.get("uri") if method == "resources/read" else params.get("name")
            if method in ("tools/call", "prompts/get", "resources/read") and isinstance(name, str):
                headers.append(("mcp-name", name))
        return headers

    def prepare(self, message: dict[str, Any]) -> dict[str, Any]:
        """2026-07-28: each request says its version, client and capabilities in ``_meta``."""
        if not self.stateless or "method" not in message:
            return message
        params = dict(message.get("params") or {})
        meta = dict(params.get("_meta") or {})
        meta.setdefault("io.modelcontextprotocol/protocolVersion", self.version or "2026-07-28")
        meta.setdefault("io.modelcontextprotocol/clientInfo", CLIENT_INFO)
        meta.setdefault("io.modelcontextprotocol/clientCapabilities", {})
        params["_meta"] = meta
        return {**message, "params": params}

    async def _post(self, message: dict[str, Any]) -> tuple[trio.abc.Stream, ClientExchange, h11.Response]:
        stream = await _connect(self.url)
        exchange = ClientExchange(stream)
        await exchange.send(
            self.url.netloc, _target(self.url), "POST", json.dumps(message).encode(), self._headers(message)
        )
        return stream, exchange, await exchange.head()

    async def request(self, message: dict[str, Any], reply_for: ReplyFor) -> Answer:
        message = self.prepare(message)
        stream, exchange, head = await self._post(message)
        async with stream:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
            if "mcp-session-id" in headers and not self.stateless:
                self.session = headers["mcp-session-id"]
            if headers.get("content-type", "").startswith("text/event-stream"):
                parser = SseParser()
                async for chunk in exchange.body():
                    for event in parser.feed(chunk):
                        if not isinstance(event, SseEvent) or not event.data.strip():
                            continue
                        for item in _messages(json.loads(event.data)):
                            if _is_answer(item, message["id"]):
                                return self._answered(message, item, head.status_code)
                            if _is_server_request(item):
                                await self.notify(reply_for(item))
                return Answer(None, head.status_code, "the event stream ended without the answer")
            body = bytearray()
            async for chunk in exchange.body():
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    return Answer(None, head.status_code, f"answer larger than {MAX_ANSWER_BYTES} bytes")
        try:
            data = json.loads(body) if body else None
        except ValueError:
            return Answer(None, head.status_code, f"HTTP {head.status_code}, not JSON")
        for item in _messages(data) if data is not None else []:
            if _is_answer(item, message["id"]):
                return self._answered(message, item, head.status_code)
        return Answer(None, head.status_code, f"HTTP {head.status_code} without the answer")

    def _answered(self, message: dict[str, Any], answer: dict[str, Any], status: int) -> Answer:
        if message.get("method") == "initialize" and isinstance(answer.get("result"), dict):
            version = answer["result"].get("protocolVersion")
            if isinstance(version, str):
                self.version = version
        return Answer(answer, status)

    async def notify(self, message: dict[str, Any]) -> None:
        stream, exchange, _ = await self._post(self.prepare(message))
        async with stream:
            async for _ in exchange.body():
                pass

    async def aclose(self) -> None:
        """A 2025 client ends its session (the spec's SHOULD)."""
        if self.session is None:
            return
        with trio.move_on_after(5):
            stream = await _connect(self.url)
            async with stream:
                exchange = ClientExchange(stream)
                await exchange.send(
                    self.url.netloc, _target(self.url), "DELETE", b"", [("mcp-session-id", self.session)]
                )
                await exchange.read()


class WebSocketPeer:
    """One WebSocket connection (subprotocol ``mcp``): a frame per message."""

    def __init__(self, url: SplitResult, nursery: trio.Nursery) -> None:
        self.url = url
        self.nursery = nursery
        self.ws: Any = None

    async def open(self) -> None:
        import trio_websocket

        try:
            self.ws = await trio_websocket.connect_websocket_url(
                self.nursery,
                self.url.geturl(),
                subprotocols=["mcp"],
                ssl_context=ssl.create_default_context() if self.url.scheme == "wss" else None,
            )
        except (OSError, trio_websocket.HandshakeError) as exc:
            raise ServerAbsent(f"{self.url.geturl()}: nothing answers ({exc})") from None

    async def request(self, message: dict[str, Any], reply_for: ReplyFor) -> Answer:
        await self.ws.send_message(json.dumps(message))
        while True:
            for item in _messages(json.loads(await self.ws.get_message())):
                if _is_answer(item, message["id"]):
                    return Answer(item)
                if _is_server_request(item):
                    await self.ws.send_message(json.dumps(reply_for(item)))

    async def notify(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def aclose(self) -> None:
        if self.ws is not None:
            await self.ws.aclose()


class LegacySse:
    """The 2024-11-05 pair: the stream at the URL, messages POSTed to the endpoint it names."""

    def __init__(self, url: SplitResult, nursery: trio.Nursery) -> None:
        self.url = url
        self.nursery = nursery
        self.endpoint: str | None = None
        self.send, self.receive = trio.open_memory_channel[Any](1000)
        self._stream: trio.abc.Stream | None = None

    async def open(self) -> None:
        self._stream = await _connect(self.url)
        exchange = ClientExchange(self._stream)
        await exchange.send(self.url.netloc, _target(self.url), "GET", b"", [("accept", "text/event-stream")])
        head = await exchange.head()
        if head.status_code != 200:
            raise ServerAbsent(f"{self.url.geturl()}: HTTP {head.status_code}, not an event stream")
        ready = trio.Event()
        self.nursery.start_soon(self._read, exchange, ready)
        await ready.wait()
        if self.endpoint is None:
            raise ServerAbsent(f"{self.url.geturl()}: the event stream named no endpoint (not a 2024-11-05 server?)")

    async def _read(self, exchange: ClientExchange, ready: trio.Event) -> None:
        parser = SseParser()
        try:
            async for chunk in exchange.body():
                for event in parser.feed(chunk):
                    if not isinstance(event, SseEvent):
                        continue
                    if event.event == "endpoint":
                        self.endpoint = urljoin(self.url.geturl(), event.data)
                        ready.set()
                    elif event.data.strip():
                        for item in _messages(json.loads(event.data)):
                            self.send.send_nowait(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            ready.set()
            self.send.close()

    async def _post(self, message: dict[str, Any]) -> None:
        assert self.endpoint is not None
        target = urlsplit(self.endpoint)
        stream = await _connect(target)
        async with stream:
            exchange = ClientExchange(stream)
            await exchange.send(
                target.netloc,
                _target(target),
                "POST",
                json.dumps(message).encode(),
                [("content-type", "application/json")],
            )
            await exchange.read()

    async def request(self, message: dict[str, Any], reply_for: ReplyFor) -> Answer:
        await self._post(message)
        async for item in self.receive:
            if _is_answer(item, message["id"]):
                return Answer(item)
            if _is_server_request(item):
                await self._post(reply_for(item))
        return Answer(None, None, "the event stream ended without the answer")

    async def notify(self, message: dict[str, Any]) -> None:
        await self._post(message)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
