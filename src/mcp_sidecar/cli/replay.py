"""``proxyctl replay``: play a recording's client side against a server and
say whether every answer still matches.

Rules this module keeps:

* Exit 0 when every answer matches the recorded one, 1 with a report of
  each difference (its route, session, method and tool, the path, then and
  now), 2 on bad input: a file that is not a recording (truncated, foreign,
  of a newer schema: one line naming the file and the line), an --ignore
  path it cannot read, nothing in the file for the URLs given, a server
  that is not there (one line).
* ``--to`` says where each transport goes: ws:// or wss:// for WebSocket,
  an http(s):// URL whose path ends in /sse for the 2024-11-05 transport,
  any other http(s):// URL for streamable HTTP (both revisions).  Give
  several for a recording of several transports.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import click
import trio

from ..errors import EXIT_FAILURE, EXIT_USAGE
from ..observe.recording import read_recording
from ..replay.compare import parse_path
from ..replay.plan import ERAS, plan
from ..replay.run import Outcome, play
from .options import reports_errors


def _transport_of(url: SplitResult) -> str:
    if url.scheme in ("ws", "wss"):
        return "websocket"
    return "legacy-sse" if url.path.rstrip("/").endswith("/sse") else "streamable-http"


def _speed(ctx: click.Context, param: click.Parameter, value: str) -> float:
    if value == "max":
        return math.inf
    try:
        speed = float(value)
    except ValueError:
        raise click.BadParameter("1 (as recorded), a factor such as 2, or max") from None
    if not speed > 0:
        raise click.BadParameter("must be positive")
    return speed


def _fail(message: str) -> None:
    click.echo(f"proxyctl: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "urls", multiple=True, required=True, help="The server's URL (repeat: one per transport).")
@click.option("--speed", default="max", callback=_speed, show_default=True, help="1: the recorded pace; max: at once.")
@click.option(
    "--era", type=click.Choice(ERAS), default="as-recorded", show_default=True, help="Streamable HTTP revision."
)
@click.option("--ignore", "ignores", multiple=True, help="A JSONPath to leave out of the comparison ($.result.x).")
@click.option("--route", default=None, help="Only the conversations of this route.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds per answer.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@reports_errors
def replay(
    file: Path,
    urls: tuple[str, ...],
    speed: float,
    era: str,
    ignores: tuple[str, ...],
    route: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Play the client side of recording FILE against a server and compare
    each answer with the recorded one (ids, timestamps, session ids and
    progress tokens aside).  Exit 0: all match; 1: differences (reported);
    2: bad input or no server.  See docs/recording.md."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        _fail(f"{file}: {exc.strerror}")
    recording = read_recording(str(file), raw.splitlines(keepends=True))
    patterns = tuple(parse_path(text) for text in ignores)
    targets: dict[str, SplitResult] = {}
    for text in urls:
        url = urlsplit(text)
        if url.scheme not in ("http", "https", "ws", "wss") or not url.hostname:
            _fail(f"--to {text!r}: expected an http://, https://, ws:// or wss:// URL")
        targets[_transport_of(url)] = url
    planned = plan(recording, route=route, era=era)
    playable = [c for c in planned.conversations if c.transport in targets]
    unplayed = sorted({c.transport for c in planned.conversations if c.transport not in targets})
    if not playable:
        have = ", ".join(sorted({c.transport for c in planned.conversations})) or "no client messages"
        _fail(f"{file}: nothing to replay against {', '.join(urls)} (the recording has: {have})")
    outcomes = trio.run(lambda: play(playable, targets, speed=speed, timeout_s=timeout, ignore=patterns))
    differing = [o for o in outcomes if o.differences]
    if as_json:
        click.echo(json.dumps(_report(outcomes, planned.skipped, unplayed), indent=1))
    else:
        _print(outcomes, planned.skipped, unplayed)
    sys.exit(EXIT_FAILURE if differing else 0)


def _where(outcome: Outcome) -> str:
    message = outcome.step.message
    target = f" {outcome.target}" if outcome.target else ""
    who = message.get("session") or message.get("client") or ""
    return f"route {message['route']} {who} #{message.get('id')} {outcome.method}{target}".replace("  ", " ")


def _latencies(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    by_method: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.step.is_request:
            by_method.setdefault(outcome.method, []).append(outcome)
    table = {}
    for method, items in sorted(by_method.items()):
        then = [o.then_ms for o in items if o.then_ms is not None]
        now = [o.now_ms for o in items if o.now_ms is not None]
        table[method] = {
            "requests": len(items),
            "then_p50_ms": round(statistics.median(then), 3) if then else None,
            "now_p50_ms": round(statistics.median(now), 3) if now else None,
        }
    return table


def _report(outcomes: list[Outcome], skipped: list[tuple[dict[str, Any], str]], unplayed: list[str]) -> dict[str, Any]:
    return {
        "compared": sum(1 for o in outcomes if o.step.is_request),
        "differing": [
            {
                "where": _where(o),
                "method": o.method,
                "target": o.target or None,
                "note": o.note or None,
                "differences": [{"path": d.path, "recorded": d.recorded, "now": d.now} for d in o.differences],
            }
            for o in outcomes
            if o.differences
        ],
        "notes": [{"where": _where(o), "note": o.note} for o in outcomes if o.note and not o.differences],
        "skipped": [{"seq": m.get("seq"), "method": m.get("method"), "why": why} for m, why in skipped],
        "transports_without_url": unplayed,
        "latency": _latencies(outcomes),
    }


def _short(value: Any) -> str:
    text = value if isinstance(value, str) and value == "(absent)" else json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _print(outcomes: list[Outcome], skipped: list[tuple[dict[str, Any], str]], unplayed: list[str]) -> None:
    requests = [o for o in outcomes if o.step.is_request]
    differing = [o for o in requests if o.differences]
    for outcome in differing:
        click.echo(f"DIFF {_where(outcome)}" + (f" ({outcome.note})" if outcome.note else ""))
        for difference in outcome.differences:
            click.echo(f"  {difference.path}: {_short(difference.recorded)} -> {_short(difference.now)}")
    for outcome in outcomes:
        if outcome.note and not outcome.differences:
            click.echo(f"note {_where(outcome)}: {outcome.note}")
    for message, why in skipped:
        click.echo(f"skipped #{message.get('seq')} {message.get('method')}: {why}")
    if unplayed:
        click.echo(f"not played (no --to for them): {', '.join(unplayed)}")
    click.echo(f"{len(requests)} request(s) replayed: {len(requests) - len(differing)} match, {len(differing)} differ")
    click.echo(f"{'method':<28} {'requests':>8} {'then p50 ms':>12} {'now p50 ms':>11}")
    for method, row in _latencies(outcomes).items():
        then = "-" if row["then_p50_ms"] is None else f"{row['then_p50_ms']:.1f}"
        now = "-" if row["now_p50_ms"] is None else f"{row['now_p50_ms']:.1f}"
        click.echo(f"{method:<28} {row['requests']:>8} {then:>12} {now:>11}")
