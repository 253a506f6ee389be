"""Giving freed heap memory back to the kernel (glibc ``malloc_trim``).

Why: after a burst of connections ends, everything they allocated is freed
(the observers' buffers are dropped at close, not when the cyclic GC runs),
but glibc keeps freed heap pages mapped: a worker that peaked at 80 MB during
a storm of large half-sent bodies stayed near 64 MB with nothing open,
against a 33 MB baseline.  ``malloc_trim(0)`` returns the free pages at the
top of the heap and, since glibc 2.8, whole free pages inside it
(``MADV_DONTNEED``); afterwards the same worker measured 40 MB.

Rules this module keeps:

* Called from the worker's maintenance task, every ``TRIM_INTERVAL_S`` and
  only when connections ended since the last call, so an idle or steady
  worker never pays for it; one call costs microseconds to a few
  milliseconds (it walks the free lists).
* Best effort: on a libc without ``malloc_trim`` (musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any

TRIM_INTERVAL_S = 2.0

_trim: Callable[[int], Any] | None = None
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _trim = getattr(_libc, "malloc_trim", None)
except OSError:
    _trim = None


def available() -> bool:
    return _trim is not None


def trim() -> None:
    if _trim is not None:
        _trim(0)
