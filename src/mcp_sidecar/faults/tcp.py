"""TCP faults of one direction of one connection, as decisions (sans-io).

Rules this module keeps:

* ``Shaper`` is told of each chunk (its size and when it arrived) and
  answers what to do with it: the pieces to send and, for each, the
  earliest time it may go; whether the connection then ends (reset, close).
  It never sleeps and never touches a socket: forward/faultpump.py waits
  and sends.  Its clock is the caller's; its random source is passed in.
* The semantics are Toxiproxy's where the two overlap (docs/faults.md):
  ``latency`` delays each chunk from its arrival (delays do not add up
  along a stream; order is kept); ``bandwidth`` paces to ``rate`` bytes per
  second in pieces of at most a tenth of a second's worth; ``slicer`` cuts
  chunks into slices of ``average_size`` +- ``size_variation`` with
  ``delay`` between them; ``limit_data`` closes the connection once
  ``bytes`` went through; ``reset_peer`` resets it after ``after`` (or,
  an addition, after ``after_bytes``); ``timeout`` forwards nothing and
  closes after ``timeout`` (0: holds the connection, drops the data);
  ``slow_close`` holds the end of the direction for ``delay``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from ..config.faults import Direction, FaultKind, FaultSpec

#: bandwidth: the largest piece sent at once, in seconds of the rate.
PACE_PIECE_S = 0.1


class Ending(Enum):
    """How a fault ends the connection after a chunk."""

    NONE = "none"
    CLOSE = "close"  # a FIN each way (limit_data)
    RESET = "reset"  # an RST each way (reset_peer)


@dataclass
class Piece:
    """Bytes to send no earlier than ``at`` (the caller's clock)."""

    at: float
    data: bytes


@dataclass
class Shaper:
    """One direction's TCP faults (``specs`` already chosen for this connection)."""

    specs: list[FaultSpec]
    rng: random.Random = field(default_factory=random.Random)
    #: Bytes let through so far.
    passed: int = 0
    #: The earliest the next piece may go (keeps order under jitter, paces bandwidth).
    _next_at: float = 0.0

    def __post_init__(self) -> None:
        kinds = {s.kind: s for s in self.specs}
        self.latency = [s for s in self.specs if s.kind is FaultKind.LATENCY]
        self.bandwidth = kinds.get(FaultKind.BANDWIDTH)
        self.slicer = kinds.get(FaultKind.SLICER)
        self.timeout = kinds.get(FaultKind.TIMEOUT)
        self.slow_close = kinds.get(FaultKind.SLOW_CLOSE)
        limits = [s.after_bytes for s in self.specs if s.kind is FaultKind.LIMIT_DATA]
        self.limit = min(limits) if limits else None
        resets = [s for s in self.specs if s.kind is FaultKind.RESET_PEER and s.after_bytes]
        self.reset_after_bytes = min(s.after_bytes for s in resets) if resets else None

    @property
    def holds_everything(self) -> bool:
        """``timeout``: nothing goes through."""
        return self.timeout is not None

    def close_delay_s(self) -> float:
        return self.slow_close.delay_s if self.slow_close is not None else 0.0

    def chunk(self, data: bytes, arrived: float) -> tuple[list[Piece], Ending]:
        """What to send of ``data`` (arrived at ``arrived``), and whether the connection then ends."""
        if self.holds_everything:
            return [], Ending.NONE
        ending = Ending.NONE
        for bound, end in ((self.limit, Ending.CLOSE), (self.reset_after_bytes, Ending.RESET)):
            if bound is not None and self.passed + len(data) >= bound:
                data = data[: max(0, bound - self.passed)]
                ending = end
        self.passed += len(data)
        at = arrived + sum(self._latency(s) for s in self.latency)
        at = max(at, self._next_at)
        pieces = []
        for i, part in enumerate(self._slices(data)):
            if self.slicer is not None and i:
                at += self.slicer.delay_s
            if self.bandwidth is not None:
                at += len(part) / self.bandwidth.rate_bytes_s  # (sent once its time at the rate is spent)
            pieces.append(Piece(at, part))
        self._next_at = at
        return pieces, ending

    def _latency(self, spec: FaultSpec) -> float:
        if not spec.jitter_s:
            return spec.latency_s
        return max(0.0, spec.latency_s + self.rng.uniform(-spec.jitter_s, spec.jitter_s))

    def _slices(self, data: bytes) -> list[bytes]:
        sizes: list[int] = []
        if self.slicer is not None:
            total = 0
            while total < len(data):
                variation = self.slicer.size_variation
                size = self.slicer.average_size + (self.rng.randint(-variation, variation) if variation else 0)
                sizes.append(max(1, size))
                total += sizes[-1]
        else:
            sizes = [len(data)]
        out = []
        pos = 0
        for size in sizes:
            part = data[pos : pos + size]
            pos += size
            out += self._paced(part)
        return [p for p in out if p]

    def _paced(self, part: bytes) -> list[bytes]:
        if self.bandwidth is None:
            return [part]
        step = max(1, int(self.bandwidth.rate_bytes_s * PACE_PIECE_S))
        return [part[i : i + step] for i in range(0, len(part), step)]


@dataclass
class ConnectionShaping:
    """A connection's TCP faults: a shaper per direction, and the timers
    that end the connection whatever flows (``reset_peer`` after a time,
    ``timeout``)."""

    upstream: Shaper
    downstream: Shaper
    #: Seconds after the start at which the connection is reset (None: never).
    reset_after_s: float | None
    #: Seconds after the start at which a ``timeout`` closes it (None: never).
    close_after_s: float | None

    @classmethod
    def of(cls, specs: list[FaultSpec], rng: random.Random) -> ConnectionShaping:
        def side(direction: Direction) -> Shaper:
            return Shaper([s for s in specs if s.direction is direction], rng)

        timed_resets = [s.after_s for s in specs if s.kind is FaultKind.RESET_PEER and not s.after_bytes]
        timeouts = [s.timeout_s for s in specs if s.kind is FaultKind.TIMEOUT and s.timeout_s > 0]
        return cls(
            side(Direction.UPSTREAM),
            side(Direction.DOWNSTREAM),
            min(timed_resets) if timed_resets else None,
            min(timeouts) if timeouts else None,
        )
