"""A recording of the HTTP eras as HAR 1.2 (sans-io): browser dev tools and
HTTP debuggers open it.

Rules this module keeps:

* One entry per client message sent over HTTP (streamable HTTP of both
  eras, the 2024-11-05 transport's POSTs): its request is the POST carrying
  it, its response the answer with the same id in the same route and
  session (for a notification, or a request never answered: no content,
  status 0 for "no response", as browsers write an aborted request).
* What HAR needs that a recording does not keep is said, not invented: the
  URL is the route's first listen address and the path label the sidecar
  saw (``other`` for paths it does not know), header sizes are -1 (unknown),
  timings are ``wait`` = the latency the sidecar measured, ``send`` and
  ``receive`` 0.  Bodies are the recording's: redacted, cut when marked.
* WebSocket conversations are left out (HAR 1.2 has no frames); the count
  left out is in the log's ``comment``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .recording import AnswerIndex, Recording

HTTP_ERAS = frozenset({"streamable-http-2025", "streamable-http-2026", "2024-11-05-sse"})
_STATUS_TEXT = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{int(unix * 1000) % 1000:03d}Z"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _body(message: dict[str, Any], request: bool) -> str:
    """The JSON-RPC message as the recording has it (a cut body stays cut)."""
    parts = ['"jsonrpc":"2.0"']
    if message.get("id") is not None:
        parts.append(f'"id":{json.dumps(message["id"])}')
    if request and message.get("method"):
        parts.append(f'"method":{json.dumps(message["method"])}')
    for name in ("params", "result", "error"):
        if name in message:
            parts.append(f'"{name}":{_text(message[name])}')
    return "{" + ",".join(parts) + "}"


def _headers(message: dict[str, Any]) -> list[dict[str, str]]:
    http = message.get("http") or {}
    return [{"name": name, "value": value} for name, value in (http.get("headers") or {}).items()]


def to_har(recording: Recording, creator_version: str) -> dict[str, Any]:
    """The HAR 1.2 document of a recording's HTTP messages."""
    routes = recording.head.get("routes") or {}
    answers = AnswerIndex(recording.messages)
    entries = []
    skipped = 0
    for message in recording.messages:
        if message["direction"] != "client_to_upstream" or message["kind"] not in ("request", "notification"):
            continue
        if message.get("era") not in HTTP_ERAS:
            skipped += 1
            continue
        http = message.get("http") or {}
        listen = (routes.get(message["route"]) or {}).get("listen") or ["127.0.0.1"]
        path = http.get("path") or "/"
        url = f"http://{listen[0]}{path if path.startswith('/') else '/' + path}"
        body = _body(message, True)
        answer = answers.take(message) if message["kind"] == "request" else None
        status = (answer.get("http") or {}).get("status") if answer is not None else None
        if answer is not None and message.get("era") == "2024-11-05-sse":
            status = 200  # (the answer came on the event stream; the POST itself was accepted)
        latency = answer.get("latency_ms") if answer is not None else None
        content = {"size": 0, "mimeType": "application/json"}
        if answer is not None:
            text = _body(answer, False)
            content = {"size": len(text.encode()), "mimeType": "application/json", "text": text}
        entries.append(
            {
                "startedDateTime": _iso(message["wall"]),
                "time": float(latency or 0),
                "request": {
                    "method": http.get("method") or "POST",
                    "url": url,
                    "httpVersion": "HTTP/1.1",
                    "cookies": [],
                    "headers": [{"name": "content-type", "value": "application/json"}, *_headers(message)],
                    "queryString": [],
                    "postData": {"mimeType": "application/json", "text": body},
                    "headersSize": -1,
                    "bodySize": len(body.encode()),
                },
                "response": {
                    "status": int(status or (202 if message["kind"] == "notification" else 0)),
                    "statusText": _STATUS_TEXT.get(int(status or 0), ""),
                    "httpVersion": "HTTP/1.1",
                    "cookies": [],
                    "headers": _headers(answer) if answer is not None else [],
                    "content": content,
                    "redirectURL": "",
                    "headersSize": -1,
                    "bodySize": content["size"] if answer is not None else 0,
                },
                "cache": {},
                "timings": {"send": 0, "wait": float(latency or 0), "receive": 0},
                "comment": f"{message.get('method')} ({message.get('era')}, route {message['route']})",
            }
        )
    comment = f"from {recording.path}"
    if skipped:
        comment += f"; {skipped} WebSocket/other message(s) left out (HAR has no frames)"
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "mcp-sidecar", "version": creator_version},
            "entries": entries,
            "comment": comment,
        }
    }
