"""``proxyctl tap``: watch the MCP messages a running worker forwards.

Rules this module keeps:

* A client of ``GET /api/tap`` (admin/server.py): the worker filters,
  bounds, truncates and redacts; this side prints what comes.  Lines are
  read as they arrive, split on newlines, never buffered whole.
* ``--json`` writes the records as they came (one JSON object per line);
  ``--output FILE`` appends them to a file as well (the recording), while the
  terminal shows the readable form.  Heartbeats are not shown; drops are,
  on standard error.
* Ends at Ctrl-C (exit 0), after ``--count`` messages or ``--duration``
  seconds, or when the worker goes away (exit 1, said in one line).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
from pathlib import Path
from typing import IO, Any

import click
import h11
import trio

from ..errors import EXIT_FAILURE
from .adminapi import admin_option, open_stream, resolve_admin, resolve_token, token_option
from .options import reports_errors, resolve_state_dir, state_dir_option

_ARROWS = {"client_to_upstream": "->", "upstream_to_client": "<-"}


def describe(record: dict[str, Any]) -> str:
    """One record as a readable line."""
    stamp = time.strftime("%H:%M:%S", time.localtime(record["t"])) + f".{int(record['t'] * 1000) % 1000:03d}"
    parts = [stamp, record["route"], _ARROWS.get(record["direction"], "?"), record["kind"]]
    if record["kind"] == "fault":  # an injected fault, marked as such (proxyctl fault)
        what = f"{record['method']} {record['target'] or ''}".strip() if record.get("method") else "connection"
        return " ".join([*parts, f"INJECTED {record['fault']} ({record['description']}) on {what}"])
    if record.get("method"):
        parts.append(record["method"] + (f" {record['target']}" if record.get("target") else ""))
    if record.get("id") is not None:
        parts.append(f"#{record['id']}")
    if "outcome" in record:
        parts.append(record["outcome"])
    if record.get("latency_ms") is not None:
        parts.append(f"{record['latency_ms']:.1f} ms")
    parts.append(f"{record['size']} B")
    version = f" {record['protocol_version']}" if record.get("protocol_version") not in (None, "unknown") else ""
    parts.append(f"[{record['transport']}{version}{' ' + record['session'] if record.get('session') else ''}]")
    for name in ("params", "result", "error"):
        if name in record:
            parts.append(f"{name} {record[name]}{'...' if record.get('truncated') else ''}")
    return " ".join(str(p) for p in parts)


@click.command()
@click.argument("route", required=False)
@click.option("--method", default=None, help="Only this MCP method (responses match their request's method).")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON lines.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also append the records to this file (JSON lines).",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many messages.")
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this many seconds."
)
@admin_option
@token_option
@state_dir_option
@reports_errors
def tap(
    route: str | None,
    method: str | None,
    as_json: bool,
    output: Path | None,
    count: int | None,
    duration: float | None,
    admin_address: str | None,
    token: str | None,
    state_dir: Path | None,
) -> None:
    """Watch MCP messages go by (all routes, or ROUTE), as the worker sees them.

    Params and results are truncated ([observe] tap_max_bytes) and redacted;
    session ids are hashed.  Nothing is slowed down: a tap that reads too
    slowly loses messages, and says how many."""
    directory = resolve_state_dir(state_dir)
    target = resolve_admin(admin_address, directory)
    token = resolve_token(token, target, directory)
    query = {
        k: v
        for k, v in (("route", route), ("method", method), ("limit", count), ("duration", duration))
        if v is not None
    }
    path = "/api/tap" + ("?" + urllib.parse.urlencode(query) if query else "")
    sink = output.open("a", encoding="utf-8") if output is not None else None
    try:
        ended = trio.run(_tap, target, path, token, as_json, sink)
    except KeyboardInterrupt:
        ended = True
    finally:
        if sink is not None:
            sink.close()
    if not ended:
        click.echo("proxyctl: error: the tap stream ended: the worker went away", err=True)
        sys.exit(EXIT_FAILURE)


async def _tap(target: Any, path: str, token: str | None, as_json: bool, sink: IO[str] | None) -> bool:
    """Stream until the worker ends the stream (True) or the connection drops (False)."""
    stream, exchange = await open_stream(target, path, token)
    pending = b""
    async with stream:
        try:
            async for chunk in exchange.body():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line:
                        _show(json.loads(line), line.decode(), as_json, sink)
        except (trio.BrokenResourceError, ConnectionError, h11.RemoteProtocolError):
            return False
    return exchange.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)


def _show(record: dict[str, Any], raw: str, as_json: bool, sink: IO[str] | None) -> None:
    if "heartbeat" in record:
        return
    if "tap" in record:
        if not as_json:
            f = record["tap"]
            click.echo(
                f"tapping route {f['route'] or '(all)'}, method {f['method'] or '(all)'} "
                f"(queue {f['queue']}); Ctrl-C to stop",
                err=True,
            )
        return
    if "dropped" in record:
        click.echo(
            f"proxyctl tap: {record['dropped']} message(s) dropped: this tap read too slowly "
            f"({record['dropped_total']} in all)",
            err=True,
        )
        return
    if as_json or sink is not None:
        raw = json.dumps(structured(record), separators=(",", ":"))
    if sink is not None:
        sink.write(raw + "\n")
        sink.flush()
    click.echo(raw if as_json else describe(record))


def structured(record: dict[str, Any]) -> dict[str, Any]:
    """A record for scripts: ``params``, ``result`` and ``error`` as JSON values
    (the stream carries them as text; a truncated one stays text: it is not JSON)."""
    out = dict(record)
    if not record.get("truncated"):
        for name in ("params", "result", "error"):
            if isinstance(record.get(name), str):
                try:
                    out[name] = json.loads(record[name])
                except ValueError:
                    pass
    return out
