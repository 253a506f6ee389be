"""A recording of MCP conversations: JSON Lines, one decoded message a line (sans-io).

Rules this module keeps:

* A recording file is self-contained: its first line is a header
  (``type: header``: the schema and its version, the sidecar's version, when it
  started, what was asked for and the recorded routes' settings); then one
  ``type: message`` line per MCP message, in the order the sidecar saw them,
  and a ``type: dropped`` line wherever messages were lost (the recorder read
  too slowly: the buffer is bounded, forwarding never waits).
* A message line is a tap record (observe/tap.py) in the recording's shape:
  the time as an offset from the header's (monotonic, seconds) and the wall
  clock, ``params``/``result``/``error`` as JSON values -- redacted exactly as
  the tap redacts -- or, when cut at ``max_body_bytes`` (``truncated``), the
  cut JSON text as a string.
* The schema (docs/recording.schema.json) is versioned: a reader refuses a
  newer version, a foreign file and a broken line, naming the file and the
  line (``RecordingError``); it never guesses.
* No I/O here: lines in, lines out.  The writer (forward/recorder.py) and
  the readers (``proxyctl replay``, ``--to-har``) do the files.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import EXIT_USAGE, LocalError
from .jsonrpc import UNSET, Envelope
from .mcpstats import client_ref, session_ref
from .requestlog import outcome_kind, request_id_text
from .tap import BODIES, DIRECTIONS, era, http_facts, message_kind, shown_body, shown_names

SCHEMA = "mcp-sidecar-recording"
SCHEMA_VERSION = 1
#: Bytes of each message's params/result/error a recording keeps by default.
DEFAULT_BODY_BYTES = 64 * 1024
#: What a recording's buffers hold at most: bytes of encoded lines (forward/tap.py's
#: LineSubscriber).  A tap client asking for larger bodies (``proxyctl record``
#: through the admin tap) gets a queue of this over its body bound (``queue_for``).
BUFFER_BYTES = 16 * 1024 * 1024
MIN_QUEUE = 64
MAX_QUEUE = 4096

#: The fields a message line carries from the tap record, in this order.
_FIELDS = (
    "route",
    "direction",
    "kind",
    "method",
    "label",
    "id",
    "era",
    "transport",
    "protocol_version",
    "session",
    "client",
    "http",
    "target",
    "size",
    "latency_ms",
    "outcome",
)
#: A message's line on its way to a recording: (route, monotonic time, method
#: as shown, label when counted otherwise, target, ``line_body``'s bytes); the
#: names are what filters test (``TapFilter.wants_message``).
Line = tuple[str, float, str | None, str | None, str, bytes]
_encode = msgspec.json.Encoder().encode


def queue_for(body_bytes: int) -> int:
    """How many records a tap client's queue holds at this body bound."""
    return max(MIN_QUEUE, min(MAX_QUEUE, BUFFER_BYTES // max(1, body_bytes)))


class RecordingError(LocalError):
    """A recording that cannot be read: names the file and the line (exit 2: bad input)."""

    exit_code = EXIT_USAGE


def header(
    *,
    sidecar: str,
    wanted: dict[str, Any],
    routes: dict[str, dict[str, Any]],
    max_body_bytes: int,
    started_unix: float,
    started_mono: float,
) -> dict[str, Any]:
    """The first line of a recording file."""
    return {
        "type": "header",
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "sidecar": sidecar,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started_unix))
        + f".{int(started_unix * 1e6) % 1000000:06d}Z",
        "started_unix": round(started_unix, 6),
        "started_mono": round(started_mono, 6),
        "filter": wanted,
        "max_body_bytes": max_body_bytes,
        "routes": routes,
    }


def header_line(head: dict[str, Any]) -> bytes:
    return _encode(head) + b"\n"


def message_line(record: dict[str, Any], seq: int, started_mono: float) -> bytes:
    """A tap record as a recording's message line (no parse: a body that
    was not cut is JSON already, embedded as it is)."""
    return numbered_line(message_body(record), seq, record.get("mono", started_mono) - started_mono)


