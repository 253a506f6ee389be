"""Structured logs: one event per line, JSON when not on a terminal.

Every record has an ``event`` name (``connection.closed``) and flat fields.
Call sites use ``log(logger, level, event, **fields)``; the formatter decides
whether that becomes ``{"ts": ..., "level": ..., "event": ..., ...}`` or a
``key=value`` line for humans.  Logs go to stderr; stdout carries only what
the user asked for (the route table, command output).  Both formatters pass
every string through ``redact.scrub`` so that no secret reaches a log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .redact import scrub

_FIELDS = "sidecar_fields"
RATE_LIMIT_WINDOW_S = 10.0
RATE_LIMIT_LINES = 20


class RateLimiter:
    """Per event name: lines allowed in the current window, and suppressed."""

    __slots__ = ("suppressed_total", "windows")

    def __init__(self) -> None:
        #: event -> [window start, lines written in it, lines suppressed in it, level]
        self.windows: dict[str, list[Any]] = {}
        #: event -> lines suppressed since start (for metrics).
        self.suppressed_total: dict[str, int] = {}

    def allow(self, event: str, level: int, now: float) -> tuple[bool, int]:
        """(write this line?, lines suppressed in the window that just ended)."""
        window = self.windows.get(event)
        if window is None or now - window[0] >= RATE_LIMIT_WINDOW_S:
            ended = window[2] if window is not None else 0
            self.windows[event] = [now, 1, 0, level]
            return True, ended
        if window[1] < RATE_LIMIT_LINES:
            window[1] += 1
            return True, 0
        window[2] += 1
        self.suppressed_total[event] = self.suppressed_total.get(event, 0) + 1
        return False, 0

    def expired(self, now: float) -> list[tuple[str, int, int]]:
        """(event, suppressed, level) of windows that ended with lines dropped."""
        out = []
        for event, window in list(self.windows.items()):
            if now - window[0] >= RATE_LIMIT_WINDOW_S:
                if window[2]:
                    out.append((event, window[2], window[3]))
                del self.windows[event]
        return out


limiter = RateLimiter()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, every string scrubbed of secrets."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(record.getMessage()),
        }
        for key, value in getattr(record, _FIELDS, {}).items():
            payload[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info:
            payload["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(payload, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time LEVEL event key=value ...`` for a terminal, scrubbed of secrets."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = getattr(record, _FIELDS, {})
        tail = " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}" + (f" {tail}" if tail else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or " " in text or '"' in text) else text


def configure(log_format: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Install the handler on the package logger (idempotent)."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("mcp_sidecar")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


LEVELS = ("debug", "info", "warning", "error")


def set_level(level: str) -> None:
    """The package's log level now (``proxyctl log-level``); ``level`` one of ``LEVELS``."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    logging.getLogger("mcp_sidecar").setLevel(level.upper())


def log(
    logger: logging.Logger,
    level: int,
    event: str,
    *,
    unlimited: bool = False,
    limit_key: str | None = None,
    **fields: Any,
) -> None:
    """Write one event; ``limit_key`` (default: the event name) is what the
    rate limit counts by, so that rare variants of a frequent event (a
    connection that ended badly among clean ones) keep their own allowance."""
    if not logger.isEnabledFor(level):
        return
    if level > logging.DEBUG and not unlimited:
        key = limit_key or event
        allowed, ended = limiter.allow(key, level, time.monotonic())
        if ended:
            _summary(logger, key, ended, level)
        if not allowed:
            return
    logger.log(level, event, extra={_FIELDS: fields})


def _summary(logger: logging.Logger, event: str, suppressed: int, level: int) -> None:
    logger.log(
        max(level, logging.WARNING),
        "log.suppressed",
        extra={_FIELDS: {"suppressed_event": event, "suppressed": suppressed, "window_s": RATE_LIMIT_WINDOW_S}},
    )


def flush_suppressed() -> None:
    """Write the summaries of windows that ended with lines dropped."""
    logger = logging.getLogger(__name__)
    for event, suppressed, level in limiter.expired(time.monotonic()):
        _summary(logger, event, suppressed, level)
