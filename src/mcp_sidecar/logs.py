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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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


def log(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})
