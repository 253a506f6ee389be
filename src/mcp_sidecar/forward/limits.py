"""Per-route connection counts shared by every worker of a supervisor, so that
``max_connections`` holds for the route, not for each worker.

Rules this module keeps:

* The memory is a memfd the supervisor creates per configuration
  (routes x slots of signed 64-bit counts) and hands to each worker with its
  sockets; each worker owns one slot and is its only writer (no lock); a
  worker admits a connection while its own count plus the others' is under
  the limit.  Two workers admitting at the same instant may pass the limit
  by at most one connection each (reads and writes are not one atomic step).
* The supervisor zeroes the slot of a worker that exits (a crashed worker's
  count must not hold capacity).
"""

from __future__ import annotations

import mmap
import os

COUNT_BYTES = 8


def counts_size(routes: int, slots: int) -> int:
    return max(1, routes * slots) * COUNT_BYTES


def create_counts(routes: int, slots: int) -> int:
    """A zeroed memfd for ``routes`` x ``slots`` counts (the supervisor's)."""
    fd = os.memfd_create("mcp-sidecar-counts", os.MFD_CLOEXEC)
    os.ftruncate(fd, counts_size(routes, slots))
    return fd


class SharedCounts:
    """One view of the counts: a worker's (``slot`` its own) or the supervisor's."""

    def __init__(self, fd: int, routes: int, slots: int, slot: int | None = None) -> None:
        self.routes = routes
        self.slots = slots
        self.slot = slot
        self._map = mmap.mmap(fd, counts_size(routes, slots), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._counts = memoryview(self._map).cast("q")

    def publish(self, route: int, value: int) -> None:
        """This worker's open connections of ``route`` (its own slot)."""
        if self.slot is not None:
            self._counts[route * self.slots + self.slot] = value

    def others(self, route: int) -> int:
        """The open connections of ``route`` in every other worker."""
        base = route * self.slots
        total = sum(self._counts[base : base + self.slots])
        return total - (self._counts[base + self.slot] if self.slot is not None else 0)

    def total(self, route: int) -> int:
        base = route * self.slots
        return sum(self._counts[base : base + self.slots])

    def clear(self, slot: int) -> None:
        """A worker left: its counts are nobody's (the supervisor's)."""
        for route in range(self.routes):
            self._counts[route * self.slots + slot] = 0

    def close(self) -> None:
        self._counts.release()
        self._map.close()


class CountSlots:
    """The supervisor's side of one configuration's counts: the memfd (handed
    to each worker it spawns with that configuration) and which slots are taken.

    Slots: ``SLOTS_PER_WORKER`` per configured worker and ``SPARE_SLOTS``
    more (standby, workers draining after restarts); a worker spawned when
    all are taken gets none and does not publish (its connections do not
    count against the others' limit) -- rare, and never a refusal.
    """

    SLOTS_PER_WORKER = 4
    SPARE_SLOTS = 4

    def __init__(self, routes: int, workers: int) -> None:
        self.slots = self.SLOTS_PER_WORKER * workers + self.SPARE_SLOTS
        self.fd: int | None = create_counts(routes, self.slots)
        self.view = SharedCounts(self.fd, routes, self.slots)
        self._free = list(range(self.slots))

    def take(self) -> int | None:
        return self._free.pop(0) if self._free else None

    def give_back(self, slot: int) -> None:
        self.view.clear(slot)
        self._free.append(slot)

    def close_fd(self) -> None:
        """No more workers get this configuration: the descriptor goes (the mapping stays)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
