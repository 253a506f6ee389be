"""One OTLP/HTTP export request: POSTed, bounded in time, retried.

Rules this module keeps:

* Each attempt is bounded (``export_timeout``); a connection failure, a
  timeout or 429/502/503/504 (the OTLP spec's retryable answers) is tried
  again, ``MAX_ATTEMPTS`` in all, after ``RETRY_BACKOFF_S`` doubled each
  time; any other answer is final.  A failure is logged once per request,
  with the endpoint's scheme, host, port and path only (no header, no
  user info, no query: they may hold credentials).
* Sent with the project's own h11 client on a fresh connection each time
  (one request a second at most per signal: a kept connection would save
  nothing worth its state); TLS with the system's trust store.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse

import h11
import trio

from ..logs import log
from ..net.http import ClientExchange

logger = logging.getLogger("mcp_sidecar.forward.otelexport")

MAX_ATTEMPTS = 3
#: The first retry's wait (seconds); doubled for each next one.
RETRY_BACKOFF_S = 0.5
RETRYABLE = frozenset({429, 502, 503, 504})


class OtlpPoster:
    """POSTs protobuf bodies to one OTLP/HTTP endpoint."""

    def __init__(self, endpoint: str, headers: tuple[tuple[str, str], ...], timeout_s: float) -> None:
        self.url = url = urllib.parse.urlsplit(endpoint)
        port = f":{url.port}" if url.port else ""
        #: What logs say of the endpoint (no credentials).
        self.shown = f"{url.scheme}://{url.hostname}{port}{url.path}"
        self.headers = [("content-type", "application/x-protobuf"), *headers]
        self.timeout_s = timeout_s

    async def send(self, body: bytes, attempts: int | None = None) -> bool:
        """POST one body, retried (see the module's rules); True once accepted."""
        why = ""
        for attempt in range(attempts or MAX_ATTEMPTS):
            if attempt:
                await trio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            status, why = await self._post(body)
            if status is not None and 200 <= status < 300:
                return True
            if status is not None and status not in RETRYABLE:
                break
        log(logger, logging.WARNING, "otel.export_failed", endpoint=self.shown, error=why)
        return False

    async def _post(self, body: bytes) -> tuple[int | None, str]:
        url = self.url
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with trio.fail_after(self.timeout_s):
                if url.scheme == "https":
                    stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                        host, port, ssl_context=ssl.create_default_context()
                    )
                else:
                    stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    exchange = ClientExchange(stream)
                    await exchange.send(url.netloc, url.path or "/", "POST", body, self.headers)
                    response = await exchange.read()
        except trio.TooSlowError:
            return None, f"no answer within {self.timeout_s:g} s"
        except (OSError, trio.BrokenResourceError, h11.ProtocolError, ValueError) as exc:
            return None, str(exc) or type(exc).__name__
        return response.status, f"HTTP {response.status}"
