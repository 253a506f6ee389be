"""``proxyctl record``: record MCP conversations to a file, or export one as HAR.

Rules this module keeps:

* Recording is a client of ``GET /api/tap`` asking for larger bodies
  (``max_bytes``): the worker filters, redacts and cuts exactly as for the
  tap; this side writes the recording's lines (observe/recording.py): the
  header from the stream's first line, then one line per message, a
  ``dropped`` line where the worker's bounded buffer lost some.
* The file is the owner's only (0600: tool arguments); it is complete and
  readable at every moment (whole lines), at Ctrl-C too (exit 0).
* ``--to-har RECORDING`` reads a recording (errors name the file and line,
  exit 2) and writes HAR 1.2 (observe/har.py); nothing is asked of a sidecar.
"""

from __future__ import annotations

import json
import sys
import urllib.parse
from pathlib import Path
from typing import IO, Any

import click
import h11
import trio

from .. import __version__
from ..config.values import parse_duration
from ..errors import EXIT_FAILURE
from ..forward.recorder import open_private
from ..observe.har import to_har
from ..observe.recording import (
    DEFAULT_BODY_BYTES,
    dropped_line,
    header,
    header_line,
    message_line,
    read_recording,
)
from .adminapi import admin_option, open_stream, resolve_admin, resolve_token, token_option
from .options import reports_errors, resolve_state_dir, state_dir_option


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not seconds > 0:
        raise click.BadParameter("must be positive")
    return seconds


@click.command()
@click.argument("route", required=False)
@click.option("--method", default=None, help="Only this MCP method (responses match their request's).")
@click.option("--target", default=None, help="Only this tool, prompt or resource (its label).")
@click.option("--for", "duration", callback=_duration, default=None, help="Stop after this long (10m, 30s).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many messages.")
@click.option(
    "--max-body-bytes",
    type=click.IntRange(64, 16 * 1024 * 1024),
    default=DEFAULT_BODY_BYTES,
    show_default=True,
    help="Bytes of each params/result/error kept (more is cut and marked).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The file to write."
)
@click.option(
    "--to-har",
    "har_from",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Convert this recording to HAR 1.2 (into --output) instead of recording.",
)
@admin_option
@token_option
@state_dir_option
@reports_errors
def record(
    route: str | None,
    method: str | None,
    target: str | None,
    duration: float | None,
    count: int | None,
    max_body_bytes: int,
    output: Path,
    har_from: Path | None,
    admin_address: str | None,
    token: str | None,
    state_dir: Path | None,
) -> None:
    """Record the MCP messages of ROUTE (or every route) to a JSON Lines file.

    Messages are redacted as the tap redacts them, bodies past
    --max-body-bytes cut and marked, session ids and clients hashed.  Replay
    the file against a server with `proxyctl replay FILE --to URL`; see
    docs/recording.md for the format (its JSON Schema is docs/recording.schema.json)."""
    if har_from is not None:
        _export_har(har_from, output)
        return
    directory = resolve_state_dir(state_dir)
    admin = resolve_admin(admin_address, directory)
    token = resolve_token(token, admin, directory)
    query = {
        k: v
        for k, v in (
            ("route", route),
            ("method", method),
            ("target", target),
            ("max_bytes", max_body_bytes),
            ("limit", count),
            ("duration", duration),
        )
        if v is not None
    }
    path = "/api/tap?" + urllib.parse.urlencode(query)
    sink = open_private(output)
    state = {"messages": 0, "dropped": 0}
    try:
        ended = trio.run(_record, admin, path, token, sink, max_body_bytes, state)
    except KeyboardInterrupt:
        ended = True
    finally:
        sink.close()
    click.echo(
        f"proxyctl record: {state['messages']} message(s) written to {output}"
        + (f", {state['dropped']} dropped (the buffer was full)" if state["dropped"] else ""),
        err=True,
    )
    if not ended:
        click.echo("proxyctl: error: the recording ended: the sidecar went away", err=True)
        sys.exit(EXIT_FAILURE)


async def _record(
    admin: Any, path: str, token: str | None, sink: IO[bytes], max_body_bytes: int, state: dict[str, int]
) -> bool:
    stream, exchange = await open_stream(admin, path, token)
    pending = b""
    started_mono = 0.0
    async with stream:
        try:
            async for chunk in exchange.body():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = []
                for line in lines:
                    if not line:
                        continue
                    item = json.loads(line)
                    if "tap" in item:
                        about = item["tap"]
                        started_mono = about["started_mono"]
                        head = header(
                            sidecar=about.get("sidecar", "unknown"),
                            wanted={k: about.get(k) for k in ("route", "method", "target")},
                            routes=about.get("routes") or {},
                            max_body_bytes=max_body_bytes,
                            started_unix=about["started_unix"],
                            started_mono=started_mono,
                        )
                        head["recorder"] = f"proxyctl {__version__}"
                        out.append(header_line(head))
                    elif "dropped" in item:
                        state["dropped"] += item["dropped"]
                        out.append(dropped_line(item["dropped"], item["dropped_total"], 0.0))
                    elif "route" in item:
                        state["messages"] += 1
                        out.append(message_line(item, state["messages"], started_mono))
                if out:
                    sink.write(b"".join(out))
                    sink.flush()
        except (trio.BrokenResourceError, ConnectionError, h11.RemoteProtocolError):
            return False
    return exchange.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED)


def _export_har(source: Path, output: Path) -> None:
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"{source}: {exc.strerror}", param_hint="--to-har") from None
    recording = read_recording(str(source), raw.splitlines(keepends=True))
    document = to_har(recording, __version__)
    with open_private(output) as sink:
        sink.write(json.dumps(document, indent=1).encode() + b"\n")
    click.echo(f"proxyctl record: {len(document['log']['entries'])} HAR entries written to {output}", err=True)
