"""Give memory freed after a burst of work back to the system.

A burst (thousands of claims provisioned, deleted or resumed at once) allocates and frees
many response bodies. glibc keeps the freed pages in its heap, and the operator's resident
memory stays at the burst's high-water mark. `malloc_trim(0)` returns every free page to
the system, in milliseconds. Elsewhere (another C library) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_Trim = Callable[[int], int]


def _malloc_trim() -> _Trim | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release() -> bool:
    """Return the heap's free pages to the system; False where that is not possible."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
