"""Recording MCP conversations to files: ``[observe] record`` (per route).

Rules this module keeps:

* A recorder is a tap subscriber (forward/tap.py): nothing is recorded unless
  a recording is configured or asked for, a route nobody records builds no
  record, and forwarding never waits for the disk -- a full buffer drops
  messages, counted (``dropped`` lines in the file, ``mcp_sidecar_tap_dropped_total``).
* Its buffer is bounded in bytes: at most ``recording.BUFFER_BYTES`` of
  lines wait (a line's size is known when it is encoded); each write takes
  all that waits.
* Files are per route, rotated by size: ``DIR/ROUTE-YYYYMMDDTHHMMSSZ-NNNN.jsonl``,
  each opened with the header line, a new one once the next line would take
  it past ``max_bytes``; at most ``max_files`` are kept (the oldest deleted):
  the route's recordings never take more than ``max_bytes x max_files``
  (a single line larger than a file gets a file of its own).
* A recorder gets each message as its line's bytes (``recording.line_body``,
  encoded where the message was observed: in this process, or under a
  supervisor in the worker that forwarded it, relayed as bytes); it numbers
  them in the order they arrive (``numbered_line``) and writes them.
* Lines are written in batches (one write per ``FLUSH_S`` under load), to the
  page cache: a batch is a few KiB to a few MiB, written in microseconds to
  milliseconds; a disk that fails stops this recorder (logged once), never the worker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import trio

from .. import __version__
from ..config.model import ProxyConfig, RouteConfig
from ..logs import log
from ..observe.recording import BUFFER_BYTES, dropped_line, header, header_line, numbered_line
from ..observe.tap import TapFilter
from .tap import TapBusy, TapHub

logger = logging.getLogger(__name__)

#: A recorder writes what gathered over this long in one write.
FLUSH_S = 0.1


def open_private(path: Path) -> IO[bytes]:
    """A recording file, new or emptied, the owner's only (0600: it holds tool arguments)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


class RotatingFiles:
    """One route's recording files: the open one, rotated by size, the oldest
    deleted past ``max_files``.  Plain blocking file I/O (the page cache)."""

    def __init__(self, directory: Path, stem: str, max_bytes: int, max_files: int, head: Callable[[], bytes]) -> None:
        self.directory = directory
        self.stem = stem
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.head = head
        self.file: IO[bytes] | None = None
        self.size = self.head_bytes = 0
        self.path: Path | None = None
        self._counter = 0

    def _ours(self) -> list[Path]:
        prefix = self.stem + "-"
        return sorted(
            (p for p in self.directory.glob(prefix + "*.jsonl") if p.name[len(prefix) :][:1].isdigit()),
            key=lambda p: p.name,
        )

    def _open(self) -> None:
        if self.file is not None:
            self.file.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._counter == 0:  # (after a restart: on from the files already there, never over one)
            numbers = [p.stem.rsplit("-", 1)[-1] for p in self._ours()]
            self._counter = max((int(n) for n in numbers if n.isdigit()), default=0)
        self._counter += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.path = self.directory / f"{self.stem}-{stamp}-{self._counter:04d}.jsonl"
        self.file = open_private(self.path)
        first = self.head()
        self.file.write(first)
        self.size = self.head_bytes = len(first)
        for old in self._ours()[: -self.max_files]:
            old.unlink(missing_ok=True)

    def write(self, lines: list[bytes]) -> None:
        """Whole lines, each in a file it fits (a line larger than a file
        gets a file of its own: the one case a file passes ``max_bytes``)."""
        out: list[bytes] = []
        for line in lines:
            if self.file is None or (self.size + len(line) > self.max_bytes and self.size > self.head_bytes):
                self._flush(out)
                self._open()
            out.append(line)
            self.size += len(line)
        self._flush(out)

    def _flush(self, out: list[bytes]) -> None:
        if out and self.file is not None:
            self.file.write(b"".join(out))
            self.file.flush()
        out.clear()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


async def record_route(
    hub: TapHub,
    route: str,
    files: RotatingFiles,
    max_body_bytes: int,
    started_mono: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record ``route`` into ``files`` until cancelled (always unsubscribes)."""
    try:
        wanted = TapFilter(route, max_bytes=max_body_bytes, lines=True)
        recorder = hub.subscribe_lines(wanted, BUFFER_BYTES)
    except TapBusy as exc:
        log(logger, logging.ERROR, "record.refused", route=route, error=str(exc))
        task_status.started()
        return
    log(logger, logging.INFO, "record.started", route=route, dir=str(files.directory))
    task_status.started()
    seq = reported = 0
    try:
        while True:
            await recorder.wait()
            await trio.sleep(FLUSH_S)
            await recorder.build_waiting()
            out: list[bytes] = []
            if recorder.dropped != reported:
                out.append(dropped_line(recorder.dropped - reported, recorder.dropped, time.monotonic() - started_mono))
                reported = recorder.dropped
            for _, mono, _, _, _, body in recorder.take(BUFFER_BYTES):
                seq += 1
                out.append(numbered_line(body, seq, mono - started_mono))
            try:
                files.write(out)
            except OSError as exc:
                log(logger, logging.ERROR, "record.failed", route=route, error=str(exc))
                return
    except trio.EndOfChannel:
        pass
    finally:
        hub.unsubscribe(recorder)
        files.close()


def route_files(
    directory: Path,
    route: str,
    *,
    max_bytes: int,
    max_files: int,
    max_body_bytes: int,
    version: str,
    settings: dict[str, Any],
    started_unix: float,
    started_mono: float,
) -> RotatingFiles:
    """The files of one route's configured recording, each opened with its header."""
    head = header_line(
        header(
            sidecar=version,
            wanted={"route": route, "method": None, "target": None},
            routes={route: settings},
            max_body_bytes=max_body_bytes,
            started_unix=started_unix,
            started_mono=started_mono,
        )
    )
    return RotatingFiles(directory, route, max_bytes, max_files, lambda: head)


def route_summary(route: RouteConfig) -> dict[str, Any]:
    """What a recording's header says of a route: where it listens, where it
    forwards, what it observes (no secrets: no tokens, no certificates)."""
    return {
        "listen": [str(a) for a in route.listen],
        "upstreams": [str(a) for a in route.upstreams],
        "protocol": route.settings.protocol,
    }


def recorded_routes(config: ProxyConfig) -> list[RouteConfig]:
    """The routes ``[observe] record`` records: the named ones, or every observed one."""
    record = config.observe.record
    if record is None:
        return []
    if record.routes:
        return [r for r in config.routes if r.name in record.routes]
    return [r for r in config.routes if r.settings.protocol != "tcp"]


async def run_recorders(config: ProxyConfig, hub: TapHub) -> None:
    """The configured recordings, one per route, until cancelled (a reload
    cancels and starts them again with the new settings: new files)."""
    record = config.observe.record
    routes = recorded_routes(config)
    if record is None or not routes:
        await trio.sleep_forever()
        return
    started_unix, started_mono = time.time(), time.monotonic()
    async with trio.open_nursery() as nursery:
        for route in routes:
            files = route_files(
                Path(record.dir),
                route.name,
                max_bytes=record.max_bytes,
                max_files=record.max_files,
                max_body_bytes=record.max_body_bytes,
                version=__version__,
                settings=route_summary(route),
                started_unix=started_unix,
                started_mono=started_mono,
            )
            await nursery.start(record_route, hub, route.name, files, record.max_body_bytes, started_mono)
