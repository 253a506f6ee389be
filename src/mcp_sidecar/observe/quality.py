"""Connection quality, sans-io: samples in, a report out.

Over a sliding window of the last ``window`` latency samples (MCP request
latencies, WebSocket ping RTTs and HTTP response times when the connection
is observed; the kernel's TCP RTT otherwise):

* statistics: average, p50, p95, p99, standard deviation, coefficient of
  variation (warning above 30 %);
* a 0-100 score with fixed penalties: average latency > 500 ms -15,
  > 1000 ms -30; error rate > 1 % -20, > 5 % -40; more than 5 reconnects
  from the same client -25; grade A >= 90, B >= 75, C >= 60, D >= 40, else F.
  Every deduction is reported with its points and its reason in words
  (``deductions``), so a grade always says why.  Reconnects are long-lived
  connections (event streams, WebSockets, opaque TCP) the same client host
  opened before this one (forward/state.py), never separate HTTP requests;
* trend: the window's second half against its first: 10 % slower is
  ``degrading``, 10 % faster ``improving``, else ``stable``;
* anomaly: the newest sample's z-score against the window, |z| > 2.5
  ``warning``, > 3 ``critical``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

WINDOW = 100
WARN_LATENCY_S = 0.5
CRITICAL_LATENCY_S = 1.0
VARIATION_WARN = 0.3
TREND_THRESHOLD = 0.1
Z_WARNING, Z_CRITICAL = 2.5, 3.0
RECONNECTS_PENALTY_ABOVE = 5


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values (linear interpolation); 0 if none."""
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def grade(score: int) -> str:
    for bound, letter in ((90, "A"), (75, "B"), (60, "C"), (40, "D")):
        if score >= bound:
            return letter
    return "F"


def _score(avg_s: float, error_rate: float, reconnects: int) -> tuple[int, list[dict[str, Any]]]:
    """The penalties: the score and each deduction, with its reason in words."""
    deductions: list[dict[str, Any]] = []
    if avg_s > CRITICAL_LATENCY_S:
        deductions.append({"points": 30, "reason": f"high latency: average {avg_s * 1000:.0f} ms > 1000 ms"})
    elif avg_s > WARN_LATENCY_S:
        deductions.append({"points": 15, "reason": f"elevated latency: average {avg_s * 1000:.0f} ms > 500 ms"})
    if error_rate > 0.05:
        deductions.append({"points": 40, "reason": f"high error rate: {error_rate:.1%} > 5 %"})
    elif error_rate > 0.01:
        deductions.append({"points": 20, "reason": f"elevated error rate: {error_rate:.1%} > 1 %"})
    if reconnects > RECONNECTS_PENALTY_ABOVE:
        deductions.append(
            {
                "points": 25,
                "reason": f"frequent reconnects: {reconnects} earlier streams from this "
                f"client in 10 min (> {RECONNECTS_PENALTY_ABOVE})",
            }
        )
    return max(0, 100 - sum(d["points"] for d in deductions)), deductions


class Quality:
    """One connection's latency window and outcomes; ``score`` is O(1)."""

    __slots__ = ("_sum", "errors", "ok", "samples", "source", "window")

    def __init__(self, window: int = WINDOW) -> None:
        #: The window, created with the first sample: an empty deque is ~600
        #: bytes, and most of an idle connection's memory would be this.
        self.samples: deque[float] | tuple[()] = ()
        self.window = window
        self.source = "none"
        self.ok = 0
        self.errors = 0
        self._sum = 0.0  # of the samples in the window

    def latency(self, seconds: float, source: str) -> None:
        """Add a sample; application (L7) samples take over from kernel ones."""
        if source == "tcp" and self.source not in ("none", "tcp"):
            return
        samples = self.samples
        if not isinstance(samples, deque):
            samples = self.samples = deque(maxlen=self.window)
        if source != "tcp" and self.source in ("none", "tcp"):
            samples.clear()
            self._sum = 0.0
        self.source = source
        if len(samples) == samples.maxlen:
            self._sum -= samples[0]
        samples.append(seconds)
        self._sum += seconds

    def score(self, reconnects: int = 0) -> int:
        """The 0-100 score alone, without the statistics (for a scrape over
        every open connection)."""
        n = len(self.samples)
        total = self.ok + self.errors
        return _score(self._sum / n if n else 0.0, self.errors / total if total else 0.0, reconnects)[0]

    def outcome(self, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.errors += 1

    def report(self, reconnects: int = 0) -> dict[str, Any]:
        samples = list(self.samples)
        n = len(samples)
        total = self.ok + self.errors
        error_rate = self.errors / total if total else 0.0
        avg = sum(samples) / n if n else 0.0
        stddev = math.sqrt(sum((x - avg) ** 2 for x in samples) / n) if n else 0.0
        ordered = sorted(samples)
        score, deductions = _score(avg, error_rate, reconnects)
        issues = [d["reason"] for d in deductions]
        cv = stddev / avg if avg else 0.0
        if cv > VARIATION_WARN and n >= 5:
            issues.append(f"latency varies by {cv:.0%}")
        trend = "stable"
        if n >= 10:
            first, second = samples[: n // 2], samples[n // 2 :]
            a, b = sum(first) / len(first), sum(second) / len(second)
            if a and b > a * (1 + TREND_THRESHOLD):
                trend = "degrading"
            elif a and b < a * (1 - TREND_THRESHOLD):
                trend = "improving"
        anomaly = None
        if n >= 10 and stddev > 0:
            z = (samples[-1] - avg) / stddev
            if abs(z) > Z_WARNING:
                anomaly = {"z": round(z, 2), "level": "critical" if abs(z) > Z_CRITICAL else "warning"}
        ms = 1000.0
        return {
            "source": self.source,
            "samples": n,
            "avg_ms": round(avg * ms, 3),
            "p50_ms": round(quantile(ordered, 0.5) * ms, 3),
            "p95_ms": round(quantile(ordered, 0.95) * ms, 3),
            "p99_ms": round(quantile(ordered, 0.99) * ms, 3),
            "stddev_ms": round(stddev * ms, 3),
            "cv": round(cv, 3),
            "error_rate": round(error_rate, 4),
            "reconnects": reconnects,
            "score": score,
            "grade": grade(score),
            "trend": trend,
            "anomaly": anomaly,
            "deductions": deductions,
            "issues": issues,
        }
