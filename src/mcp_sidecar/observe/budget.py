"""How much CPU in-line observation may take when CPU is short (sans-io).

Observation is paid in the worker's one thread, between the chunks it
forwards.  Parsing costs far more than moving bytes (an HTTP exchange
through h11 costs two to four times what forwarding it does), so under a
heavy request rate an unbounded observer becomes the proxy's bottleneck.
The mission says observation never slows forwarding; this budget is what
makes that true under load, without giving up observation when there is CPU
to spare:

* While the worker has headroom (its CPU utilisation, process CPU time over
  wall time, is below ``PRESSURE_UTILIZATION``) observation is never shed:
  it only uses time the worker would spend idle.
* Under pressure, observation may use at most ``share`` of the core: a token
  bucket refilling at ``share`` seconds per second, up to ``share *
  BURST_WINDOW_S``.  The connection whose observation runs the bucket dry is
  shed (forwarded opaque from then on, counted); new connections are admitted
  to observation only while the bucket holds time.

Rules this module keeps:

* The caller measures each observer call (wall time of the synchronous
  call: observers never await) and passes it to ``spend`` with the time it
  ended; a periodic task passes the process CPU time and the wall clock to
  ``load``.  No clock, no trio: tests drive it exactly.
* Without pressure no debt accrues: the bucket empties to zero, never below.
* ``share >= 1`` never sheds: one thread cannot use more than one core.
"""

from __future__ import annotations

from ..errors import LocalError

#: Seconds of observation at the full share the bucket holds for a burst.
BURST_WINDOW_S = 1.0
#: Worker utilisation (CPU seconds per wall second) from which it counts as
#: saturated: forwarding would use the time observation takes.
PRESSURE_UTILIZATION = 0.85
#: How often the worker's utilisation is measured (seconds).
LOAD_INTERVAL_S = 0.1


class ObservationBudget:
    """The token bucket of observation CPU time, and whether the worker is saturated."""

    __slots__ = (
        "_mark",
        "capacity_s",
        "level_s",
        "pressure",
        "pressure_utilization",
        "share",
        "shed",
        "spent_s",
        "updated",
        "utilization",
    )

    def __init__(
        self,
        share: float,
        now: float,
        burst_window_s: float = BURST_WINDOW_S,
        pressure_utilization: float = PRESSURE_UTILIZATION,
    ) -> None:
        if not share > 0:
            raise ValueError("share must be greater than 0")
        self.share = share
        self.capacity_s = share * burst_window_s
        self.level_s = self.capacity_s
        self.updated = now
        #: Totals for metrics: observer seconds spent, connections shed.
        self.spent_s = 0.0
        self.shed = 0
        #: The worker's CPU utilisation over the last interval, and whether it is saturated.
        self.utilization = 0.0
        self.pressure = False
        self.pressure_utilization = pressure_utilization
        self._mark: tuple[float, float] | None = None

    @property
    def unlimited(self) -> bool:
        return self.share >= 1.0

    def _refill(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            self.level_s = min(self.capacity_s, self.level_s + elapsed * self.share)
            self.updated = now

    def load(self, cpu_s: float, wall_s: float) -> None:
        """The process's CPU time and the wall clock, fed every ``LOAD_INTERVAL_S``."""
        if self._mark is not None:
            elapsed = wall_s - self._mark[1]
            if elapsed > 0:
                self.utilization = (cpu_s - self._mark[0]) / elapsed
                self.pressure = self.utilization >= self.pressure_utilization
        self._mark = (cpu_s, wall_s)

    def spend(self, cost_s: float, now: float) -> bool:
        """Account ``cost_s`` of observation ending at ``now``; False: shed."""
        self.spent_s += cost_s
        if self.unlimited:
            return True
        self._refill(now)
        self.level_s -= cost_s
        if self.level_s > 0:
            return True
        if not self.pressure:
            self.level_s = 0.0  # spare CPU: observation only used idle time
            return True
        return False

    def admit(self, now: float) -> bool:
        """May a new connection be observed?"""
        if self.unlimited or not self.pressure:
            return True
        self._refill(now)
        return self.level_s > 0

    def as_json(self, now: float) -> dict[str, float | int | bool]:
        if not self.unlimited:
            self._refill(now)
        return {
            "cpu_share": self.share,
            "worker_utilization": round(self.utilization, 3),
            "pressure": self.pressure,
            "available_s": round(self.level_s, 6),
            "spent_s": round(self.spent_s, 6),
            "shed": self.shed,
        }


class InspectionMemoryExhausted(LocalError):
    """The worker's inspection buffers are at their limit: this observer gives
    up (a local limit, not the peer's fault), the bytes keep flowing."""


class MemoryBudget:
    """Bytes that every inspection buffer of one worker may hold together.

    Per-connection bounds times ``max_connections`` is an out-of-memory kill
    in a memory-limited container; this budget is the one bound that holds
    whatever the number of connections.  Observers report the size of what
    they hold after each step through their ``Allowance``; a step that would
    go over the limit is refused and that observer gives up (counted in
    ``exhausted``).  Plain state, no I/O.
    """

    __slots__ = ("exhausted", "limit", "peak", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.exhausted = 0

    def allowance(self) -> Allowance:
        return Allowance(self)

    def as_json(self) -> dict[str, int]:
        return {
            "limit_bytes": self.limit,
            "used_bytes": self.used,
            "peak_bytes": self.peak,
            "exhausted": self.exhausted,
        }


class Allowance:
    """What one observer holds of a ``MemoryBudget``."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    def hold(self, level: int) -> None:
        """Set what this observer holds now; raise ``InspectionMemoryExhausted``
        (changing nothing) if growing to it would exceed the budget."""
        budget = self.budget
        delta = level - self.held
        if delta > 0 and budget.used + delta > budget.limit:
            budget.exhausted += 1
            raise InspectionMemoryExhausted(f"inspection buffers at their limit ({budget.limit} bytes)")
        budget.used += delta
        self.held = level
        if budget.used > budget.peak:
            budget.peak = budget.used

    def release(self) -> None:
        self.budget.used -= self.held
        self.held = 0


#: For observers built alone (tests, tools): effectively unbounded.
UNBOUNDED = MemoryBudget(1 << 62)