def one_line(text: bytes) -> bytes:
    """JSON text on one line: a line break in JSON text can only be whitespace
    between its tokens (inside a string it is escaped), so each becomes a
    space and the value is the same.  A peer's pretty-printed body would
    otherwise break the recording's lines (JSON Lines)."""
    return text.translate(_LINE_BREAKS_TO_SPACES)


_LINE_BREAKS_TO_SPACES = bytes.maketrans(b"\r\n", b"  ")


def message_body(record: dict[str, Any]) -> bytes:
    """A message line without its place in the file (``type``, ``seq``, ``t``):
    what a supervised worker encodes and relays (``numbered_line`` completes it)."""
    line: dict[str, Any] = {"wall": record["t"]}
    for name in _FIELDS:
        if name in record:
            line[name] = record[name]
    truncated = bool(record.get("truncated"))
    for name in BODIES:
        value = record.get(name)
        if value is not None:
            line[name] = value if truncated else msgspec.Raw(one_line(value.encode()))
    line["truncated"] = truncated
    return _encode(line)


class _MessageLine(msgspec.Struct):
    """A message line without its place in the file, in ``message_body``'s
    member order: one encode in C instead of one per member (about 25 % of a
    line's cost); a member that is ``UNSET`` is left out, as the record leaves it."""

    wall: float
    route: str
    direction: str
    kind: str
    method: Any
    label: Any
    id: Any
    era: str
    transport: str
    protocol_version: Any
    session: Any
    client: Any
    http: Any
    target: Any
    size: int
    latency_ms: Any
    outcome: Any
    params: Any
    result: Any
    error: Any
    truncated: bool


def line_body(
    route: str,
    origin: str,
    message: Envelope,
    shown: Mapping[str, Any],
    *,
    max_bytes: int,
    names: tuple[str | None, str | None] | None = None,
    http_session: Any = UNSET,
) -> bytes:
    """``message_body(tap_record(route, origin, message, **shown, max_bytes=...))``,
    built straight from the message: what a recording costs per message (no
    record dict; tested byte for byte against that composition).  ``shown``:
    ``tap_record``'s keyword arguments, each given.  ``names``:
    ``shown_names``'s answer, when the caller has it already;
    ``http_session``: the exchange's session when the message was seen, for a
    line built later (an ``initialize`` answer names one: its request's line
    must not show it)."""
    answered = shown["answered"]
    shown_method, label = names if names is not None else shown_names(message, shown["method"], answered)
    protocol_version, target = shown["protocol_version"], shown["target"]
    latency: Any = UNSET
    outcome: Any = UNSET
    if answered is not None:  # a response: the labels its request was counted under
        protocol_version, target = answered.protocol_version, answered.target
        latency = None if answered.duration_s is None else round(answered.duration_s * 1000, 3)
        outcome = outcome_kind(answered.status)
    exchange, transport, session, client = shown["exchange"], shown["transport"], shown["session"], shown["client"]
    # (a notification has no version of its own: the HTTP request that carried it says it)
    version = protocol_version if protocol_version is not None or exchange is None else exchange.protocol_version
    bodies: list[Any] = [UNSET, UNSET, UNSET]
    truncated = False
    for index, value in enumerate((message.params, message.result, message.error)):
        if value is not UNSET:
            raw = shown_body(value)
            truncated = truncated or len(raw) > max_bytes
            bodies[index] = raw
    for index, raw in enumerate(bodies):
        if raw is not UNSET:  # (cut: every body as the text shown, cut at the bound; else JSON as it is)
            bodies[index] = (
                raw[:max_bytes].decode("utf-8", "ignore")
                if truncated
                else msgspec.Raw(one_line(raw if raw.isascii() else raw.decode("utf-8", "ignore").encode()))
            )
    return _encode(
        _MessageLine(
            shown["at_unix"],
            route,
            DIRECTIONS[origin],
            message_kind(message),
            shown_method,
            UNSET if label is None else label,
            request_id_text(message.id) if message.id is not UNSET else None,
            era(transport, version),
            transport,
            UNSET if protocol_version is None else protocol_version,
            None if session is None else session_ref(session),
            client_ref(client) if client else UNSET,
            UNSET
            if exchange is None
            else http_facts(exchange, origin, exchange.session if http_session is UNSET else http_session),
            target or UNSET,
            shown["size"],
            latency,
            outcome,
            bodies[0],
            bodies[1],
            bodies[2],
            truncated,
        )
    )


