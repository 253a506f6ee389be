"""How many CPUs this process may use: its affinity mask and its cgroup's CPU
quota, whichever is smaller (``[proxy] workers = "auto"``).

Rules this module keeps:

* A pod limited to 1.5 CPUs gets 2 workers (the quota rounded up: a worker
  that gets half a CPU still helps), one pinned to a single CPU gets 1.
* cgroup v2 (``cpu.max``) first, then v1 (``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``); a quota of ``max`` (or -1) is no limit; a file that
  cannot be read says nothing.  Never fewer than 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_v2_quota(root: Path) -> float | None:
    """cpu.max of this process's own cgroup (v2), as a number of CPUs."""
    try:
        relative = next(
            line.split("::", 1)[1].strip()
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0::")
        )
    except (OSError, StopIteration):
        relative = "/"
    for directory in (root / relative.lstrip("/"), root):
        try:
            quota, period = (directory / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota == "max":
            return None
        try:
            return int(quota) / int(period)
        except (ValueError, ZeroDivisionError):
            return None
    return None


def _cgroup_v1_quota(root: Path) -> float | None:
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may run on, limited by its cgroup's quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_v2_quota(root)
    if quota is None:
        quota = _cgroup_v1_quota(root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def worker_target(configured: int) -> int:
    """``[proxy] workers``: the number it says, or (0, "auto") the usable CPUs."""
    return configured if configured > 0 else usable_cpus()
