"""Who was slow (sans-io): a request's latency split between the network,
the server, the transfer and the client; event streams that arrive in bursts.

Rules this module keeps:

* The split uses what the sidecar measured and nothing else: when the
  request was forwarded upstream (``sent``), when the first byte of its
  answer arrived (``began``), when the last did (``sent + duration``), the
  time the proxy waited for the client to take the answer's bytes
  (``blocked``: the pump's backpressure), the bytes still queued towards the
  client at the end and the kernel's delivery rate, and the kernel's
  smoothed RTT of both legs at that moment.
* ``network`` = the client leg's RTT + the upstream leg's (at most the time
  to the first byte); ``server`` = the time to the first byte less the
  upstream RTT; ``transfer`` = first to last byte, less what the proxy
  waited for the client; ``client`` = that wait + the queued bytes over the
  delivery rate.  They add up exactly to ``duration + client RTT + drain``:
  what the client saw, as far as the sidecar can tell.
* A burst: at least ``BURST_MIN_EVENTS`` events arriving within
  ``BURST_GAP_S`` of each other after a silence of at least
  ``BURST_SILENCE_S`` -- events a server wrote over time and something on
  the upstream side held back and let through together (a buffering
  intermediary).  A server that streams sends them apart; one that sends a
  last progress notification and its result together is not a burst (two).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The parts, in the order they are shown.
PARTS = ("network", "server", "transfer", "client")
#: An answer the client took this long or longer to take: the client fell behind.
SLOW_CLIENT_S = 0.1
#: The longest drain estimate believed (a stalled client: the rest is "it did not take it").
MAX_DRAIN_S = 60.0
BURST_MIN_EVENTS = 3
BURST_GAP_S = 0.005
BURST_SILENCE_S = 0.05


@dataclass(frozen=True, slots=True)
class LatencySplit:
    """One request's latency by who spent it, seconds."""

    network: float
    server: float
    transfer: float
    client: float

    @property
    def total(self) -> float:
        return self.network + self.server + self.transfer + self.client

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.network, self.server, self.transfer, self.client)


def split_latency(
    duration_s: float,
    first_byte_s: float | None,
    *,
    blocked_s: float = 0.0,
    rtt_client_s: float = 0.0,
    rtt_upstream_s: float = 0.0,
    queued_bytes: int = 0,
    delivery_rate: float = 0.0,
) -> LatencySplit:
    """``duration_s``: request forwarded -> its answer's last byte; ``first_byte_s``:
    request forwarded -> the answer's first byte (None: unknown, the same as the last)."""
    duration = max(0.0, duration_s)
    to_first = duration if first_byte_s is None else min(max(0.0, first_byte_s), duration)
    upstream = min(max(0.0, rtt_upstream_s), to_first)
    transfer = duration - to_first
    waited = min(max(0.0, blocked_s), transfer)
    drain = min(queued_bytes / delivery_rate, MAX_DRAIN_S) if queued_bytes > 0 and delivery_rate > 0 else 0.0
    return LatencySplit(
        network=max(0.0, rtt_client_s) + upstream,
        server=to_first - upstream,
        transfer=transfer - waited,
        client=waited + drain,
    )


class BurstDetector:
    """One event stream's arrivals: how many bursts (see the module's rules)."""

    __slots__ = ("bursts", "group", "last", "silence")

    def __init__(self) -> None:
        self.bursts = 0
        #: Events in the current group (arriving within BURST_GAP_S of each other).
        self.group = 0
        self.last: float | None = None
        #: The silence before the current group began.
        self.silence = 0.0

    def start(self, at: float) -> None:
        """A response stream began (its headers): silence counts from here."""
        self.last = at
        self.group = 0
        self.silence = 0.0

    def event(self, at: float) -> bool:
        """An event arrived at ``at``; True when it makes the current group a burst."""
        last = self.last
        self.last = at
        if last is not None and at - last <= BURST_GAP_S and self.group:
            self.group += 1
            if self.group == BURST_MIN_EVENTS and self.silence >= BURST_SILENCE_S:
                self.bursts += 1
                return True
            return False
        self.silence = 0.0 if last is None else at - last
        self.group = 1
        return False
