"""Alerts: consecutive failures -> one message; recovery -> one message.

Rules this module keeps:

* ``AlertState`` is plain state (no I/O, clock passed in): a kind of failure
  (``worker``, ``upstream inspector-ui``) fires once ``threshold`` failures
  happened in a row within ``window_s``; it fires again only after
  ``min_interval_s``; a recovery message is sent once when a fired kind is
  healthy again.
* Every alert is logged at ERROR (recovery at INFO).  With a webhook, the
  payload is ``{"text": ...}`` (Slack) plus ``"content"`` (Discord) and
  structured fields; the POST runs in the background with a timeout, so a
  webhook that is down never blocks or crashes anything (it is logged and
  counted).
"""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import trio

from ..logs import log
from ..net.http import request

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 5.0


@dataclass
class _Kind:
    failures: list[float] = field(default_factory=list)
    fired_at: float | None = None
    firing: bool = False


@dataclass
class AlertState:
    """Per kind of failure: recent failures, whether it fires, when it last did."""

    threshold: int
    window_s: float
    min_interval_s: float
    kinds: dict[str, _Kind] = field(default_factory=dict)

    def failure(self, kind: str, now: float) -> bool:
        """Record one failure; True when an alert should go out now."""
        k = self.kinds.setdefault(kind, _Kind())
        k.failures = [t for t in k.failures if now - t <= self.window_s] + [now]
        if len(k.failures) < self.threshold:
            return False
        if k.fired_at is not None and now - k.fired_at < self.min_interval_s:
            k.firing = True
            return False
        k.fired_at = now
        k.firing = True
        return True

    def recovered(self, kind: str) -> bool:
        """The kind is healthy again; True when a recovery message is due."""
        k = self.kinds.get(kind)
        if k is None:
            return False
        k.failures.clear()
        if k.firing:
            k.firing = False
            return True
        return False

    def firing(self) -> list[str]:
        return sorted(name for name, k in self.kinds.items() if k.firing)


def payload(kind: str, severity: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    text = f"[mcp-sidecar on {socket.gethostname()}] {message}"
    return {
        "text": text,  # Slack
        "content": text,  # Discord
        "username": "mcp-sidecar",
        "kind": kind,
        "severity": severity,
        "host": socket.gethostname(),
        "timestamp": time.time(),
        "details": details,
    }


class Alerter:
    """Logs alerts and POSTs them to the webhook in the background; counts what it sent."""

    def __init__(self, state: AlertState, webhook: str | None, nursery: trio.Nursery) -> None:
        self.state = state
        self.webhook = webhook
        self.nursery = nursery
        self.sent = 0
        self.webhook_failures = 0

    def failure(self, kind: str, message: str, **details: Any) -> None:
        if self.state.failure(kind, time.monotonic()):
            log(logger, logging.ERROR, "alert", kind=kind, message=message, **details)
            self._post(payload(kind, "critical", message, details))

    def recovered(self, kind: str, message: str, **details: Any) -> None:
        if self.state.recovered(kind):
            log(logger, logging.INFO, "alert.recovered", kind=kind, message=message, **details)
            self._post(payload(kind, "resolved", message, details))

    def _post(self, body: dict[str, Any]) -> None:
        if self.webhook:
            self.nursery.start_soon(self._send, body)

    async def _send(self, body: dict[str, Any]) -> None:
        url = urllib.parse.urlsplit(self.webhook or "")
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with trio.fail_after(WEBHOOK_TIMEOUT_S):
                reply = await request(
                    url.hostname or "",
                    port,
                    target,
                    method="POST",
                    body=json.dumps(body).encode(),
                    headers=[("content-type", "application/json")],
                    tls=url.scheme == "https",
                )
            if reply.status >= 300:
                raise OSError(f"webhook answered {reply.status}")
            self.sent += 1
        except Exception as exc:
            self.webhook_failures += 1
            log(logger, logging.WARNING, "alert.webhook_failed", error=str(exc))
