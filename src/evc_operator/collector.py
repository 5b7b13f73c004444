"""Python's cyclic garbage collector, kept from stalling the event loop; its pauses measured.

A pass of the collector stops the whole process: the one event loop that reacts to pods
waits for it. How often CPython makes a full pass (every object the operator holds) is
set by how many objects survive its young passes: with its default thresholds (a young
pass for every 700 objects more), objects that live a fraction of a second (a request in
flight, a claim's event being handled) survive young passes in numbers and are promoted
to the oldest generation, and once those promoted since the last full pass reach a
quarter of it, the next full pass comes. Measured at 10,000 claims and 50,000 pods
(docs/benchmarks.md): 65 full passes in the 74 s of the burst (5.9 s stopped), and in
the step where users end at 100 a second one every 10 s, 110 to 190 ms each.

A young pass every `YOUNG` objects more instead lets such objects die young, as most
do, before any pass sees them: objects freed by their last reference (nearly all)
leave the count, so only what lives on, or is cyclic garbage, makes the next pass come.
The cost is at most `YOUNG` objects of cyclic garbage held a while longer. The older
thresholds stay CPython's.

Every pass's pause is counted in `Pauses` (the operator's `evc_gc_pause_seconds`). A
pass can begin at any allocation, in code that holds a lock; so counting it takes none
(a Prometheus metric's own lock, held by a scrape that allocates, would never be
released: the operator would hang).
"""

from __future__ import annotations

import bisect
import gc
import itertools
import time
from collections.abc import Callable
from typing import Any

YOUNG = 20_000  # net new objects that make a young pass (CPython: 700)
GENERATIONS = 3
BOUNDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # seconds, upper bounds
_BUCKETS = (*(repr(bound) for bound in BOUNDS), "+Inf")  # as Prometheus names them

_installed: list[Callable[[str, dict[str, Any]], None]] = []


class Pauses:
    """Each generation's pauses as a histogram, counted without a lock."""

    def __init__(self) -> None:
        self._counts = [[0] * (len(BOUNDS) + 1) for _ in range(GENERATIONS)]  # +Inf last
        self._sums = [0.0] * GENERATIONS

    def observe(self, generation: int, seconds: float) -> None:
        self._counts[generation][bisect.bisect_left(BOUNDS, seconds)] += 1
        self._sums[generation] += seconds

    def histogram(self, generation: int) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (upper bound, count) pairs, "+Inf" last, and the sum of pauses."""
        cumulative = itertools.accumulate(list(self._counts[generation]))
        return list(zip(_BUCKETS, cumulative, strict=True)), self._sums[generation]


def install(pauses: Pauses) -> None:
    """Set the young threshold, and count every pass in `pauses` (again: those only)."""
    uninstall()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, oldest)
    began = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.observe(int(info["generation"]), time.perf_counter() - began[0])

    gc.callbacks.append(timed)
    _installed.append(timed)


def uninstall() -> None:
    """Stop counting passes (the thresholds stay)."""
    while _installed:
        callback = _installed.pop()
        if callback in gc.callbacks:
            gc.callbacks.remove(callback)