def numbered_line(body: bytes, seq: int, t: float) -> bytes:
    """``message_body``'s bytes as the ``seq``-th line, ``t`` seconds into the
    recording (to the microsecond: one ``%`` in C, half the cost of rounding
    and encoding the float apart)."""
    return b'{"type":"message","seq":%d,"t":%.6f,%b\n' % (seq, t, body[1:])


def dropped_line(count: int, total: int, t: float) -> bytes:
    return _encode({"type": "dropped", "count": count, "total": total, "t": round(t, 6)}) + b"\n"


@dataclass
class Recording:
    """A recording read back: its header and its lines (messages and drops)."""

    path: str
    head: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0


def read_recording(path: str, lines: Iterable[bytes]) -> Recording:
    """Parse a recording; ``RecordingError`` names the file and the line
    of anything that is not one (foreign, newer, broken, cut short)."""
    recording: Recording | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            line = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            if recording is None:
                raise RecordingError(f"{path}:{number}: not an mcp-sidecar recording (not JSON Lines)") from None
            cut = "" if raw.endswith(b"\n") else " (the file is cut short)"
            raise RecordingError(f"{path}:{number}: not a JSON line{cut}") from None
        if not isinstance(line, dict):
            raise RecordingError(f"{path}:{number}: not a JSON object")
        kind = line.get("type")
        if recording is None:
            if kind != "header" or line.get("schema") != SCHEMA:
                raise RecordingError(f"{path}:{number}: not an mcp-sidecar recording (no header line)")
            version = line.get("version")
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise RecordingError(
                    f"{path}:{number}: recording schema version {version!r} is newer than this proxyctl reads"
                    f" ({SCHEMA_VERSION})"
                )
            recording = Recording(path, line)
        elif kind == "message":
            for name in ("seq", "t", "route", "direction", "kind"):
                if name not in line:
                    raise RecordingError(f"{path}:{number}: message line without {name!r}")
            recording.messages.append(line)
        elif kind == "dropped":
            recording.dropped += int(line.get("count") or 0)
        elif kind == "header":
            continue  # (files joined with cat: the later header says the same)
        else:
            raise RecordingError(f"{path}:{number}: unknown line type {kind!r}")
    if recording is None:
        raise RecordingError(f"{path}: empty: not an mcp-sidecar recording")
    return recording


class AnswerIndex:
    """A recording's answers, for the requests that asked them: a request
    takes the first answer recorded after it with its id, in its session
    (its connection, for a WebSocket), else from its client (an
    ``initialize`` has no session until its answer names one; 2026-07-28
    has none).  Ids repeat across sessions and clients, and a client may
    reuse one once answered: each answer is taken once."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.by_session: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self.by_client: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self.taken: set[int] = set()
        for message in messages:
            if message["direction"] == "upstream_to_client" and message["kind"] in ("response", "error"):
                if message.get("session") is not None:
                    self.by_session.setdefault(_session_key(message), []).append(message)
                self.by_client.setdefault(_client_key(message), []).append(message)

    def take(self, request: dict[str, Any]) -> dict[str, Any] | None:
        candidates = []
        if request.get("session") is not None:
            candidates.append(self.by_session.get(_session_key(request)) or [])
        candidates.append(self.by_client.get(_client_key(request)) or [])
        for queue in candidates:
            for answer in queue:
                if answer["seq"] > request["seq"] and answer["seq"] not in self.taken:
                    self.taken.add(answer["seq"])
                    return answer
        return None


def _session_key(message: dict[str, Any]) -> tuple[Any, ...]:
    return (message["route"], message.get("session"), message.get("id"))


def _client_key(message: dict[str, Any]) -> tuple[Any, ...]:
    return (message["route"], message.get("client"), message.get("id"))
