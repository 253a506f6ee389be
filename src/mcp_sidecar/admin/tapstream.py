"""The tap's reply: a stream of MCP messages, one JSON line each (``GET /api/tap``).

Rules this module keeps:

* The stream starts with a line saying what is tapped (and the sidecar's
  version, the routes' settings, its clocks: a recording's header); then messages as they
  come, written in batches (``TAP_FLUSH_S``: one send per batch under load,
  not one per message); a heartbeat line when there is nothing to say
  (``TAP_HEARTBEAT_S``: a client that went away is noticed); a line saying
  how many messages were dropped before the next one it sends.
* It ends after ``limit`` messages or ``duration`` seconds, or when the
  client goes; it always unsubscribes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import h11
import msgspec
import trio

from ..forward.tap import TapHub, TapSubscriber
from ..net.http import ServerConnection
from ..observe.tap import TapFilter

#: A tap stream with nothing to say writes a heartbeat line this often
#: (so a client that went away is noticed, and the reader knows it is alive).
TAP_HEARTBEAT_S = 10.0
#: A tap stream writes what gathered over this long after a message, in one send.
TAP_FLUSH_S = 0.02


class TapStream:
    """A reply that is a stream: the tap's subscriber and its bounds."""

    __slots__ = ("duration_s", "limit", "subscriber")

    def __init__(self, subscriber: TapSubscriber, limit: int | None, duration_s: float | None) -> None:
        self.subscriber = subscriber
        self.limit = limit
        self.duration_s = duration_s


def _line(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


_encode_record = msgspec.json.Encoder().encode


def _record_line(record: dict[str, Any]) -> bytes:
    """A tap record (plain values only) as one line, at C speed."""
    return _encode_record(record) + b"\n"


async def stream_tap(http: ServerConnection, tap: TapStream, hub: TapHub, about: dict[str, Any]) -> None:
    """Stream the subscriber's messages as JSON lines until the client
    goes (or the limit or duration is reached); always unsubscribes."""
    subscriber = tap.subscriber
    try:
        await http.send(
            h11.Response(
                status_code=200,
                headers=[
                    ("content-type", "application/x-ndjson"),
                    ("cache-control", "no-store"),
                    ("x-content-type-options", "nosniff"),
                ],
            )
        )
        f = subscriber.filter
        assert isinstance(f, TapFilter)  # (the admin endpoint's subscribers have one filter)
        await http.send(
            h11.Data(
                data=_line(
                    {
                        "tap": {
                            "route": f.route,
                            "method": f.method,
                            "target": f.target,
                            "max_bytes": f.max_bytes,
                            "queue": subscriber.send.statistics().max_buffer_size,
                            "started_unix": round(time.time(), 6),
                            "started_mono": round(time.monotonic(), 6),
                            **about,
                        }
                    }
                )
            )
        )
        sent = reported = 0
        deadline = trio.current_time() + tap.duration_s if tap.duration_s is not None else float("inf")
        while tap.limit is None or sent < tap.limit:
            wait = min(TAP_HEARTBEAT_S, deadline - trio.current_time())
            if wait <= 0:
                break
            record = None
            with trio.move_on_after(wait):
                record = await subscriber.receive.receive()
            if record is None and trio.current_time() >= deadline and subscriber.dropped == reported:
                break
            lines: list[bytes] = []
            if subscriber.dropped != reported:
                lines.append(_line({"dropped": subscriber.dropped - reported, "dropped_total": subscriber.dropped}))
                reported = subscriber.dropped
            if record is not None:
                lines.append(_record_line(record))
                sent += 1
                # Let a burst gather, then write it at once: one wakeup and one send per
                # TAP_FLUSH_S under load instead of one per message.
                await trio.sleep(TAP_FLUSH_S)
                while tap.limit is None or sent < tap.limit:
                    try:
                        lines.append(_record_line(subscriber.receive.receive_nowait()))
                    except trio.WouldBlock:
                        break
                    sent += 1
            elif not lines:
                lines.append(_line({"heartbeat": round(time.time(), 3)}))
            await http.send(h11.Data(data=b"".join(lines)))
        await http.send(h11.EndOfMessage())
    except (trio.EndOfChannel, trio.ClosedResourceError):
        pass
    finally:
        hub.unsubscribe(subscriber)


# --- routing ---------------------------------------------------------------------
